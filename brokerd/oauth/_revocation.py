"""Revocation at logout (RFC 7009, T6).

The refresh token is revoked first (revoking it usually ends the whole grant), then the access token;
each request carries ``token``, ``token_type_hint`` and the client's authentication. HTTP 200 means done,
even for a token the server already considered invalid. The flow never raises on a server's answer: it
reports an outcome per token, and the caller deletes its local copies whatever the outcomes are.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from brokerd.oauth._effects import Flow, HttpResponse, fetch
from brokerd.oauth._errors import PolicyError
from brokerd.oauth._http import describe, error_fields, is_transient, post_form, transient_error
from brokerd.oauth._registration import Registration, client_auth
from brokerd.oauth._sender import Sender, assertion_for, current_time, signs
from brokerd.oauth._tokens import TokenSet, check_owner
from brokerd.oauth._urls import UrlPolicy
from brokerd.secret import Secret

__all__ = ["RevocationOutcome", "revoke"]

TokenHint = Literal["refresh_token", "access_token"]


class RevocationOutcome(msgspec.Struct, frozen=True):
    """What happened to one token: ``revoked`` (HTTP 200), ``unsupported`` (no revocation endpoint, or
    ``unsupported_token_type``), ``rejected`` (another answer), ``unreachable`` (transport failure, 408,
    429, 5xx) or ``refused`` (the endpoint failed the URL policy). ``detail`` is safe to show."""

    token_type_hint: TokenHint
    outcome: Literal["revoked", "unsupported", "rejected", "unreachable", "refused"]
    detail: str = ""


def revoke(
    tokens: TokenSet, registration: Registration, *, policy: UrlPolicy, sender: Sender | None = None
) -> Flow[tuple[RevocationOutcome, ...]]:
    """Revoke the refresh token, then the access token, at ``tokens.revocation_endpoint`` (T6).

    Yields one :class:`Fetch` per token (none without an endpoint). Returns one outcome per token.
    ``sender`` carries the client key of a ``private_key_jwt`` client: each request gets its own assertion.

    Raises:
        PolicyError: ``registration`` is not the client the tokens were issued to (D7, T2).
    """
    check_owner(tokens, registration)
    pending: list[tuple[TokenHint, Secret]] = []
    if tokens.refresh_token is not None:
        pending.append(("refresh_token", tokens.refresh_token))
    pending.append(("access_token", tokens.access_token))
    endpoint = tokens.revocation_endpoint
    if endpoint is None:
        detail = "the authorization server has no revocation endpoint"
        return tuple(RevocationOutcome(hint, "unsupported", detail) for hint, _ in pending)
    try:
        policy.check(endpoint, what="the revocation endpoint")
    except PolicyError as exc:
        return tuple(RevocationOutcome(hint, "refused", exc.message) for hint, _ in pending)
    secrets = (tokens.refresh_token, tokens.access_token, registration.client_secret)
    outcomes = []
    for hint, token in pending:
        now = (yield from current_time()) if signs(registration, sender) else 0.0
        try:
            headers, auth_form = client_auth(registration, assertion=assertion_for(registration, sender, now))
        except PolicyError as exc:
            outcomes.append(RevocationOutcome(hint, "refused", exc.message))
            continue
        form = [("token", token.reveal()), ("token_type_hint", hint), *auth_form]
        result = yield from fetch(post_form(endpoint, form, headers))
        if is_transient(result):
            error = transient_error("the revocation endpoint", result)
            outcomes.append(RevocationOutcome(hint, "unreachable", error.message))
            continue
        assert isinstance(result, HttpResponse)
        if result.status == 200:
            outcomes.append(RevocationOutcome(hint, "revoked"))
            continue
        code, description = error_fields(result.body, secrets)
        detail = f"HTTP {result.status}, {describe(code, description)}"
        kind: Literal["unsupported", "rejected"] = (
            "unsupported" if code == "unsupported_token_type" else "rejected"
        )
        outcomes.append(RevocationOutcome(hint, kind, detail))
    return tuple(outcomes)
