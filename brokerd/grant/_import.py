"""Taking over NCP's grant for one server (``ncp-broker import-ncp``; the plan is brokerd/ncp_import.py).

The grant is bound to the authorization server discovery finds now, stored, and refreshed once to prove
it while NCP's file is still there.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import trio

from brokerd import ncp_import, oauth, renewal
from brokerd.wire import Imported

if TYPE_CHECKING:
    from brokerd.grant._actor import OAuthActor

__all__ = ["import_grant"]

log = logging.getLogger("brokerd.grant")


async def import_grant(actor: OAuthActor, item: ncp_import.ImportItem, *, replace: bool) -> Imported:
    """Import ``item`` into ``actor``'s grant. Never raises for the item's own problems: the answer says
    what happened (``outcome``: kept, failed or imported, with a ``detail``)."""
    grant = actor.grant
    await grant.load()

    def answer(outcome: Literal["imported", "kept", "failed"], detail: str) -> Imported:
        return Imported(
            server=actor.server.name,
            file=str(item.path),
            notes=list(item.notes),
            outcome=outcome,
            detail=detail,
        )

    if grant.tokens is not None and not replace:
        return answer("kept", "the broker holds a grant already (--replace)")
    try:
        discovery = await actor.discover()
        tokens, registration = item.bind(discovery)
    except (oauth.OAuthError, ncp_import.ImportBindError) as exc:
        return answer("failed", str(exc))
    await actor.settle()
    grant.registrations[discovery.issuer] = registration
    with trio.CancelScope(shield=True):
        await grant.save(tokens)
        grant.take(tokens)
    log.info("%s: imported NCP's grant from %s (issuer %s)", actor.label, item.path, discovery.issuer)
    if tokens.refresh_token is None:
        return answer("imported", "no refresh token: a login follows its expiry")
    await actor.renew_and_wait()
    if grant.tokens is None or grant.state.phase is renewal.Phase.BACKING_OFF:
        return answer("imported", f"but the first refresh failed: {grant.last_error}")
    return answer("imported", f"refreshed at {discovery.issuer}")
