"""The token endpoint: code exchange, refresh, parsing responses, classifying failures (T1, T3-T5).

A :class:`TokenSet` carries everything the next refresh needs (DESIGN rule 5): absolute expiry, issuer,
client, resource, token and revocation endpoints. Expiry is ``received_at + expires_in`` of the response
that carried it, so it is absolute wall-clock time and survives a restart.

Failures (T5): :class:`TransientError` for a transport failure, 408, 429, 5xx (with ``retry_after``);
:class:`GrantEndedError` for ``invalid_grant``, ``invalid_client``, ``unauthorized_client``;
:class:`RequestRejectedError` for any other 4xx, named by its ``error`` code when it has one.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence

import msgspec

from brokerd.oauth._effects import Effect, Flow, HttpResponse, TransportFailure, fetch
from brokerd.oauth._errors import (
    GrantEndedError,
    OAuthError,
    PeerError,
    PolicyError,
    RequestRejectedError,
)
from brokerd.oauth._http import decode, describe, error_fields, is_transient, post_form, transient_error
from brokerd.oauth._registration import Registration, client_auth
from brokerd.oauth._text import untrusted
from brokerd.oauth._urls import UrlPolicy
from brokerd.secret import Secret

__all__ = ["TokenSet", "bearer_header", "refresh"]

_GRANT_ENDING = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})
_LOGIN_HINT = "log in to this server again"
_BEARER = "Bearer"


class TokenSet(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens of one grant and what is needed to refresh and revoke them; persistable with msgspec (and
    the Secret hooks of :mod:`brokerd.secret`).

    ``expires_at`` is absolute wall-clock seconds (None when the server gave no ``expires_in``);
    ``obtained_at`` when the response arrived, so the issued lifetime is ``expires_at - obtained_at``.
    ``scopes`` are the granted scopes, or the requested ones when the response did not say.
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

    def remaining(self, now: float) -> float | None:
        """Seconds of life left at ``now`` (negative once expired), None when the expiry is unknown."""
        return None if self.expires_at is None else self.expires_at - now


def bearer_header(access_token: Secret) -> tuple[str, str]:
    """The only way a token is sent to a resource (T1): ``("authorization", "Bearer <token>")``."""
    return "authorization", f"Bearer {access_token.reveal()}"


class _TokenResponse(msgspec.Struct):
    access_token: str
    token_type: str | None = None
    expires_in: int | float | str | None = None
    refresh_token: str | None = None
    scope: str | None = None


def token_request(
    endpoint: str,
    form: Sequence[tuple[str, str]],
    registration: Registration,
    policy: UrlPolicy,
) -> Generator[Effect, object, HttpResponse | TransportFailure]:
    """POST ``form`` plus the client's authentication to ``endpoint``; the raw result."""
    policy.check(endpoint, what="the token endpoint")
    headers, auth_form = client_auth(registration)
    return (yield from fetch(post_form(endpoint, (*form, *auth_form), headers)))


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
    result: HttpResponse | TransportFailure,
    *,
    what: str,
    secrets: Sequence[Secret | None],
    registration: Registration,
    token_endpoint: str,
    resource: str | None,
    revocation_endpoint: str | None,
    requested_scopes: Sequence[str] | None,
    previous_refresh_token: Secret | None = None,
) -> TokenSet:
    """A :class:`TokenSet` from a token-endpoint answer, or the classified error raised.

    Rotation (T4): a response with a ``refresh_token`` replaces the old one; a response without keeps
    ``previous_refresh_token``.
    """
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
    token_type = answer.token_type or "Bearer"
    if token_type.lower() != "bearer":
        raise PeerError(
            f"the token endpoint issued a {untrusted(token_type, limit=20)!r} token;"
            " only Bearer tokens are supported"
        )
    lifetime = _seconds(answer.expires_in)
    scopes = tuple(answer.scope.split()) if answer.scope is not None else tuple(requested_scopes or ())
    refresh_token = Secret(answer.refresh_token) if answer.refresh_token else previous_refresh_token
    return TokenSet(
        access_token=Secret(answer.access_token),
        issuer=registration.issuer,
        client_id=registration.client_id,
        token_endpoint=token_endpoint,
        token_type=_BEARER,
        refresh_token=refresh_token,
        expires_at=None if lifetime is None else result.received_at + lifetime,
        obtained_at=result.received_at,
        scopes=scopes,
        resource=resource,
        revocation_endpoint=revocation_endpoint,
    )


def _seconds(value: int | float | str | None) -> float | None:
    # Some servers send expires_in as a string; anything unusable counts as "not given".
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


def refresh(tokens: TokenSet, registration: Registration, *, policy: UrlPolicy) -> Flow[TokenSet]:
    """Refresh ``tokens`` (T3): one POST of ``grant_type=refresh_token`` with ``resource`` and the client's
    authentication to ``tokens.token_endpoint``. Returns the new :class:`TokenSet`; it holds the rotated
    refresh token, or the old one when the server sent none (T4). Persist it before using it.

    Raises:
        GrantEndedError: ``invalid_grant``, ``invalid_client``, ``unauthorized_client``; no refresh token.
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
    form = [("grant_type", "refresh_token"), ("refresh_token", tokens.refresh_token.reveal())]
    if tokens.resource is not None:
        form.append(("resource", tokens.resource))
    result = yield from token_request(tokens.token_endpoint, form, registration, policy)
    return parse_token_response(
        result,
        what="the refresh",
        secrets=(tokens.refresh_token, tokens.access_token, registration.client_secret),
        registration=registration,
        token_endpoint=tokens.token_endpoint,
        resource=tokens.resource,
        revocation_endpoint=tokens.revocation_endpoint,
        requested_scopes=tokens.scopes,
        previous_refresh_token=tokens.refresh_token,
    )
