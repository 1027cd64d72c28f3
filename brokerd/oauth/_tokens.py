"""The token endpoint: code exchange, refresh, parsing responses, classifying failures (T1, T3-T5, E3).

A :class:`TokenSet` carries everything the next refresh needs (DESIGN rule 5): absolute expiry, issuer,
client, resource, token and revocation endpoints, the grant type that made it, and for a DPoP-bound grant
the thumbprint of its key and the server's last nonce. Expiry is ``received_at + expires_in`` of the
response that carried it, so it is absolute wall-clock time and survives a restart.

Token types: ``Bearer``, and ``DPoP`` only when the request carried a proof (RFC 9449 §5); the token is
then bound to that key and sent as ``Authorization: DPoP <token>`` (:func:`authorization_header`) with a
fresh proof per request. A server that answers a proof with a ``Bearer`` token issued an unbound token:
it is kept as Bearer. Any other type is refused.

Failures (T5): :class:`TransientError` for a transport failure, 408, 429, 5xx (with ``retry_after``);
:class:`GrantEndedError` for ``invalid_grant``, ``invalid_client``, ``unauthorized_client``;
:class:`RequestRejectedError` for any other 4xx, named by its ``error`` code when it has one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import msgspec

from brokerd.oauth._dpop import dpop_header, dpop_proof
from brokerd.oauth._effects import Entropy, Flow, HttpResponse, TransportFailure
from brokerd.oauth._errors import (
    GrantEndedError,
    OAuthError,
    PeerError,
    PolicyError,
    RequestRejectedError,
)
from brokerd.oauth._http import decode, describe, error_fields, is_transient, transient_error
from brokerd.oauth._jose import JwsSigner
from brokerd.oauth._registration import Registration
from brokerd.oauth._sender import Sender, TokenReply, token_request
from brokerd.oauth._text import untrusted
from brokerd.oauth._urls import UrlPolicy
from brokerd.secret import Secret

__all__ = ["TokenSet", "authorization_header", "bearer_header", "refresh", "resource_headers"]

_GRANT_ENDING = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})
_LOGIN_HINT = "log in to this server again"
_BEARER = "Bearer"
_DPOP = "DPoP"


class TokenSet(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens of one grant and what is needed to refresh and revoke them; persistable with msgspec (and
    the Secret hooks of :mod:`brokerd.secret`).

    ``expires_at`` is absolute wall-clock seconds (None when the server gave no ``expires_in``);
    ``obtained_at`` when the response arrived, so the issued lifetime is ``expires_at - obtained_at``.
    ``scopes`` are the granted scopes, or the requested ones when the response did not say.
    ``grant_type`` is the ``grant_type`` of the request that started the grant (a refresh keeps it).
    ``token_type`` is ``Bearer`` or ``DPoP``; ``dpop_jkt`` is the RFC 7638 thumbprint of the key a DPoP
    token is bound to, ``dpop_nonce`` the authorization server's last DPoP nonce. ``id_token`` is an
    OpenID Connect ID token when the server sent one (an enterprise IdP's login, E2).
    """

    access_token: Secret
    issuer: str
    client_id: str
    token_endpoint: str
    token_type: str = _BEARER
    refresh_token: Secret | None = None
    expires_at: float | None = None
    obtained_at: float = 0.0
    scopes: tuple[str, ...] = ()
    resource: str | None = None
    revocation_endpoint: str | None = None
    grant_type: str = "authorization_code"
    dpop_jkt: str | None = None
    dpop_nonce: str | None = None
    id_token: Secret | None = None

    def remaining(self, now: float) -> float | None:
        """Seconds of life left at ``now`` (negative once expired), None when the expiry is unknown."""
        return None if self.expires_at is None else self.expires_at - now


def bearer_header(access_token: Secret) -> tuple[str, str]:
    """How a Bearer token is sent to a resource (T1): ``("authorization", "Bearer <token>")``."""
    return "authorization", f"Bearer {access_token.reveal()}"


def authorization_header(tokens: TokenSet) -> tuple[str, str]:
    """The ``authorization`` header for ``tokens`` (T1, E3): ``Bearer <token>``, or ``DPoP <token>`` for a
    DPoP-bound token, which also needs a ``DPoP`` proof header made with
    :func:`~brokerd.oauth.dpop_proof` (``access_token=tokens.access_token``) for each request."""
    if tokens.token_type == _DPOP:
        return "authorization", f"DPoP {tokens.access_token.reveal()}"
    return bearer_header(tokens.access_token)


