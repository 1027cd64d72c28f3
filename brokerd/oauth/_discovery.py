"""Discovery: from an MCP server URL (and its 401) to the authorization server to use (D2-D7).

1. Protected-resource metadata (RFC 9728). With ``resource_metadata`` in the 401's challenge: that one URL,
   nothing else. Without: ``/.well-known/oauth-protected-resource/<path>``, then the root form (only the
   root form for a server at the root). Its ``resource`` must be exactly the server URL, or exactly the URL
   the well-known suffix was inserted into (D3); otherwise discovery stops.
2. Each of its ``authorization_servers`` in order, the first that works (D7): metadata at the RFC 8414 /
   OpenID URLs for that issuer (D4), used only when its ``issuer`` is exactly the issuer asked for (D5),
   with every endpoint passing the URL policy.
   Neither the 401 nor the well-known URLs give one: the server card ``/.well-known/mcp.json`` at the
   server's origin may name it in ``authorization.resource_metadata_url`` (D8); that document's ``resource``
   must then be exactly the server URL.
3. No protected-resource metadata at all (a 2025-03-26 server, D6): authorization-server metadata at the
   MCP server's origin; if there is none, ``/authorize``, ``/token`` and ``/register`` at the origin.

An authorization server's metadata may omit ``authorization_endpoint`` only when its
``grant_types_supported`` leaves out ``authorization_code`` (RFC 8414 §2): a machine-to-machine server for
client credentials or jwt-bearer. The DPoP metadata of both documents (RFC 9449 §5.1, RFC 9728 §2) is kept
for :func:`~brokerd.oauth.wants_dpop`.

A transient failure (network, 408, 429, 5xx) never leads to a fallback: it is raised as
:class:`TransientError`, so an outage is not mistaken for a legacy server.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Literal
from urllib.parse import urljoin, urlsplit

import msgspec

from brokerd.oauth._challenge import Challenge
from brokerd.oauth._effects import Effect, Flow
from brokerd.oauth._errors import DiscoveryError, OAuthError, PolicyError, TransientError
from brokerd.oauth._http import Found, Missing, get_document
from brokerd.oauth._text import shown_url, untrusted
from brokerd.oauth._urls import UrlPolicy, as_metadata_urls, canonical_resource, origin, prm_urls

__all__ = ["Discovery", "discover", "discover_issuer"]


WELL_KNOWN_SERVER_CARD = "/.well-known/mcp.json"


class _ResourceMetadata(msgspec.Struct):
    resource: str
    authorization_servers: list[str] | None = None
    scopes_supported: list[str] | None = None
    dpop_signing_alg_values_supported: list[str] | None = None
    dpop_bound_access_tokens_required: bool | None = None


class _CardAuthorization(msgspec.Struct):
    resource_metadata_url: str | None = None


class _ServerCard(msgspec.Struct):
    authorization: _CardAuthorization | None = None


class _ServerMetadata(msgspec.Struct):
    issuer: str
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    registration_endpoint: str | None = None
    revocation_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    code_challenge_methods_supported: list[str] | None = None
    scopes_supported: list[str] | None = None
    token_endpoint_auth_methods_supported: list[str] | None = None
    grant_types_supported: list[str] | None = None
    authorization_response_iss_parameter_supported: bool | None = None
    client_id_metadata_document_supported: bool | None = None
    dpop_signing_alg_values_supported: list[str] | None = None
    token_endpoint_auth_signing_alg_values_supported: list[str] | None = None


Source = Literal["protected_resource", "server_card", "legacy_metadata", "legacy_defaults", "issuer"]


class Discovery(msgspec.Struct, frozen=True, kw_only=True):
    """What discovery found: the resource, the chosen authorization server and its metadata.

    ``resource`` is the value to send as RFC 8707 ``resource`` (A3): the metadata's ``resource`` verbatim,
    or the canonical server URL when there is no protected-resource metadata. Everything else that depends
    on the authorization server is keyed by ``issuer`` (D7). ``source`` says how it was found:
    ``protected_resource`` (RFC 9728), ``server_card`` (D8: RFC 9728 metadata named by the server card),
    ``legacy_metadata`` (D6, metadata at the MCP origin) or ``legacy_defaults`` (D6, no metadata: default
    endpoint paths), or ``issuer`` (:func:`discover_issuer`: an authorization server in its own right, such
    as an enterprise IdP, with no MCP server and so no resource). ``authorization_endpoint`` is None only
    for a server without the authorization-code grant. Serialisable with msgspec.
    """

    server_url: str
    resource: str
    issuer: str
    authorization_endpoint: str | None
    token_endpoint: str
    registration_endpoint: str | None = None
    revocation_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    code_challenge_methods_supported: tuple[str, ...] | None = None
    scopes_supported: tuple[str, ...] | None = None
    token_endpoint_auth_methods_supported: tuple[str, ...] | None = None
    grant_types_supported: tuple[str, ...] | None = None
    authorization_response_iss_parameter_supported: bool = False
    client_id_metadata_document_supported: bool = False
    resource_metadata_url: str | None = None
    resource_scopes_supported: tuple[str, ...] | None = None
    challenge_scope: tuple[str, ...] | None = None
    authorization_servers: tuple[str, ...] = ()
    source: Source = "protected_resource"
    dpop_signing_alg_values_supported: tuple[str, ...] | None = None
    token_endpoint_auth_signing_alg_values_supported: tuple[str, ...] | None = None
    resource_dpop_signing_alg_values_supported: tuple[str, ...] | None = None
    resource_dpop_bound_access_tokens_required: bool = False

    @property
    def resource_indicator(self) -> str | None:
        """The RFC 8707 ``resource`` to send to this authorization server: :attr:`resource`, or None for
        an issuer found by :func:`discover_issuer` (an IdP login asks for no resource)."""
        return None if self.source == "issuer" else self.resource


def discover(server_url: str, *, policy: UrlPolicy, challenge: Challenge | None = None) -> Flow[Discovery]:
    """Discover how to authorize for the MCP server at ``server_url``.

    ``challenge`` is the ``Bearer`` challenge of the server's 401 (its ``resource_metadata`` and ``scope``
    are used), or None when discovering without one.

    Raises:
        DiscoveryError: no usable metadata (D2-D6), with the reason.
        PolicyError: a URL that the policy refuses (S1, S2).
        TransientError: a metadata URL could not be fetched for a reason that may pass.
    """
    policy.check(server_url, what="the MCP server URL")
    found = yield from _resource_metadata(server_url, policy, challenge)
    challenge_scope = challenge.scope if challenge is not None else None
    if found is None:
        return (yield from _legacy(server_url, policy, challenge_scope))
    prm, prm_url, source = found
    if not prm.authorization_servers:
        raise DiscoveryError(f"the protected resource metadata at {prm_url} names no authorization server")
    errors: list[OAuthError] = []
    for issuer in prm.authorization_servers:
        try:
            meta = yield from _server_metadata(issuer, policy)
            if meta is None:
                raise DiscoveryError(f"no authorization server metadata found for issuer {untrusted(issuer)}")
            return _discovery(
                server_url,
                meta,
                policy,
                resource=prm.resource,
                resource_metadata_url=prm_url,
                resource_scopes=prm.scopes_supported,
                challenge_scope=challenge_scope,
                authorization_servers=tuple(prm.authorization_servers),
                source=source,
                prm=prm,
            )
        except (DiscoveryError, PolicyError, TransientError) as exc:
            errors.append(exc)
    raise next((e for e in errors if isinstance(e, TransientError)), errors[0])


def discover_issuer(issuer: str, *, policy: UrlPolicy) -> Flow[Discovery]:
    """The metadata of the authorization server ``issuer`` itself (D4, D5), for logging in there without an
    MCP server in front: an enterprise IdP (E2). ``source`` is ``issuer`` and ``resource`` the issuer,
    never sent (:attr:`Discovery.resource_indicator`).

    Raises:
        DiscoveryError: no metadata at the issuer's well-known URLs, or metadata of another issuer (D5).
        PolicyError, TransientError: as for :func:`discover`.
    """
    meta = yield from _server_metadata(issuer, policy)
    if meta is None:
        raise DiscoveryError(f"no authorization server metadata found for issuer {untrusted(issuer)}")
    return _discovery(
        issuer,
        meta,
        policy,
        resource=issuer,
        resource_metadata_url=None,
        resource_scopes=None,
        challenge_scope=None,
        authorization_servers=(),
        source="issuer",
    )


def _resource_metadata(
    server_url: str, policy: UrlPolicy, challenge: Challenge | None
) -> Generator[Effect, object, tuple[_ResourceMetadata, str, Source] | None]:
    """The validated protected-resource metadata, its URL and how it was found; None when there is none
    (a legacy server)."""
    named = challenge.resource_metadata if challenge is not None else None
    candidates: list[tuple[str, tuple[str, ...]]]
    if named is not None:
        # RFC 9728 wants an absolute URL; a relative one is resolved against the server rather than refused.
        candidates = [(urljoin(server_url, named), (server_url,))]
    else:
        candidates = [(url, (server_url, inserted)) for url, inserted in prm_urls(server_url)]
    transient: TransientError | None = None
    reasons: list[str] = []
    for url, accepted in candidates:
        what = "the protected resource metadata URL"
        outcome = yield from get_document(url, _ResourceMetadata, policy, what)
        if isinstance(outcome, TransientError):
            transient = transient or outcome
        elif isinstance(outcome, Missing):
            reasons.append(outcome.reason)
        else:
            return _check_resource(outcome, accepted), url, "protected_resource"
    if transient is not None:
        raise transient
    if named is not None:
        raise DiscoveryError(
            f"the protected resource metadata named by the server could not be used: {'; '.join(reasons)}"
        )
    return (yield from _from_server_card(server_url, policy))


def _from_server_card(
    server_url: str, policy: UrlPolicy
) -> Generator[Effect, object, tuple[_ResourceMetadata, str, Source] | None]:
    """D8: the protected-resource metadata that the server card at the origin names, validated as D3
    wants; None when there is no card or it names none."""
    card_url = origin(server_url) + WELL_KNOWN_SERVER_CARD
    card = yield from get_document(card_url, _ServerCard, policy, "the MCP server card")
    if isinstance(card, TransientError):
        raise card
    if isinstance(card, Missing) or card.document.authorization is None:
        return None
    named = card.document.authorization.resource_metadata_url
    if not named:
        return None
    url = urljoin(card.url, named)
    outcome = yield from get_document(url, _ResourceMetadata, policy, "the protected resource metadata URL")
    if isinstance(outcome, TransientError):
        raise outcome
    if isinstance(outcome, Missing):
        raise DiscoveryError(
            f"the protected resource metadata named by the server card at {shown_url(card.url)} could not"
            f" be used: {outcome.reason}"
        )
    return _check_resource(outcome, (server_url,)), outcome.url, "server_card"


def _check_resource(found: Found[_ResourceMetadata], accepted: tuple[str, ...]) -> _ResourceMetadata:
    # D3: exact string comparison, no normalisation; a mismatch means nothing from this document is used.
    if found.document.resource not in accepted:
        raise DiscoveryError(
            f"the protected resource metadata at {shown_url(found.url)} is for"
            f" {shown_url(found.document.resource)!r}, not for {shown_url(accepted[0])!r};"
            " refusing to authorize",
            hint="check the server URL in the config: it must be exactly the URL the server publishes",
        )
    return found.document


def _server_metadata(issuer: str, policy: UrlPolicy) -> Generator[Effect, object, _ServerMetadata | None]:
    """The issuer's metadata, None when there is none at any URL.

    Raises DiscoveryError when metadata names another issuer (D5), TransientError when a URL failed.
    """
    policy.check(issuer, what="the authorization server issuer")
    parts = urlsplit(issuer)
    if parts.query or parts.fragment:
        raise DiscoveryError(
            f"the issuer {untrusted(issuer)} has a query or fragment, which RFC 8414 forbids"
        )
    transient: TransientError | None = None
    mismatch: DiscoveryError | None = None
    for url in as_metadata_urls(issuer):
        outcome = yield from get_document(
            url, _ServerMetadata, policy, "the authorization server metadata URL"
        )
        if isinstance(outcome, TransientError):
            transient = transient or outcome
        elif isinstance(outcome, Found):
            if outcome.document.issuer == issuer:
                return outcome.document
            mismatch = mismatch or DiscoveryError(
                f"the authorization server metadata at {url} is for issuer "
                f"{untrusted(outcome.document.issuer)!r}, not {issuer!r}; it is not used"
            )
    if transient is not None:
        raise transient
    if mismatch is not None:
        raise mismatch
    return None


def _legacy(
    server_url: str, policy: UrlPolicy, challenge_scope: tuple[str, ...] | None
) -> Generator[Effect, object, Discovery]:
    resource = canonical_resource(server_url)
    issuer = origin(resource)  # lower-case scheme and host: the legacy issuer is implied, not written
    meta = yield from _server_metadata(issuer, policy)
    if meta is not None:
        return _discovery(
            server_url,
            meta,
            policy,
            resource=resource,
            resource_metadata_url=None,
            resource_scopes=None,
            challenge_scope=challenge_scope,
            authorization_servers=(),
            source="legacy_metadata",
        )
    defaults = _ServerMetadata(
        issuer=issuer,
        authorization_endpoint=f"{issuer}/authorize",
        token_endpoint=f"{issuer}/token",
        registration_endpoint=f"{issuer}/register",
    )
    return _discovery(
        server_url,
        defaults,
        policy,
        resource=resource,
        resource_metadata_url=None,
        resource_scopes=None,
        challenge_scope=challenge_scope,
        authorization_servers=(),
        source="legacy_defaults",
    )


def _discovery(
    server_url: str,
    meta: _ServerMetadata,
    policy: UrlPolicy,
    *,
    resource: str,
    resource_metadata_url: str | None,
    resource_scopes: list[str] | None,
    challenge_scope: tuple[str, ...] | None,
    authorization_servers: tuple[str, ...],
    source: Source,
    prm: _ResourceMetadata | None = None,
) -> Discovery:
    code_grant = meta.grant_types_supported is None or "authorization_code" in meta.grant_types_supported
    if not meta.token_endpoint or (code_grant and not meta.authorization_endpoint):
        raise DiscoveryError(
            f"the authorization server {untrusted(meta.issuer)} lists no authorization or token endpoint"
        )
    endpoints = {
        "authorization_endpoint": meta.authorization_endpoint or None,
        "token_endpoint": meta.token_endpoint,
        "registration_endpoint": meta.registration_endpoint,
        "revocation_endpoint": meta.revocation_endpoint,
        "device_authorization_endpoint": meta.device_authorization_endpoint,
    }
    for name, url in endpoints.items():
        if url is not None:
            policy.check(url, what=f"the {name.replace('_', ' ')}")
    return Discovery(
        server_url=server_url,
        resource=resource,
        issuer=meta.issuer,
        authorization_endpoint=meta.authorization_endpoint or None,
        token_endpoint=meta.token_endpoint,
        registration_endpoint=meta.registration_endpoint,
        revocation_endpoint=meta.revocation_endpoint,
        device_authorization_endpoint=meta.device_authorization_endpoint,
        code_challenge_methods_supported=_tuple(meta.code_challenge_methods_supported),
        scopes_supported=_tuple(meta.scopes_supported),
        token_endpoint_auth_methods_supported=_tuple(meta.token_endpoint_auth_methods_supported),
        grant_types_supported=_tuple(meta.grant_types_supported),
        authorization_response_iss_parameter_supported=bool(
            meta.authorization_response_iss_parameter_supported
        ),
        client_id_metadata_document_supported=bool(meta.client_id_metadata_document_supported),
        resource_metadata_url=resource_metadata_url,
        resource_scopes_supported=_tuple(resource_scopes),
        challenge_scope=challenge_scope,
        authorization_servers=authorization_servers,
        source=source,
        dpop_signing_alg_values_supported=_tuple(meta.dpop_signing_alg_values_supported),
        token_endpoint_auth_signing_alg_values_supported=_tuple(
            meta.token_endpoint_auth_signing_alg_values_supported
        ),
        resource_dpop_signing_alg_values_supported=_tuple(
            prm.dpop_signing_alg_values_supported if prm is not None else None
        ),
        resource_dpop_bound_access_tokens_required=bool(prm and prm.dpop_bound_access_tokens_required),
    )


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)
