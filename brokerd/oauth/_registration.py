"""Client registration, in priority order (R1-R4), and client authentication at the token endpoint.

1. R1 pre-registered: ``clientId`` (and ``clientSecret`` or a private key) from the config; the
   authentication method is the configured one, else ``private_key_jwt`` with a key, else the first of
   ``client_secret_basic``, ``client_secret_post`` that the server supports when there is a secret, else
   ``none``.
2. R2 client ID metadata document: when the server advertises ``client_id_metadata_document_supported``
   and a ``clientMetadataUrl`` (https, with a path) is configured, that URL is the client ID.
3. R3 dynamic registration (RFC 7591) at ``registration_endpoint``: a native public client with loopback
   redirect URIs and the ``refresh_token`` grant.
4. R4 none of these: :class:`RegistrationError` telling the user to configure ``clientId``.

A :class:`Registration` belongs to one issuer (D7): never use it with another. ``private_key_jwt``
(RFC 7523 §2.2, E1) sends a client assertion instead of a secret; the core builds it
(:func:`~brokerd.oauth.client_assertion`) from a signing callable, so the private key never enters it.
"""

from __future__ import annotations

import base64
from collections.abc import Generator, Sequence
from typing import Literal
from urllib.parse import quote_plus, urlsplit

import msgspec

from brokerd.oauth._discovery import Discovery
from brokerd.oauth._effects import Effect, Flow, HttpResponse, fetch
from brokerd.oauth._errors import PeerError, PolicyError, RegistrationError
from brokerd.oauth._http import decode, describe, error_fields, is_transient, post_json, transient_error
from brokerd.oauth._text import untrusted
from brokerd.oauth._urls import UrlPolicy, check_redirect_uri
from brokerd.secret import Secret

__all__ = ["Registration", "client_auth", "client_metadata_document", "register"]

