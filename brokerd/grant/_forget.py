"""Forgetting a grant: logout revokes it at the authorization server first (T6); invalidate does not.

Both wait for a renewal in flight, so that what they forget (and, for logout, revoke) is what that renewal
produced, never what it replaced. Registrations survive a logout (the next login reuses the client).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import trio

from brokerd import oauth, renewal
from brokerd.grant._sources import CredentialError
from brokerd.wire import InvalidateResult, LogoutResult, Revocation

if TYPE_CHECKING:
    from brokerd.grant._actor import OAuthActor

__all__ = ["invalidate", "logout"]

log = logging.getLogger("brokerd.grant")


async def logout(actor: OAuthActor) -> LogoutResult:
    """Revoke the grant at the authorization server (RFC 7009, refresh token first), then forget the tokens
    whatever the answer (T6). The client registration is kept for the next login."""
    grant = actor.grant
    await grant.load()
    revoked: list[Revocation] = []
    tokens = None
    for _ in range(3):  # a renewal that lands while we revoke rotates the token: revoke the new one too
        await actor.settle()
        if grant.tokens is None or grant.tokens is tokens:
            break
        tokens = grant.tokens
        registration = grant.registrations.get(tokens.issuer)
        if registration is None:
            break
        try:
            # A DPoP-bound grant revokes with a proof of its key; a private_key_jwt client signs.
            sender = await actor.presenter.sender(grant.dpop_key)
            outcomes = await actor.drive(
                oauth.revoke(tokens, registration, policy=actor.policy, sender=sender)
            )
        except (oauth.OAuthError, CredentialError) as exc:
            revoked.append(Revocation(token="all", outcome="refused", detail=exc.message))  # noqa: S106
        else:
            revoked += [
                Revocation(token=o.token_type_hint, outcome=o.outcome, detail=o.detail) for o in outcomes
            ]
    await actor.settle()
    had_grant = grant.tokens is not None or tokens is not None
    grant.drop(renewal.Forgotten())
    grant.note_error(None, None)
    with trio.CancelScope(shield=True):
        await grant.save()
    log.info("%s: logged out (%s)", actor.label, ", ".join(r.outcome for r in revoked) or "no grant")
    return LogoutResult(had_grant=had_grant, revocation=revoked, saved=not grant.unsaved)


async def invalidate(actor: OAuthActor, what: Literal["tokens", "client", "all"]) -> InvalidateResult:
    """Forget tokens, client registrations or both, locally only: nothing is revoked (compare
    :func:`logout`). Discovery is not cached beyond the grant, so ``all`` is ``tokens`` + ``client``."""
    grant = actor.grant
    await grant.load()
    await actor.settle()
    forgot: list[str] = []
    if what in ("tokens", "all") and grant.tokens is not None:
        grant.drop(renewal.Forgotten())
        forgot.append("tokens")
    if what in ("client", "all") and grant.registrations:
        grant.registrations = {}
        forgot.append("client")
    grant.note_error(None, None)
    with trio.CancelScope(shield=True):
        await grant.save()
    log.info("%s: invalidated %s (%s)", actor.label, what, ", ".join(forgot) or "nothing held")
    return InvalidateResult(forgot=forgot, saved=not grant.unsaved)
