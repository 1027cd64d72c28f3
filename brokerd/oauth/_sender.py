"""Sending a token request: client authentication, a DPoP proof, one retry for a DPoP nonce (E1, E3).

Every flow that posts to a token endpoint goes through :func:`token_request`. Without a
:class:`Sender` it posts the form with the registration's client authentication, as it always did. With one:

* ``private_key_jwt`` registrations get a fresh client assertion (RFC 7523 §2.2) per request: ``iss`` =
  ``sub`` = the client ID, ``aud`` = the authorization server's issuer identifier
  (draft-ietf-oauth-rfc7523bis, which the conformance suite and oidc-provider accept; the token endpoint
  URL is the old, ambiguous reading), a random ``jti``, ``iat`` = now, ``exp`` = now + 60 s.
* a ``dpop_key`` adds a ``DPoP`` proof for ``POST <endpoint>``, with the last nonce known for that server.
  An answer of 400 ``use_dpop_nonce`` with a ``DPoP-Nonce`` is retried once with that nonce — a new proof
  *and* a new client assertion, since servers refuse a ``jti`` they have seen (oidc-provider does).

Before it signs anything, the request asks the driver for the time (a ``Sleep(0)`` effect, which is
answered with the wall-clock time): a code exchange may come minutes after its flow started, and proofs
are accepted only within minutes of their ``iat``.

The reply says which key a proof was sent with (the token is bound to it only if the server then says
``token_type: DPoP``) and the server's latest nonce, for the next request.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

from brokerd.oauth._dpop import dpop_header, dpop_proof, nonce_challenge, response_nonce
from brokerd.oauth._effects import Effect, Entropy, HttpResponse, TransportFailure, fetch, sleep
from brokerd.oauth._http import post_form
from brokerd.oauth._jose import JwsSigner, b64url, compact_jws
from brokerd.oauth._registration import Registration, client_auth
from brokerd.oauth._urls import UrlPolicy
from brokerd.secret import Secret

__all__ = [
    "ASSERTION_LIFETIME",
    "Sender",
    "TokenReply",
    "assertion_for",
    "client_assertion",
    "current_time",
    "signs",
    "token_request",
]

ASSERTION_LIFETIME = 60
_JTI_BYTES = 16


@dataclass(frozen=True, slots=True, repr=False)
class Sender:
    """What a token request proves beyond the registration, and the entropy that takes (the time is asked
    of the driver when it is needed).

    ``client_key`` signs ``private_key_jwt`` client assertions; ``dpop_key`` is the grant's DPoP key (None:
    no proof, a Bearer grant); ``dpop_nonce`` the authorization server's last nonce (from a previous
    :class:`TokenReply` or :attr:`~brokerd.oauth.TokenSet.dpop_nonce`).
    """

    entropy: Entropy
    client_key: JwsSigner | None = None
    dpop_key: JwsSigner | None = None
    dpop_nonce: str | None = None

    def __repr__(self) -> str:
        return (
            f"Sender(client_key={self.client_key!r}, dpop_key={self.dpop_key!r},"
            f" dpop_nonce={self.dpop_nonce is not None})"
        )


@dataclass(frozen=True, slots=True)
class TokenReply:
    """A token endpoint's answer, ``dpop_jkt`` = the thumbprint of the key the (last) proof was made with
    (None when no proof was sent), ``dpop_nonce`` = the server's latest nonce (None when it sent none)."""

    result: HttpResponse | TransportFailure
    dpop_jkt: str | None = None
    dpop_nonce: str | None = None


def client_assertion(
    registration: Registration,
    key: JwsSigner,
    *,
    now: float,
    entropy: Entropy,
    lifetime: int = ASSERTION_LIFETIME,
) -> Secret:
    """A ``private_key_jwt`` client assertion for ``registration`` (RFC 7523 §2.2, §3; see the module
    docstring for the claims).

    Raises:
        ValueError: ``entropy`` does not return the bytes asked for.
    """
    jti = entropy(_JTI_BYTES)
    if not isinstance(jti, bytes) or len(jti) != _JTI_BYTES:
        raise ValueError(f"entropy({_JTI_BYTES}) must return exactly {_JTI_BYTES} bytes")
    issued = int(now)
    claims = {
        "iss": registration.client_id,
        "sub": registration.client_id,
        "aud": registration.issuer,
        "jti": b64url(jti),
        "iat": issued,
        "exp": issued + lifetime,
    }
    return Secret(compact_jws({"typ": "JWT"}, claims, key))


def token_request(
    endpoint: str,
    form: Sequence[tuple[str, str]],
    registration: Registration,
    policy: UrlPolicy,
    sender: Sender | None = None,
) -> Generator[Effect, object, TokenReply]:
    """POST ``form`` plus the client's authentication (and a DPoP proof) to ``endpoint``; the raw reply.

    Raises:
        PolicyError: the endpoint is refused, or the registration's method needs a key or secret that is
            not there.
    """
    policy.check(endpoint, what="the token endpoint")
    nonce = sender.dpop_nonce if sender is not None else None
    retried = False
    while True:
        now = (yield from current_time()) if signs(registration, sender) else 0.0
        headers, auth_form = client_auth(registration, assertion=assertion_for(registration, sender, now))
        jkt = None
        if sender is not None and sender.dpop_key is not None:
            key = sender.dpop_key
            proof = dpop_proof(key, method="POST", url=endpoint, now=now, entropy=sender.entropy, nonce=nonce)
            headers = (*headers, dpop_header(proof))
            jkt = key.thumbprint
        result = yield from fetch(post_form(endpoint, (*form, *auth_form), headers))
        demanded = nonce_challenge(result) if jkt is not None else None
        if demanded is not None and demanded != nonce and not retried:
            nonce, retried = demanded, True
            continue
        return TokenReply(result, jkt, response_nonce(result) or nonce)


def signs(registration: Registration, sender: Sender | None) -> bool:
    """Whether a request with ``sender`` signs something (a DPoP proof or a client assertion)."""
    if sender is None:
        return False
    method = registration.token_endpoint_auth_method
    return sender.dpop_key is not None or (method == "private_key_jwt" and sender.client_key is not None)


def current_time() -> Generator[Effect, object, float]:
    """The wall-clock time, asked of the driver: a ``Sleep(0)``, answered with the time after it."""
    return (yield from sleep(0.0))


def assertion_for(registration: Registration, sender: Sender | None, now: float) -> Secret | None:
    """A fresh client assertion at ``now`` when ``registration`` uses ``private_key_jwt`` and ``sender``
    has the key; else None (and :func:`~brokerd.oauth.client_auth` says what is missing)."""
    method = registration.token_endpoint_auth_method
    if method != "private_key_jwt":
        return None
    if sender is None or sender.client_key is None:
        return None
    return client_assertion(registration, sender.client_key, now=now, entropy=sender.entropy)