AuthMethod = Literal["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]
_PUBLIC: AuthMethod = "none"
_SECRET_METHODS: tuple[AuthMethod, ...] = ("client_secret_basic", "client_secret_post")
_KEY_METHOD: AuthMethod = "private_key_jwt"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_GRANTS = ("authorization_code", "refresh_token")
_CONFIGURE_HINT = (
    "register a client with the authorization server and set auth.oauth21.clientId "
    "(and auth.oauth21.clientSecret for a confidential client) in this server's config entry"
)


class Registration(msgspec.Struct, frozen=True, kw_only=True):
    """A client identity at one authorization server, ready to be persisted (msgspec, with the Secret
    hooks of :mod:`brokerd.secret`). Keyed by ``issuer``: never sent to another server (D7).

    ``source`` is ``preregistered`` (R1), ``metadata_document`` (R2) or ``dynamic`` (R3).
    ``client_secret_expires_at`` is None when the secret does not expire.
    """

    issuer: str
    client_id: str
    client_secret: Secret | None = None
    token_endpoint_auth_method: AuthMethod = _PUBLIC
    source: Literal["preregistered", "metadata_document", "dynamic"] = "dynamic"
    redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ()
    scope: str | None = None
    registered_at: float = 0.0
    client_secret_expires_at: float | None = None
    registration_access_token: Secret | None = None
    registration_client_uri: str | None = None


class _RegistrationResponse(msgspec.Struct):
    client_id: str
    client_secret: str | None = None
    token_endpoint_auth_method: str | None = None
    client_secret_expires_at: int | float | None = None
    registration_access_token: str | None = None
    registration_client_uri: str | None = None
    grant_types: list[str] | None = None
    scope: str | None = None


def register(
    discovery: Discovery,
    *,
    policy: UrlPolicy,
    redirect_uris: Sequence[str],
    now: float,
    client_id: str | None = None,
    client_secret: Secret | None = None,
    client_metadata_url: str | None = None,
    client_name: str = "ncp-broker",
    scopes: Sequence[str] | None = None,
    auth_method: AuthMethod | None = None,
    private_key: bool = False,
) -> Flow[Registration]:
    """Get a client registration at ``discovery.issuer`` (R1-R4).

    ``redirect_uris`` are the loopback callback URIs (A6). ``client_id``, ``client_secret`` and
    ``client_metadata_url`` come from the config (``auth.oauth21``). ``scopes`` is sent as the
    registration's ``scope`` in R3 when given. ``auth_method`` is a configured
    ``tokenEndpointAuthMethod``; ``private_key`` says a private key is configured for ``private_key_jwt``
    (both only with ``client_id``). Yields one :class:`Fetch` for R3, none otherwise.

    Raises:
        RegistrationError: R3 refused (the server's error and description in the message) or R4.
        PolicyError: a redirect URI off loopback, a registration endpoint the policy refuses, a secret or
            key with no authentication method the server supports, a configured method the server does
            not list or without the secret or key it needs.
        PeerError: the registration response is unusable.
        TransientError: the registration endpoint could not be reached or answered 408/429/5xx.
    """
    uris = tuple(check_redirect_uri(uri) for uri in redirect_uris)
    if client_id is not None:
        method = _preregistered_method(discovery, client_secret, auth_method, private_key)
        return Registration(
            issuer=discovery.issuer,
            client_id=client_id,
            client_secret=client_secret if method in _SECRET_METHODS else None,
            token_endpoint_auth_method=method,
            source="preregistered",
            redirect_uris=uris,
            registered_at=now,
        )
    if client_metadata_url is not None and discovery.client_id_metadata_document_supported:
        parts = urlsplit(client_metadata_url)
        if parts.scheme != "https" or parts.path in ("", "/"):
            raise PolicyError(
                "the client metadata URL must be an https URL with a path",
                hint="fix auth.oauth21.clientMetadataUrl in the config",
            )
        return Registration(
            issuer=discovery.issuer,
            client_id=client_metadata_url,
            source="metadata_document",
            redirect_uris=uris,
            grant_types=_GRANTS,
            registered_at=now,
        )
    if discovery.registration_endpoint is not None:
        return (
            yield from _dynamic(discovery, policy=policy, uris=uris, now=now, name=client_name, scopes=scopes)
        )
    raise RegistrationError(
        f"the authorization server {discovery.issuer} offers no dynamic client registration"
        " and no client ID is configured",
        hint=_CONFIGURE_HINT,
    )


def _preregistered_method(
    discovery: Discovery, secret: Secret | None, configured: AuthMethod | None, private_key: bool
) -> AuthMethod:
    listed = discovery.token_endpoint_auth_methods_supported
    if configured is not None or private_key:
        method = configured or _KEY_METHOD
        missing = None
        if method == _KEY_METHOD and not private_key:
            missing = "a private key (auth.oauth21.privateKey)"
        elif method in _SECRET_METHODS and not secret:
            missing = "a client secret (auth.oauth21.clientSecret)"
        if missing is not None:
            raise PolicyError(f"client authentication {method} needs {missing}, and none is configured")
        # A server that lists no methods is given the benefit of the doubt for what was configured.
        if listed is not None and method not in listed:
            raise PolicyError(
                f"the authorization server {discovery.issuer} does not accept {method} client"
                f" authentication (it lists {untrusted(', '.join(listed), limit=120) or 'none'})",
                hint="set auth.oauth21.tokenEndpointAuthMethod to one it lists (with its secret or key)",
            )
        return method
    if not secret:
        return "none"
    # RFC 8414 §2: when the list is absent, client_secret_basic is the default.
    supported = listed or ("client_secret_basic",)
    for method in _SECRET_METHODS:
        if method in supported:
            return method
    if "none" in supported:
        return "none"
    raise PolicyError(
        f"the authorization server {discovery.issuer} supports none of client_secret_basic,"
        " client_secret_post or none for client authentication",
        hint="this client cannot authenticate to that server; ask its operator for a public client",
    )


def _dynamic(
    discovery: Discovery,
    *,
    policy: UrlPolicy,
    uris: tuple[str, ...],
    now: float,
    name: str,
    scopes: Sequence[str] | None,
) -> Generator[Effect, object, Registration]:
    endpoint = policy.check(discovery.registration_endpoint or "", what="the registration endpoint")
    grants = list(_GRANTS)
    if discovery.device_authorization_endpoint and _DEVICE_GRANT in (discovery.grant_types_supported or ()):
        grants.append(_DEVICE_GRANT)
    document: dict[str, object] = {
        "client_name": name,
        "application_type": "native",
        "redirect_uris": list(uris),
        "grant_types": grants,
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    if scopes:
        document["scope"] = " ".join(scopes)
    result = yield from fetch(post_json(endpoint, document))
    if is_transient(result):
        raise transient_error("the registration endpoint", result)
    assert isinstance(result, HttpResponse)
    if result.status not in (200, 201):
        raise _refused(discovery, result)
    try:
        answer = decode(result.body, _RegistrationResponse)
    except (msgspec.MsgspecError, ValueError) as exc:
        raise PeerError(
            f"the registration endpoint answered with an unusable document ({untrusted(str(exc), limit=120)})"
        ) from None
    secret = Secret(answer.client_secret) if answer.client_secret else None
    returned = answer.token_endpoint_auth_method or ("client_secret_basic" if secret else "none")
    method = next((m for m in (_PUBLIC, *_SECRET_METHODS) if m == returned), None)
    if method is None:
        raise RegistrationError(
            f"the authorization server registered the client for {untrusted(returned, limit=40)!r}"
            " authentication, which this client does not support",
            hint=_CONFIGURE_HINT,
        )
    if method != "none" and secret is None:
        raise PeerError(f"the registration response asks for {method} but carries no client secret")
    expires = answer.client_secret_expires_at
    return Registration(
        issuer=discovery.issuer,
        client_id=answer.client_id,
        client_secret=secret,
        token_endpoint_auth_method=method,
        source="dynamic",
        redirect_uris=uris,
        grant_types=tuple(answer.grant_types or grants),
        scope=answer.scope,
        registered_at=result.received_at or now,
        client_secret_expires_at=float(expires) if expires else None,
        registration_access_token=(
            Secret(answer.registration_access_token) if answer.registration_access_token else None
        ),
        registration_client_uri=answer.registration_client_uri,
    )


def _refused(discovery: Discovery, result: HttpResponse) -> RegistrationError:
    code, description = error_fields(result.body)
    if code is None and result.status in (404, 405):
        return RegistrationError(
            f"the authorization server {discovery.issuer} has no working registration endpoint"
            f" (HTTP {result.status}) and no client ID is configured",
            hint=_CONFIGURE_HINT,
        )
    hint = _CONFIGURE_HINT
    if code == "invalid_client_metadata":
        hint = (
            "the server rejected the client's metadata (often a scope it does not know);"
            " set auth.oauth21.scopes to scopes it supports, or configure auth.oauth21.clientId"
        )
    return RegistrationError(
        f"the authorization server refused dynamic client registration: HTTP {result.status},"
        f" {describe(code, description)}",
        hint=hint,
        error=code,
    )


def client_auth(
    registration: Registration, *, assertion: Secret | None = None
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """Client authentication for a token, device or revocation request: (headers, form parameters).

    ``client_secret_basic``: an ``authorization: Basic`` header of the form-urlencoded id and secret
    (RFC 6749 §2.3.1). ``client_secret_post``: ``client_id`` and ``client_secret`` in the form.
    ``private_key_jwt``: ``client_assertion_type`` and ``client_assertion`` = ``assertion`` (a fresh one per
    request, from :func:`~brokerd.oauth.client_assertion`); no ``client_id``, the assertion's ``sub`` names
    the client (RFC 7523 §3). ``none``: ``client_id`` in the form, nothing at all for a registration
    without a client ID (a workload presenting only its own JWT, E4).

    Raises:
        PolicyError: the method needs a secret or an assertion and none is given.
    """
    method = registration.token_endpoint_auth_method
    if method == "none":
        return (), ((("client_id", registration.client_id),) if registration.client_id else ())
    if method == _KEY_METHOD:
        if assertion is None:
            raise PolicyError(
                "the client registration uses private_key_jwt but no signing key was given",
                hint="set auth.oauth21.privateKey to the client's private key",
            )
        form = (("client_assertion_type", CLIENT_ASSERTION_TYPE), ("client_assertion", assertion.reveal()))
        return (), form
    secret = registration.client_secret
    if secret is None:
        raise PolicyError(
            f"the client registration uses {method} but holds no client secret",
            hint="set auth.oauth21.clientSecret, or remove clientId to register dynamically",
        )
    if method == "client_secret_post":
        return (), (("client_id", registration.client_id), ("client_secret", secret.reveal()))
    pair = f"{quote_plus(registration.client_id)}:{quote_plus(secret.reveal())}"
    basic = base64.b64encode(pair.encode()).decode("ascii")
    return (("authorization", f"Basic {basic}"),), ()


def client_metadata_document(client_id_url: str, *, redirect_uris: Sequence[str], client_name: str) -> bytes:
    """The JSON client ID metadata document to publish at ``client_id_url`` (R2): its ``client_id`` is its
    own URL; a native public client with the loopback ``redirect_uris`` and the refresh grant."""
    return msgspec.json.encode(
        {
            "client_id": client_id_url,
            "client_name": client_name,
            "application_type": "native",
            "redirect_uris": list(redirect_uris),
            "grant_types": list(_GRANTS),
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
    )
