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

Grants without a browser (E1, E2, E4) and DPoP (E3) take a :class:`Sender`: the time, entropy, the client's
signing key for ``private_key_jwt`` and the grant's DPoP key, each a :class:`JwsSigner` whose private key
stays at the edge (``brokerd/keys.py``)::

    sender = Sender(entropy=os.urandom, client_key=client_signer, dpop_key=dpop_signer)
    tokens = run(client_credentials_flow(discovery, registration, policy=policy, scopes=s, sender=sender))
    tokens = run(jwt_bearer_flow(discovery, registration, assertion=jwt, policy=policy, scopes=s))
    tokens = run(enterprise_flow(discovery, registration, idp=idp_registration, idp_token_endpoint=…,
                                 id_token=idp_tokens.id_token, policy=policy, scopes=s))
    tokens = run(renew(tokens, registration, policy=policy, sender=sender, assertion=jwt))  # before expiry
    headers = resource_headers(tokens, method="POST", url=url, now=now, entropy=os.urandom,
                               dpop_key=dpop_signer, nonce=rs_nonce)       # per resource request

Errors are the :class:`OAuthError` tree of ``_errors.py``. Every token, secret, code and verifier is a
:class:`~brokerd.secret.Secret`.
"""

from brokerd.oauth._authorize import authorization_code_flow, parse_callback_query, parse_pasted_response
from brokerd.oauth._challenge import Challenge, bearer_challenge, parse_www_authenticate, resource_challenge
from brokerd.oauth._device import device_flow
from brokerd.oauth._discovery import Discovery, discover, discover_issuer
from brokerd.oauth._dpop import (
    DPOP_ALG,
    DpopMode,
    dpop_header,
    dpop_proof,
    htu,
    nonce_challenge,
    response_nonce,
    wants_dpop,
)
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
from brokerd.oauth._grants import (
    CLIENT_CREDENTIALS,
    ID_JAG_TOKEN_TYPE,
    ID_TOKEN_TYPE,
    JWT_BEARER,
    TOKEN_EXCHANGE,
    IdJag,
    client_credentials_flow,
    enterprise_flow,
    exchange_for_id_jag,
    jwt_bearer_flow,
    renew,
)
from brokerd.oauth._http import parse_retry_after
from brokerd.oauth._jose import (
    JwsSigner,
    access_token_hash,
    b64url,
    b64url_decode,
    compact_jws,
    jwk_thumbprint,
    unverified_claims,
)
from brokerd.oauth._pkce import Pkce, make_pkce, require_s256
from brokerd.oauth._registration import (
    AuthMethod,
    Registration,
    client_auth,
    client_metadata_document,
    register,
)
from brokerd.oauth._revocation import RevocationOutcome, revoke
from brokerd.oauth._scopes import MAX_AUTHORIZATIONS, select_scopes, step_up_scopes
from brokerd.oauth._sender import ASSERTION_LIFETIME, Sender, TokenReply, client_assertion
from brokerd.oauth._tokens import TokenSet, authorization_header, bearer_header, refresh, resource_headers
from brokerd.oauth._urls import (
    UrlPolicy,
    canonical_resource,
    canonical_url,
    is_loopback_host,
    loopback_redirect_uri,
)

__all__ = [
    "ASSERTION_LIFETIME",
    "CLIENT_CREDENTIALS",
    "DPOP_ALG",
    "ID_JAG_TOKEN_TYPE",
    "ID_TOKEN_TYPE",
    "JWT_BEARER",
    "MAX_AUTHORIZATIONS",
    "TOKEN_EXCHANGE",
    "AuthMethod",
    "AuthorizationDeniedError",
    "AwaitRedirect",
    "CallbackError",
    "Challenge",
    "Discovery",
    "DiscoveryError",
    "DpopMode",
    "Effect",
    "Entropy",
    "Fetch",
    "Flow",
    "GrantEndedError",
    "HttpRequest",
    "HttpResponse",
    "IdJag",
    "JwsSigner",
    "OAuthError",
    "PeerError",
    "Pkce",
    "PolicyError",
    "Registration",
    "RegistrationError",
    "RequestRejectedError",
    "RevocationOutcome",
    "Sender",
    "ShowDeviceCode",
    "Sleep",
    "TokenReply",
    "TokenSet",
    "TransientError",
    "TransportFailure",
    "UrlPolicy",
    "access_token_hash",
    "authorization_code_flow",
    "authorization_header",
    "b64url",
    "b64url_decode",
    "bearer_challenge",
    "bearer_header",
    "canonical_resource",
    "canonical_url",
    "client_assertion",
    "client_auth",
    "client_credentials_flow",
    "client_metadata_document",
    "compact_jws",
    "device_flow",
    "discover",
    "discover_issuer",
    "dpop_header",
    "dpop_proof",
    "enterprise_flow",
    "exchange_for_id_jag",
    "htu",
    "is_loopback_host",
    "jwk_thumbprint",
    "jwt_bearer_flow",
    "loopback_redirect_uri",
    "make_pkce",
    "nonce_challenge",
    "parse_callback_query",
    "parse_pasted_response",
    "parse_retry_after",
    "parse_www_authenticate",
    "refresh",
    "register",
    "renew",
    "require_s256",
    "resource_challenge",
    "resource_headers",
    "response_nonce",
    "revoke",
    "run_sync",
    "select_scopes",
    "step_up_scopes",
    "unverified_claims",
    "wants_dpop",
]
