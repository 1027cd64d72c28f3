"""The exceptions raised by the OAuth core.

Every error is an :class:`OAuthError` with a one-line ``message`` for a person and, where a person can
act, a ``hint`` saying what to do. No message contains a secret: text taken from a server is shortened,
stripped of control characters and blanked of any secret the request carried (see ``_text.py``).

The tree, and when each is raised::

    OAuthError
    ├── PeerError ................. a server answered with something the core cannot use
    │   ├── DiscoveryError ........ no usable protected-resource or authorization-server metadata (D2-D6)
    │   └── CallbackError ......... an authorization callback was discarded: state, iss, code (A4, A5, A8)
    ├── PolicyError ............... the core's own rules refuse to go on: URL policy (S1, S2, A6, A7),
    │                               no S256 (A1), a registration or token of another issuer (D7, T2)
    ├── RegistrationError ......... no client registration can be had (R1-R4)
    ├── AuthorizationDeniedError .. the user or the authorization server refused a login (A5, A8)
    ├── GrantEndedError ........... the grant is gone for good; a new login is needed (T5)
    ├── RequestRejectedError ...... a definitive refusal that does not end the grant, e.g. a 400 with an
    │                               error other than invalid_grant, or none at all (T5)
    └── TransientError ............ network failure, timeout, 408, 429 or 5xx: keep the grant, retry (T5)

Only :class:`GrantEndedError` means "throw the tokens away". :class:`TransientError` means "keep everything
and try again later" (``retry_after`` says when, if the server said).
"""

from __future__ import annotations

__all__ = [
    "AuthorizationDeniedError",
    "CallbackError",
    "DiscoveryError",
    "GrantEndedError",
    "OAuthError",
    "PeerError",
    "PolicyError",
    "RegistrationError",
    "RequestRejectedError",
    "TransientError",
]


class OAuthError(Exception):
    """Base of every error the OAuth core raises.

    ``message`` is one line for a person; ``hint``, when set, says what that person can do about it.
    ``str(exc)`` is the message.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class PeerError(OAuthError):
    """A server sent something unusable: not JSON, a required field missing, an identity that does not
    match. Retrying will not help until the server changes."""


class DiscoveryError(PeerError):
    """Discovery found no usable metadata: nothing at any well-known URL, a protected-resource ``resource``
    that is not the server (D3), an ``issuer`` that is not the one asked for (D5), missing endpoints."""


class CallbackError(PeerError):
    """An authorization callback was discarded before acting on anything in it: missing, wrong or replayed
    ``state`` (A4), missing or wrong ``iss`` (A5), no ``code``, a pasted text that is not the callback."""


class PolicyError(OAuthError):
    """The core refuses by its own rules: a URL that is not https (or loopback http when allowed), that
    points at a private or link-local address, or uses another scheme (S1, S2, A7); a redirect URI off the
    loopback interface (A6); an authorization server without PKCE S256 (A1); a registration or token set
    that belongs to another issuer (D7, T2)."""


class RegistrationError(OAuthError):
    """No client registration can be had: dynamic registration refused (R3, ``error`` holds the server's
    code) or not offered and nothing configured (R4, the hint names ``auth.oauth21.clientId``)."""

    def __init__(self, message: str, *, hint: str | None = None, error: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.error = error


class AuthorizationDeniedError(OAuthError):
    """A login ended without tokens because the user or the server said no: ``error=access_denied`` in the
    callback, ``access_denied`` or ``expired_token`` in the device grant. ``error`` holds the code."""

    def __init__(self, message: str, *, error: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.error = error


class GrantEndedError(OAuthError):
    """The token endpoint ended the grant: ``invalid_grant``, ``invalid_client`` or ``unauthorized_client``,
    or there is no refresh token to use. A new login is needed. ``client_rejected`` is true when the client
    registration itself was refused (``invalid_client``): a dynamic registration should then be dropped."""

    def __init__(
        self, message: str, *, error: str | None, client_rejected: bool = False, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.error = error
        self.client_rejected = client_rejected


class RequestRejectedError(OAuthError):
    """The server refused a request for good, but the grant stands: a 4xx whose ``error`` is not one that
    ends the grant (``invalid_scope``, ``invalid_target``, an unknown code) or that has no ``error``."""

    def __init__(
        self, message: str, *, error: str | None, status: int | None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.error = error
        self.status = status


class TransientError(OAuthError):
    """Worth retrying: a transport failure or timeout (``status`` is None), or a 408, 429 or 5xx answer.
    ``retry_after`` is the server's ``Retry-After`` in seconds from when the answer arrived, if any."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.retry_after = retry_after
