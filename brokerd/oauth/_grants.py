"""Grants without a browser: client credentials (E1), jwt-bearer (E2, E4), token exchange for an ID-JAG (E2).

* :func:`client_credentials_flow` — ``grant_type=client_credentials`` (OAuth 2.1 §4.2, SEP-1046) for a
  confidential client: ``client_secret_basic``/``_post``, or ``private_key_jwt`` with a :class:`Sender`
  that carries the client's signing key. ``resource`` and ``scope`` are sent. No refresh token is
  expected: the grant is renewed by asking again (:func:`renew`).
* :func:`jwt_bearer_flow` — ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` (RFC 7523 §2.1,
  RFC 7521 §4.1) with ``assertion`` = a JWT someone else issued: a workload's own token (workload identity
  federation, SEP-1933) or an ID-JAG (SEP-990). The registration may have no client ID at all (a workload
  that presents only its JWT).
* :func:`exchange_for_id_jag` — RFC 8693 token exchange at an enterprise IdP (SEP-990 §4): the user's ID
  token in, an Identity Assertion JWT Authorization Grant out, for ``audience`` = the MCP server's
  authorization server and ``resource`` = the MCP server. :func:`enterprise_flow` chains it with
  :func:`jwt_bearer_flow`.

Each flow is one POST to a token endpoint (two when a DPoP nonce is demanded), classified as every token
request is (T5): ``invalid_grant`` (an expired or refused assertion) ends the grant; nothing is retried
here — the conformance suite's workload scenario counts a retry after a refusal as a fault, and so do we.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from brokerd.oauth._discovery import Discovery
from brokerd.oauth._effects import Flow, HttpResponse, TransportFailure
from brokerd.oauth._errors import GrantEndedError, PeerError, PolicyError
from brokerd.oauth._http import decode
from brokerd.oauth._registration import Registration
from brokerd.oauth._sender import Sender, token_request
from brokerd.oauth._text import untrusted
from brokerd.oauth._tokens import (
    TokenSet,
    check_dpop_key,
    check_owner,
    lifetime_seconds,
    parse_token_response,
    refresh,
    token_error,
)
from brokerd.oauth._urls import UrlPolicy
from brokerd.secret import Secret

__all__ = [
    "CLIENT_CREDENTIALS",
    "ID_JAG_TOKEN_TYPE",
    "ID_TOKEN_TYPE",
    "JWT_BEARER",
    "TOKEN_EXCHANGE",
    "IdJag",
    "client_credentials_flow",
    "enterprise_flow",
    "exchange_for_id_jag",
    "jwt_bearer_flow",
    "renew",
]

CLIENT_CREDENTIALS = "client_credentials"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN, not a secret
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 - a URN, not a secret
ID_JAG_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id-jag"  # noqa: S105 - a URN, not a secret
_RENEW_HINT = "check the client's credentials in the config, then run: ncp-broker login SERVER"


@dataclass(frozen=True, slots=True)
class IdJag:
    """An Identity Assertion JWT Authorization Grant from the IdP: ``assertion`` to present with the
    jwt-bearer grant, its ``expires_at`` (absolute, None when the IdP did not say) and granted ``scopes``
    (None when the IdP did not say)."""

    assertion: Secret
    expires_at: float | None
    scopes: tuple[str, ...] | None


def client_credentials_flow(
    discovery: Discovery,
    registration: Registration,
    *,
    policy: UrlPolicy,
    scopes: Sequence[str] | None,
    sender: Sender | None = None,
) -> Flow[TokenSet]:
    """Get tokens with the client-credentials grant (E1). ``sender`` is needed for ``private_key_jwt``
    (the client key) and for DPoP.

    Raises:
        PolicyError: the registration is for another issuer (D7) or is a public client (the grant is for
            confidential clients only), its key's algorithm is not one the server lists, the token
            endpoint is refused.
        GrantEndedError: ``invalid_client``, ``unauthorized_client``, ``invalid_grant``.
        RequestRejectedError: another 4xx (``unsupported_grant_type``, ``invalid_scope``, …).
        TransientError, PeerError: as for any token request.
    """
    _check_issuer(discovery, registration)
    method = registration.token_endpoint_auth_method
    if method == "none":
        raise PolicyError(
            "the client-credentials grant needs a confidential client, and this one has no secret or key",
            hint="set auth.oauth21.clientSecret or auth.oauth21.privateKey",
        )
    _check_signing_alg(discovery, registration, sender)
    target = _Target.of(discovery)
    return (yield from _client_credentials(target, registration, policy=policy, scopes=scopes, sender=sender))


def jwt_bearer_flow(
    discovery: Discovery,
    registration: Registration,
    *,
    assertion: Secret,
    policy: UrlPolicy,
    scopes: Sequence[str] | None,
    sender: Sender | None = None,
) -> Flow[TokenSet]:
    """Get tokens with the jwt-bearer grant (E2, E4): ``assertion`` is the workload's JWT or an ID-JAG.
    ``registration`` may be ``Registration(issuer=…, client_id="")`` for no client authentication at all.

    Raises:
        PolicyError: the registration is for another issuer (D7), the assertion is empty, the token
            endpoint is refused.
        GrantEndedError: ``invalid_grant`` (expired, wrong audience, untrusted issuer …),
            ``invalid_client``, ``unauthorized_client``.
        RequestRejectedError, TransientError, PeerError: as for any token request.
    """
    _check_issuer(discovery, registration)
    _check_signing_alg(discovery, registration, sender)
    target = _Target.of(discovery)
    return (
        yield from _jwt_bearer(target, assertion, registration, policy=policy, scopes=scopes, sender=sender)
    )


def exchange_for_id_jag(
    idp: Registration,
    *,
    token_endpoint: str,
    subject_token: Secret,
    audience: str,
    resource: str,
    policy: UrlPolicy,
    scopes: Sequence[str] | None = None,
    subject_token_type: str = ID_TOKEN_TYPE,
    sender: Sender | None = None,
) -> Flow[IdJag]:
    """Exchange the user's ID token for an ID-JAG at the IdP's ``token_endpoint`` (RFC 8693, SEP-990 §4):
    ``requested_token_type`` = ID-JAG, ``audience`` = the MCP server's authorization server issuer,
    ``resource`` = the MCP server's resource identifier, ``subject_token`` with its type, ``scope`` when
    given, and the IdP client's authentication (``idp``, the MCP client's registration at the IdP).

    Raises:
        GrantEndedError: ``invalid_grant`` (the ID token expired or was refused): log in at the IdP again.
        RequestRejectedError: another 4xx (e.g. the IdP's policy refuses this server, ``invalid_target``).
        PeerError: the answer is not an ID-JAG.
        PolicyError, TransientError: as for any token request.
    """
    if not subject_token:
        raise PolicyError("there is no ID token to exchange", hint="log in at the enterprise IdP first")
    form = [
        ("grant_type", TOKEN_EXCHANGE),
        ("requested_token_type", ID_JAG_TOKEN_TYPE),
        ("audience", audience),
        ("resource", resource),
        ("subject_token", subject_token.reveal()),
        ("subject_token_type", subject_token_type),
    ]
    if scopes:
        form.append(("scope", " ".join(scopes)))
    reply = yield from token_request(token_endpoint, form, idp, policy, sender)
    return _parse_id_jag(reply.result, secrets=(subject_token, idp.client_secret))


def enterprise_flow(
    discovery: Discovery,
    registration: Registration,
    *,
    idp: Registration,
    idp_token_endpoint: str,
    id_token: Secret,
    policy: UrlPolicy,
    scopes: Sequence[str] | None,
    sender: Sender | None = None,
) -> Flow[TokenSet]:
    """Enterprise-managed authorization (E2, SEP-990): :func:`exchange_for_id_jag` at the IdP, then
    :func:`jwt_bearer_flow` with the ID-JAG at ``discovery``'s authorization server, with ``registration``
    (the MCP client's registration there, which the ID-JAG's ``client_id`` names). ``sender`` is used at
    the MCP server's authorization server only (DPoP binds the MCP token, not the ID-JAG).

    Raises: what the two flows raise.
    """
    _check_issuer(discovery, registration)
    jag = yield from exchange_for_id_jag(
        idp,
        token_endpoint=idp_token_endpoint,
        subject_token=id_token,
        audience=discovery.issuer,
        resource=discovery.resource,
        policy=policy,
        scopes=scopes,
    )
    return (
        yield from jwt_bearer_flow(
            discovery, registration, assertion=jag.assertion, policy=policy, scopes=scopes, sender=sender
        )
    )


def renew(
    tokens: TokenSet,
    registration: Registration,
    *,
    policy: UrlPolicy,
    sender: Sender | None = None,
    assertion: Secret | None = None,
) -> Flow[TokenSet]:
    """Get the next tokens of a grant without a person (T3, E1, E2, E4), from what the grant persisted:
    with its refresh token when it has one (:func:`refresh`); else a new client-credentials request; else
    for a jwt-bearer grant a new request with ``assertion`` (the workload's current JWT, or a new ID-JAG).

    Raises:
        GrantEndedError: nothing to renew with (no refresh token, and not a grant that can ask again, or
            a jwt-bearer grant without ``assertion``); the DPoP key is missing; what the requests raise.
        PolicyError, RequestRejectedError, TransientError, PeerError: as for any token request.
    """
    check_owner(tokens, registration)
    if tokens.refresh_token is not None:
        return (yield from refresh(tokens, registration, policy=policy, sender=sender))
    sender = check_dpop_key(tokens, sender)
    target, scopes = _Target.of(tokens), tokens.scopes or None
    if tokens.grant_type == CLIENT_CREDENTIALS:
        return (
            yield from _client_credentials(
                target, registration, policy=policy, scopes=scopes, sender=sender, held=tokens.access_token
            )
        )
    if tokens.grant_type == JWT_BEARER and assertion is not None:
        return (
            yield from _jwt_bearer(
                target, assertion, registration, policy=policy, scopes=scopes, sender=sender
            )
        )
    if tokens.grant_type == JWT_BEARER:
        raise GrantEndedError(
            "this jwt-bearer grant needs a new assertion to get new tokens, and none is available",
            error=None,
            hint=_RENEW_HINT,
        )
    raise GrantEndedError(
        "there is no refresh token for this grant; a new login is needed",
        error=None,
        hint="log in to this server again",
    )


# ---- shared ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a grant's tokens come from and what for: from discovery (a new grant) or from the tokens
    themselves (renewing without rediscovery, DESIGN rule 5)."""

    token_endpoint: str
    resource: str | None
    revocation_endpoint: str | None

    @classmethod
    def of(cls, source: Discovery | TokenSet) -> _Target:
        if isinstance(source, Discovery):
            return cls(source.token_endpoint, source.resource_indicator, source.revocation_endpoint)
        return cls(source.token_endpoint, source.resource, source.revocation_endpoint)


def _client_credentials(
    target: _Target,
    registration: Registration,
    *,
    policy: UrlPolicy,
    scopes: Sequence[str] | None,
    sender: Sender | None,
    held: Secret | None = None,
) -> Flow[TokenSet]:
    return (
        yield from _request(
            target,
            [("grant_type", CLIENT_CREDENTIALS)],
            registration,
            policy=policy,
            scopes=scopes,
            sender=sender,
            what="the client credentials request",
            grant_type=CLIENT_CREDENTIALS,
            secrets=(registration.client_secret, held),
        )
    )


def _jwt_bearer(
    target: _Target,
    assertion: Secret,
    registration: Registration,
    *,
    policy: UrlPolicy,
    scopes: Sequence[str] | None,
    sender: Sender | None,
) -> Flow[TokenSet]:
    if not assertion:
        raise PolicyError("the assertion for the jwt-bearer grant is empty")
    return (
        yield from _request(
            target,
            [("grant_type", JWT_BEARER), ("assertion", assertion.reveal())],
            registration,
            policy=policy,
            scopes=scopes,
            sender=sender,
            what="the jwt-bearer request",
            grant_type=JWT_BEARER,
            secrets=(assertion, registration.client_secret),
        )
    )


def _request(
    target: _Target,
    form: list[tuple[str, str]],
    registration: Registration,
    *,
    policy: UrlPolicy,
    scopes: Sequence[str] | None,
    sender: Sender | None,
    what: str,
    grant_type: str,
    secrets: Sequence[Secret | None],
) -> Flow[TokenSet]:
    if scopes:
        form.append(("scope", " ".join(scopes)))
    if target.resource is not None:
        form.append(("resource", target.resource))
    reply = yield from token_request(target.token_endpoint, form, registration, policy, sender)
    return parse_token_response(
        reply,
        what=what,
        secrets=secrets,
        registration=registration,
        token_endpoint=target.token_endpoint,
        resource=target.resource,
        revocation_endpoint=target.revocation_endpoint,
        requested_scopes=scopes,
        grant_type=grant_type,
    )


class _ExchangeResponse(msgspec.Struct):
    access_token: str
    issued_token_type: str | None = None
    token_type: str | None = None
    expires_in: int | float | str | None = None
    scope: str | None = None


def _parse_id_jag(result: HttpResponse | TransportFailure, *, secrets: Sequence[Secret | None]) -> IdJag:
    what = "the token exchange"
    if not isinstance(result, HttpResponse) or not 200 <= result.status <= 299:
        raise token_error(result, what=what, secrets=secrets, endpoint="the IdP's token endpoint")
    try:
        answer = decode(result.body, _ExchangeResponse)
    except (msgspec.MsgspecError, ValueError) as exc:
        raise PeerError(
            f"the IdP answered {what} with an unusable document ({untrusted(str(exc), limit=120)})"
        ) from None
    if not answer.access_token:
        raise PeerError(f"the IdP answered {what} without an ID-JAG")
    if answer.issued_token_type is not None and answer.issued_token_type != ID_JAG_TOKEN_TYPE:
        raise PeerError(
            f"the IdP answered {what} with a {untrusted(answer.issued_token_type, limit=80)!r}, not an ID-JAG"
        )
    lifetime = lifetime_seconds(answer.expires_in)
    expires_at = None if lifetime is None else result.received_at + lifetime
    scopes = tuple(answer.scope.split()) if answer.scope is not None else None
    return IdJag(Secret(answer.access_token), expires_at, scopes)


def _check_issuer(discovery: Discovery, registration: Registration) -> None:
    if registration.issuer != discovery.issuer:
        raise PolicyError(
            f"the client registration belongs to {registration.issuer}, not to {discovery.issuer}"
        )


def _check_signing_alg(discovery: Discovery, registration: Registration, sender: Sender | None) -> None:
    method = registration.token_endpoint_auth_method
    if method != "private_key_jwt":
        return
    if sender is None or sender.client_key is None:
        raise PolicyError(
            "the client uses private_key_jwt but no signing key was given",
            hint="set auth.oauth21.privateKey to the client's private key",
        )
    listed = discovery.token_endpoint_auth_signing_alg_values_supported
    if listed is not None and sender.client_key.alg not in listed:
        raise PolicyError(
            f"the authorization server {discovery.issuer} does not accept {sender.client_key.alg} client"
            f" assertions (it lists {untrusted(', '.join(listed), limit=80) or 'none'})",
            hint="use an EC P-256 key (ES256) for auth.oauth21.privateKey, or one the server lists",
        )