def resource_headers(
    tokens: TokenSet,
    *,
    method: str,
    url: str,
    now: float,
    entropy: Entropy,
    dpop_key: JwsSigner | None = None,
    nonce: str | None = None,
) -> tuple[tuple[str, str], ...]:
    """The headers that present ``tokens`` on one request ``method url`` to the resource (T1, E3): the
    ``authorization`` header, and for a DPoP-bound token a fresh ``dpop`` proof with ``ath`` (and the
    resource server's ``nonce`` when it demanded one, RFC 9449 §9). Make them anew for every request.

    Raises:
        PolicyError: the token is DPoP-bound and ``dpop_key`` is missing or is not the key it is bound to.
    """
    header = authorization_header(tokens)
    if tokens.token_type != _DPOP:
        return (header,)
    if dpop_key is None or dpop_key.thumbprint != tokens.dpop_jkt:
        raise PolicyError(
            "this token is bound to a DPoP key that is not available; it cannot be used",
            hint=_LOGIN_HINT,
        )
    proof = dpop_proof(
        dpop_key,
        method=method,
        url=url,
        now=now,
        entropy=entropy,
        nonce=nonce,
        access_token=tokens.access_token,
    )
    return header, dpop_header(proof)


class _TokenResponse(msgspec.Struct):
    access_token: str
    token_type: str | None = None
    expires_in: int | float | str | None = None
    refresh_token: str | None = None
    scope: str | None = None
    id_token: str | None = None


def token_error(
    result: HttpResponse | TransportFailure,
    *,
    what: str,
    secrets: Sequence[Secret | None],
    endpoint: str = "the token endpoint",
) -> OAuthError:
    """Classify a failed answer of the token (or device authorization) endpoint (T5); ``secrets`` are
    blanked from any server text."""
    if is_transient(result):
        return transient_error(endpoint, result)
    assert isinstance(result, HttpResponse)
    if not 400 <= result.status <= 499:
        return PeerError(f"{endpoint} answered {what} with an unexpected HTTP {result.status}")
    code, description = error_fields(result.body, secrets)
    detail = describe(code, description)
    if code in _GRANT_ENDING:
        return GrantEndedError(
            f"the authorization server ended the grant: {detail}",
            error=code,
            client_rejected=code == "invalid_client",
            hint=_LOGIN_HINT,
        )
    return RequestRejectedError(
        f"the authorization server refused {what}: HTTP {result.status}, {detail}",
        error=code,
        status=result.status,
    )


def parse_token_response(
    reply: TokenReply,
    *,
    what: str,
    secrets: Sequence[Secret | None],
    registration: Registration,
    token_endpoint: str,
    resource: str | None,
    revocation_endpoint: str | None,
    requested_scopes: Sequence[str] | None,
    previous: TokenSet | None = None,
    grant_type: str = "authorization_code",
) -> TokenSet:
    """A :class:`TokenSet` from a token-endpoint answer, or the classified error raised.

    Rotation (T4): a response with a ``refresh_token`` replaces the old one; a response without keeps
    ``previous.refresh_token`` (and its ``id_token``). ``grant_type`` is recorded unless ``previous`` has one.

    Raises:
        PeerError: not a usable token response, a ``DPoP`` token when no proof was sent, another type.
        GrantEndedError, RequestRejectedError, TransientError: a failed answer (see :func:`token_error`).
    """
    result = reply.result
    if not isinstance(result, HttpResponse) or not 200 <= result.status <= 299:
        raise token_error(result, what=what, secrets=secrets)
    try:
        answer = decode(result.body, _TokenResponse)
    except (msgspec.MsgspecError, ValueError) as exc:
        # msgspec names the field and the expected type, never the value: safe to show.
        raise PeerError(
            f"the token endpoint answered {what} with an unusable document ({untrusted(str(exc), limit=120)})"
        ) from None
    if not answer.access_token:
        raise PeerError(f"the token endpoint answered {what} without an access token")
    token_type = _token_type(answer.token_type, reply.dpop_jkt, what)
    lifetime = lifetime_seconds(answer.expires_in)
    scopes = tuple(answer.scope.split()) if answer.scope is not None else tuple(requested_scopes or ())
    refresh_token = Secret(answer.refresh_token) if answer.refresh_token else None
    id_token = Secret(answer.id_token) if answer.id_token else None
    return TokenSet(
        access_token=Secret(answer.access_token),
        issuer=registration.issuer,
        client_id=registration.client_id,
        token_endpoint=token_endpoint,
        token_type=token_type,
        refresh_token=refresh_token or (previous.refresh_token if previous is not None else None),
        expires_at=None if lifetime is None else result.received_at + lifetime,
        obtained_at=result.received_at,
        scopes=scopes,
        resource=resource,
        revocation_endpoint=revocation_endpoint,
        grant_type=previous.grant_type if previous is not None else grant_type,
        dpop_jkt=reply.dpop_jkt if token_type == _DPOP else None,
        dpop_nonce=reply.dpop_nonce if reply.dpop_jkt is not None else None,
        id_token=id_token or (previous.id_token if previous is not None else None),
    )


