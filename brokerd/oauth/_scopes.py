"""Which scopes to ask for (A2) and step-up after ``insufficient_scope`` (A9)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from brokerd.oauth._challenge import bearer_challenge
from brokerd.oauth._discovery import Discovery
from brokerd.oauth._effects import HttpResponse
from brokerd.oauth._http import error_fields

__all__ = ["MAX_AUTHORIZATIONS", "select_scopes", "step_up_scopes"]

MAX_AUTHORIZATIONS = 3
"""Authorization requests per server and requested scope set, the first login included, before a 403
``insufficient_scope`` is final (A9). The conformance suite's ``auth/scope-retry-limit`` counts the first
login too, so "retry at most 3 times" is read as three authorization requests in all."""

_OFFLINE = "offline_access"


def select_scopes(discovery: Discovery, configured: Sequence[str] | None = None) -> tuple[str, ...] | None:
    """The scopes of an authorization request (A2); None means: omit ``scope``.

    Configured scopes win; else the 401's ``scope``; else all of the protected resource's
    ``scopes_supported``; else none. ``offline_access`` is added to a non-empty selection only when the
    authorization server lists it in its ``scopes_supported`` (a refresh token is what the broker is for).
    """
    if configured is not None:
        chosen: Sequence[str] = configured
    elif discovery.challenge_scope:
        chosen = discovery.challenge_scope
    elif discovery.resource_scopes_supported:
        chosen = discovery.resource_scopes_supported
    else:
        return None
    scopes = _unique(chosen)
    if not scopes:
        return None
    if _OFFLINE not in scopes and _OFFLINE in (discovery.scopes_supported or ()):
        scopes += (_OFFLINE,)
    return scopes


def step_up_scopes(held: Iterable[str], response: HttpResponse) -> tuple[str, ...] | None:
    """The scopes to re-authorize with after ``response`` (A9), or None when it is not a step-up.

    A step-up is a 403 whose ``Bearer`` challenge has ``error="insufficient_scope"`` (or, from servers
    that put it in the body instead, a challenge without ``error`` and a JSON body with that error) and a
    ``scope``; the result is the union of ``held`` and the challenged scopes. Any other 403 is to be
    surfaced, not retried. The caller counts attempts (at most :data:`MAX_AUTHORIZATIONS`).
    """
    if response.status != 403:
        return None
    challenge = bearer_challenge(response.header_values("www-authenticate"))
    if challenge is None or not challenge.scope:
        return None
    error = challenge.error or error_fields(response.body)[0]
    if error != "insufficient_scope":
        return None
    return _unique((*held, *challenge.scope))


def _unique(scopes: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for s in scopes if s))
