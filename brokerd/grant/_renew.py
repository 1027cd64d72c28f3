"""Running one renewal of a grant: what the actor's shielded renewal task does (``_actor._run_renewal``).

:func:`renew` reads what the exchange presents (``_present``), marks a refresh token as spent, sends it,
and persists the answer before anyone can take its access token (DESIGN rule 3). A renewal that ends
without tokens is classified here (rule 4): only ``invalid_grant`` and friends end a held grant; anything
else keeps it and backs off. An unattended grant with nothing held ends on any refusal of what it presents,
so that it is not presented again. The renewal machine decides everything else.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from brokerd import oauth, renewal
from brokerd.grant._present import Plan
from brokerd.grant._sources import CredentialError

if TYPE_CHECKING:
    from brokerd.grant._actor import OAuthActor

__all__ = ["renew"]

log = logging.getLogger("brokerd.grant")


async def renew(actor: OAuthActor, seen: oauth.TokenSet | None) -> None:
    """One renewal (or, with ``seen`` None, the first token of a grant that needs no person): read what
    it presents, send it, and persist the answer before anyone can take it (rule 3)."""
    grant = actor.grant
    try:
        plan = await actor.presenter.plan(seen)  # local inputs, discovery: cancellable, nothing sent yet
    except (CredentialError, oauth.OAuthError) as exc:
        with trio.CancelScope(shield=True):
            await _failed(actor, seen, None, exc, sent=False)  # nothing was sent
        return
    if actor.closed:
        grant.apply(renewal.Settled())  # stopping meanwhile: no new exchange (rule 10)
        return
    # DESIGN rule 10: from the mark to the persisted answer nothing cancels the exchange — not the caller,
    # not a stop, not a reload. The HTTP driver's own timeouts bound it.
    with trio.CancelScope(shield=True):
        await _exchange(actor, seen, plan)


async def _exchange(actor: OAuthActor, seen: oauth.TokenSet | None, plan: Plan) -> None:
    grant = actor.grant
    if plan.spends_refresh_token:
        assert seen is not None
        await grant.mark_sent(seen)
    try:
        new = await actor.drive(plan.flow)
    except (CredentialError, oauth.OAuthError) as exc:
        await _failed(actor, seen, plan, exc, sent=True)
        return
    if plan.spends_refresh_token:
        grant.sent_ended(answered=True)
    if grant.tokens is not seen:
        # A login replaced the grant while this renewal was out: its answer belongs to a grant nobody
        # holds any more.
        log.info("%s: a refresh finished for a grant a login has replaced; dropping it", actor.label)
        grant.apply(renewal.Settled())
        await grant.save()
        return
    grant.registrations[plan.registration.issuer] = plan.registration
    await grant.save(new, plan.dpop_key)  # on disk before any caller can take its access token (rule 3)
    grant.take(new, dpop_key=plan.dpop_key, renewed=True)
    what = "refreshed" if seen is not None and seen.refresh_token else "renewed" if seen else "got a token"
    bound = " (DPoP-bound)" if new.dpop_jkt else ""
    log.info("%s: %s%s; the new token expires at %s", actor.label, what, bound, new.expires_at)


async def _failed(
    actor: OAuthActor, seen: oauth.TokenSet | None, plan: Plan | None, exc: Exception, *, sent: bool
) -> None:
    """A renewal that ended without tokens. Only ``invalid_grant`` and friends end a held grant; an
    unattended grant with nothing held ends on any refusal of what it presents, so that it is not
    presented again (the conformance suite counts such a retry as a fault, and so do IdPs' alarms)."""
    grant = actor.grant
    spent = plan is not None and plan.spends_refresh_token
    transient = isinstance(exc, oauth.TransientError)
    answered = not isinstance(exc, oauth.TransientError) or exc.status is not None
    if spent:
        grant.sent_ended(answered=answered)
    if grant.tokens is not seen:
        grant.apply(renewal.Settled())  # a login replaced the grant meanwhile
        await grant.save()
        return
    message = exc.message if isinstance(exc, CredentialError | oauth.OAuthError) else str(exc)
    hint = exc.hint if isinstance(exc, CredentialError | oauth.OAuthError) else None
    ends = isinstance(exc, oauth.GrantEndedError) or (
        seen is None and not transient and not isinstance(exc, oauth.PeerError)
    )
    if ends:
        if grant.state.unattended:
            await actor.presenter.note_refused(plan if sent else None)
        _grant_ended(actor, seen, exc, message, hint)
        await grant.save()
        return
    retry_after = exc.retry_after if isinstance(exc, oauth.TransientError) else None
    grant.apply(renewal.Failed(actor.ctx.clock(), actor.ctx.jitter(), retry_after))
    if answered:
        await grant.save()  # the answer came: the durable "sent" mark goes
    kind = "credentials" if isinstance(exc, CredentialError) else "transient" if transient else "refused"
    shown = message if isinstance(exc, CredentialError) else f"{type(exc).__name__}: {message}"
    grant.note_error(kind, shown, hint)
    retry_at = grant.state.retry_at or 0.0
    log.warning(
        "%s: %s failed (attempt %d), keeping the grant, retrying in %.0f s: %s",
        actor.label,
        "refresh" if seen is not None else "getting a token",
        grant.state.failures,
        max(0.0, retry_at - actor.ctx.clock()),
        message,
    )


def _grant_ended(
    actor: OAuthActor, seen: oauth.TokenSet | None, exc: Exception, why: str, hint: str | None
) -> None:
    grant = actor.grant
    unanswered = grant.unanswered
    if unanswered is not None:
        why = f"{why}; {unanswered.explain()}"
    if isinstance(exc, oauth.GrantEndedError) and exc.client_rejected and seen is not None:
        grant.registrations.pop(seen.issuer, None)
    grant.drop(renewal.Ended())
    if isinstance(exc, CredentialError):
        kind, text = "credentials", why
    elif isinstance(exc, oauth.GrantEndedError):
        kind, text = "grant_ended", f"the authorization server ended the grant ({why})"
    else:
        kind, text = "refused", why
    if grant.state.unattended and kind != "credentials" and not hint:
        hint = f"check this server's client and credentials in the config, then: {actor.login_hint}"
    grant.note_error(kind, text, hint if grant.state.unattended else None)
    log.warning(
        "%s: %s; %s",
        actor.label,
        text,
        "not sent again until it changes" if grant.state.unattended else "a login is needed",
    )
