"""The sans-I/O OAuth 2.1 core of ncp-broker: MCP authorization, client side.

Everything here is synchronous and deterministic (DESIGN.md rule 1). Time, entropy and HTTP answers come
in as arguments; requests go out as data. A *flow* is a generator that yields :data:`Effect` values and
is resumed with their answers (see ``_effects.py`` for the table); :func:`run_sync` runs one against any
callable. The flows, in the order a login uses them::

    challenge = bearer_challenge(response_401.header_values("www-authenticate"))
    discovery = run(discover(server_url, policy=policy, challenge=challenge))
    registration = run(register(discovery, policy=policy, redirect_uris=[uri], now=now, client_id=...))
    tokens = run(authorization_code_flow(discovery, registration, policy=policy, redirect_uri=uri,
                                         scopes=select_scopes(discovery, configured), entropy=os.urandom))
    tokens = run(refresh(tokens, registration, policy=policy))          # later, before tokens.expires_at
    outcomes = run(revoke(tokens, registration, policy=policy))         # at logout

Errors are the :class:`OAuthError` tree of ``_errors.py``. Every token, secret, code and verifier is a
:class:`~brokerd.secret.Secret`.
"""

from brokerd.oauth._authorize import authorization_code_flow, parse_callback_query, parse_pasted_response
from brokerd.oauth._challenge import Challenge, bearer_challenge, parse_www_authenticate
from brokerd.oauth._device import device_flow
from brokerd.oauth._discovery import Discovery, discover
from brokerd.oauth._effects import (
    AwaitRedirect,
    Effect,
    Entropy,
    Fetch,
    Flow,
    HttpRequest,
    HttpResponse,
    ShowDeviceCode,
    Sleep,
    TransportFailure,
    run_sync,
)
from brokerd.oauth._errors import (
    AuthorizationDeniedError,
    CallbackError,
    DiscoveryError,
    GrantEndedError,
    OAuthError,
    PeerError,
    PolicyError,
    RegistrationError,
    RequestRejectedError,
    TransientError,
)
from brokerd.oauth._http import parse_retry_after
from brokerd.oauth._pkce import Pkce, make_pkce, require_s256
from brokerd.oauth._registration import Registration, client_auth, client_metadata_document, register
from brokerd.oauth._revocation import RevocationOutcome, revoke
from brokerd.oauth._scopes import MAX_AUTHORIZATIONS, select_scopes, step_up_scopes
from brokerd.oauth._tokens import TokenSet, bearer_header, refresh
from brokerd.oauth._urls import (
    UrlPolicy,
    canonical_resource,
    canonical_url,
    is_loopback_host,
    loopback_redirect_uri,
)

__all__ = [
    "MAX_AUTHORIZATIONS",
    "AuthorizationDeniedError",
    "AwaitRedirect",
    "CallbackError",
    "Challenge",
    "Discovery",
    "DiscoveryError",
    "Effect",
    "Entropy",
    "Fetch",
    "Flow",
    "GrantEndedError",
    "HttpRequest",
    "HttpResponse",
    "OAuthError",
    "PeerError",
    "Pkce",
    "PolicyError",
    "Registration",
    "RegistrationError",
    "RequestRejectedError",
    "RevocationOutcome",
    "ShowDeviceCode",
    "Sleep",
    "TokenSet",
    "TransientError",
    "TransportFailure",
    "UrlPolicy",
    "authorization_code_flow",
    "bearer_challenge",
    "bearer_header",
    "canonical_resource",
    "canonical_url",
    "client_auth",
    "client_metadata_document",
    "device_flow",
    "discover",
    "is_loopback_host",
    "loopback_redirect_uri",
    "make_pkce",
    "parse_callback_query",
    "parse_pasted_response",
    "parse_retry_after",
    "parse_www_authenticate",
    "refresh",
    "register",
    "require_s256",
    "revoke",
    "run_sync",
    "select_scopes",
    "step_up_scopes",
]