def _token_type(value: str | None, dpop_jkt: str | None, what: str) -> str:
    kind = (value or _BEARER).lower()
    if kind == "bearer":
        return _BEARER
    if kind == "dpop" and dpop_jkt is not None:
        return _DPOP
    if kind == "dpop":
        raise PeerError(f"the token endpoint answered {what} with a DPoP token, but no DPoP proof was sent")
    raise PeerError(
        f"the token endpoint issued a {untrusted(value, limit=20)!r} token; only Bearer and DPoP tokens are"
        " supported"
    )


def lifetime_seconds(value: int | float | str | None) -> float | None:
    """``expires_in`` as seconds, None when absent or unusable (some servers send a string)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if value is None or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def check_owner(tokens: TokenSet, registration: Registration) -> None:
    """Refuse to use a registration of another issuer or client with ``tokens`` (D7, T2)."""
    if tokens.issuer != registration.issuer or tokens.client_id != registration.client_id:
        raise PolicyError(
            "these tokens were issued by another authorization server or to another client"
            " than the registration given; refusing to send them",
            hint=_LOGIN_HINT,
        )


def check_dpop_key(tokens: TokenSet, sender: Sender | None) -> Sender | None:
    """The sender for renewing ``tokens``: a DPoP-bound grant (E3) needs its own key, and the stored nonce
    is used when the sender knows none.

    Raises:
        GrantEndedError: the grant is bound to a key the sender does not carry (lost or replaced).
    """
    if tokens.dpop_jkt is None:
        return sender
    if sender is None or sender.dpop_key is None or sender.dpop_key.thumbprint != tokens.dpop_jkt:
        raise GrantEndedError(
            "this grant is bound to a DPoP key that is no longer available; a new login is needed",
            error=None,
            hint=_LOGIN_HINT,
        )
    if sender.dpop_nonce is None and tokens.dpop_nonce is not None:
        return dataclasses.replace(sender, dpop_nonce=tokens.dpop_nonce)
    return sender


def refresh(
    tokens: TokenSet, registration: Registration, *, policy: UrlPolicy, sender: Sender | None = None
) -> Flow[TokenSet]:
    """Refresh ``tokens`` (T3): one POST of ``grant_type=refresh_token`` with ``resource`` and the client's
    authentication to ``tokens.token_endpoint``. Returns the new :class:`TokenSet`; it holds the rotated
    refresh token, or the old one when the server sent none (T4). Persist it before using it.

    ``sender`` carries the time and entropy for a ``private_key_jwt`` client and a DPoP-bound grant (E3):
    such a grant is refreshed with a proof made with its own key (a public client's refresh token is
    bound to it), one more POST when the server demands a nonce.

    Raises:
        GrantEndedError: ``invalid_grant``, ``invalid_client``, ``unauthorized_client``; no refresh token;
            the grant's DPoP key is not in ``sender``.
        RequestRejectedError: another 4xx.
        TransientError: transport failure, 408, 429, 5xx (keep the grant; retry later).
        PeerError: a 2xx that is not a usable token response.
        PolicyError: the registration is not the one the tokens belong to, or the endpoint is refused.
    """
    check_owner(tokens, registration)
    if tokens.refresh_token is None:
        raise GrantEndedError(
            "there is no refresh token for this grant; a new login is needed", error=None, hint=_LOGIN_HINT
        )
    sender = check_dpop_key(tokens, sender)
    form = [("grant_type", "refresh_token"), ("refresh_token", tokens.refresh_token.reveal())]
    if tokens.resource is not None:
        form.append(("resource", tokens.resource))
    reply = yield from token_request(tokens.token_endpoint, form, registration, policy, sender)
    return parse_token_response(
        reply,
        what="the refresh",
        secrets=(tokens.refresh_token, tokens.access_token, registration.client_secret),
        registration=registration,
        token_endpoint=tokens.token_endpoint,
        resource=tokens.resource,
        revocation_endpoint=tokens.revocation_endpoint,
        requested_scopes=tokens.scopes,
        previous=tokens,
    )
