"""Taking over NCP's grant for one server (``ncp-broker import-ncp``; the plan is brokerd/ncp_import.py).

The grant is bound to the authorization server discovery finds now, stored, and refreshed once to prove
it while NCP's file is still there.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from brokerd import ncp_import, oauth, renewal

if TYPE_CHECKING:
    from brokerd.grant._actor import OAuthActor

__all__ = ["import_grant"]

log = logging.getLogger("brokerd.grant")


async def import_grant(actor: OAuthActor, item: ncp_import.ImportItem, *, replace: bool) -> dict[str, Any]:
    """Import ``item`` into ``actor``'s grant. Never raises for the item's own problems: the answer says
    what happened (``outcome``: kept, failed or imported, with a ``detail``)."""
    grant = actor.grant
    await grant.load()
    answer: dict[str, Any] = {"server": actor.server.name, "file": str(item.path), "notes": list(item.notes)}
    if grant.tokens is not None and not replace:
        return answer | {"outcome": "kept", "detail": "the broker holds a grant already (--replace)"}
    try:
        discovery = await actor.discover()
        tokens, registration = item.bind(discovery)
    except (oauth.OAuthError, ncp_import.ImportBindError) as exc:
        return answer | {"outcome": "failed", "detail": str(exc)}
    await actor.settle()
    grant.registrations[discovery.issuer] = registration
    with trio.CancelScope(shield=True):
        await grant.save(tokens)
        grant.take(tokens)
    log.info("%s: imported NCP's grant from %s (issuer %s)", actor.label, item.path, discovery.issuer)
    if tokens.refresh_token is None:
        return answer | {"outcome": "imported", "detail": "no refresh token: a login follows its expiry"}
    await actor.renew_and_wait()
    if grant.tokens is None or grant.state.phase is renewal.Phase.BACKING_OFF:
        return answer | {"outcome": "imported", "detail": f"but the first refresh failed: {grant.last_error}"}
    return answer | {"outcome": "imported", "detail": f"refreshed at {discovery.issuer}"}
