"""The authorization-code login with PKCE: request, callback checks, code exchange (A1, A3-A8).

The callback is checked in this order, and nothing in it is acted on or shown before the checks pass:

1. ``state`` present and equal to this login's (A4). State is random per login and the flow accepts
   exactly one callback, so a replayed callback never matches a later login.
2. ``iss`` (RFC 9207, A5): required and identical to the issuer when the server advertises
   ``authorization_response_iss_parameter_supported``; when present anyway, still identical. Plain string
   comparison. On mismatch the callback's ``error`` parameters are not shown: they may come from an
   attacker's server (mix-up attack).
3. ``error`` (e.g. ``access_denied``): the login ends with that error, its description cleaned.
4. ``code``: exchanged at the token endpoint with the PKCE verifier, the redirect URI and ``resource``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from brokerd.oauth._discovery import Discovery
from brokerd.oauth._effects import Entropy, Flow, await_redirect
from brokerd.oauth._errors import (
    AuthorizationDeniedError,
    CallbackError,
    DiscoveryError,
    PolicyError,
    TransientError,
)
from brokerd.oauth._pkce import make_pkce, random_string, require_s256
from brokerd.oauth._registration import Registration
from brokerd.oauth._sender import Sender, token_request
from brokerd.oauth._text import error_code, untrusted
from brokerd.oauth._tokens import TokenSet, parse_token_response
from brokerd.oauth._urls import UrlPolicy, check_redirect_uri
from brokerd.secret import Secret

__all__ = ["authorization_code_flow", "parse_callback_query", "parse_pasted_response"]

_RETRY_HINT = "start the login again"
_MAX_PASTE = 8192
_CALLBACK_NAMES = frozenset({"code", "state", "iss", "error"})


def authorization_code_flow(
    discovery: Discovery,
    registration: Registration,
    *,
    policy: UrlPolicy,
    redirect_uri: str,
    scopes: Sequence[str] | None,
    entropy: Entropy,
    sender: Sender | None = None,
) -> Flow[TokenSet]:
    """Log in with the authorization-code grant and PKCE S256.

    Yields one :class:`AwaitRedirect` (answer: the callback's query parameters) and then one
    :class:`Fetch` for the code exchange (two when a DPoP nonce is demanded). ``scopes`` usually comes
    from :func:`select_scopes` or :func:`step_up_scopes`; None omits ``scope``. ``redirect_uri`` must be a
    loopback URI (A6). ``sender`` adds a ``private_key_jwt`` assertion and a DPoP proof to the code
    exchange (E1, E3), made at the time the driver gives for a ``Sleep(0)`` just before it.

    Raises:
        PolicyError: no S256 (A1), the registration is for another issuer (D7), the authorization URL or
            token endpoint is refused (A7, S1, S2), the redirect URI is not loopback (A6).
        DiscoveryError: the authorization server has no authorization endpoint.
        CallbackError: the callback was discarded (A4, A5) or has no code.
        AuthorizationDeniedError: the callback carries an ``error`` (e.g. ``access_denied``).
        TransientError: the callback says ``temporarily_unavailable``/``server_error``, or the token
            endpoint could not be reached or answered 408/429/5xx.
        GrantEndedError, RequestRejectedError, PeerError: the code exchange failed (see :func:`refresh`).
    """
    if registration.issuer != discovery.issuer:
        raise PolicyError(
            f"the client registration belongs to {registration.issuer}, not to {discovery.issuer};"
            " register with this authorization server first"
        )
    if discovery.authorization_endpoint is None:
        raise DiscoveryError(
            f"the authorization server {discovery.issuer} has no authorization endpoint: it does not offer"
            " logins with a browser",
            hint='use a grant it offers (auth.oauth21.grant "client_credentials" or "jwt_bearer")',
        )
    require_s256(discovery)
    check_redirect_uri(redirect_uri)
    pkce = make_pkce(entropy)
    state = random_string(entropy)
    params = [
        ("response_type", "code"),
        ("client_id", registration.client_id),
        ("redirect_uri", redirect_uri),
        ("code_challenge", pkce.challenge),
        ("code_challenge_method", pkce.method),
        ("state", state),
    ]
    if scopes:
        params.append(("scope", " ".join(scopes)))
    resource = discovery.resource_indicator
    if resource is not None:
        params.append(("resource", resource))
    url = policy.check(_with_query(discovery.authorization_endpoint, params), what="the authorization URL")
    callback = yield from await_redirect(url, state, redirect_uri)
    code = _check_callback(callback, state=state, discovery=discovery)
    form = [
        ("grant_type", "authorization_code"),
        ("code", code.reveal()),
        ("redirect_uri", redirect_uri),
        ("code_verifier", pkce.verifier.reveal()),
    ]
    if resource is not None:
        form.append(("resource", resource))
    reply = yield from token_request(discovery.token_endpoint, form, registration, policy, sender)
    return parse_token_response(
        reply,
        what="the code exchange",
        secrets=(code, pkce.verifier, registration.client_secret),
        registration=registration,
        token_endpoint=discovery.token_endpoint,
        resource=resource,
        revocation_endpoint=discovery.revocation_endpoint,
        requested_scopes=scopes,
    )


def _with_query(url: str, params: list[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    existing = parse_qsl(parts.query, keep_blank_values=True)
    ours = {name for name, _ in params}
    query = urlencode([*((k, v) for k, v in existing if k not in ours), *params])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _check_callback(params: Mapping[str, str], *, state: str, discovery: Discovery) -> Secret:
    got_state = params.get("state")
    if got_state is None:
        raise CallbackError("the authorization callback has no state; it was discarded", hint=_RETRY_HINT)
    if not hmac.compare_digest(got_state.encode(), state.encode()):
        raise CallbackError(
            "the authorization callback's state does not match this login (stale, replayed or forged);"
            " it was discarded",
            hint=_RETRY_HINT,
        )
    iss = params.get("iss")
    if iss is None and discovery.authorization_response_iss_parameter_supported:
        raise CallbackError(
            f"the authorization server {discovery.issuer} promises an iss parameter but the callback has"
            " none; it was discarded",
            hint="if you pasted only the code, paste the whole address from the browser instead",
        )
    if iss is not None and iss != discovery.issuer:
        raise CallbackError(
            f"the authorization callback comes from issuer {untrusted(iss, limit=100)!r}, not"
            f" {discovery.issuer!r} (possible mix-up attack); it was discarded",
            hint=_RETRY_HINT,
        )
    if "error" in params:
        code = error_code(params["error"]) or "invalid_error"
        description = untrusted(params.get("error_description"))
        detail = f"{code} ({description})" if description else code
        if code in ("temporarily_unavailable", "server_error"):
            raise TransientError(f"the authorization server could not complete the login: {detail}")
        raise AuthorizationDeniedError(
            f"the authorization server refused the login: {detail}", error=code, hint=_RETRY_HINT
        )
    code_value = params.get("code")
    if not code_value:
        raise CallbackError("the authorization callback has neither a code nor an error", hint=_RETRY_HINT)
    return Secret(code_value)


def parse_callback_query(query: str) -> Mapping[str, str]:
    """The parameters of a callback's query string (without the ``?``).

    Raises:
        CallbackError: a parameter appears twice (RFC 6749 §3.1 forbids it; it smells of injection).
    """
    pairs = parse_qsl(query, keep_blank_values=True)
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise CallbackError(
                f"the callback repeats the {untrusted(name, limit=40)!r} parameter; discarded"
            )
        params[name] = value
    return params


def parse_pasted_response(text: str, redirect_uri: str, state: str) -> Mapping[str, str]:
    """The callback parameters from what a user pasted in a headless login (A8).

    Accepts the whole redirect URL from the browser's address bar (it must be ``redirect_uri`` with a
    query), its query string alone, or the bare code. A bare code carries no ``state`` or ``iss``: the
    login's ``state`` is supplied, and a server that promises ``iss`` will make the flow ask for the whole
    URL instead. The result goes to the flow as the :class:`AwaitRedirect` answer, which checks it.

    Raises:
        CallbackError: empty or over-long text, a URL that is not the redirect URI, a repeated parameter.
    """
    text = text.strip()
    if not text or len(text) > _MAX_PASTE:
        raise CallbackError("nothing usable was pasted", hint="paste the whole address from the browser")
    if "://" in text:
        pasted, expected = urlsplit(text), urlsplit(redirect_uri)
        same = (
            pasted.scheme.lower() == expected.scheme.lower()
            and pasted.netloc.lower() == expected.netloc.lower()
            and pasted.path == expected.path
        )
        if not same:
            raise CallbackError(
                f"the pasted address is not the redirect address {redirect_uri}",
                hint="paste the address the browser ended on after the login",
            )
        return parse_callback_query(pasted.query)
    if text.startswith("?") or any(part.split("=", 1)[0] in _CALLBACK_NAMES for part in text.split("&")):
        return parse_callback_query(text.removeprefix("?"))
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise CallbackError("the pasted code contains spaces or control characters")
    return {"code": text, "state": state}
