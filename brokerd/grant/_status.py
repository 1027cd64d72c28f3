"""What ``status`` says about one OAuth grant: its state in a word, a sentence, the times, the last error
with its class, and the command that fixes it. Never a token."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from brokerd import renewal
from brokerd.wire import GrantState

if TYPE_CHECKING:
    from brokerd.grant._actor import OAuthActor

__all__ = ["status"]


def status(actor: OAuthActor) -> GrantState:
    grant = actor.grant
    state = grant.state
    now = actor.ctx.clock()
    tokens = grant.tokens
    login = actor.logins.pending
    hint = None
    if login is not None:
        word, detail = "login_pending", f"login pending since {time.ctime(login.started_at)}"
    elif state.phase is renewal.Phase.IN_FLIGHT:
        word, detail = "refreshing", "refreshing now"
    elif tokens is None and actor.presenter.able() and not state.refused and grant.loaded:
        # (able(), not the machine's flag: an enterprise IdP login may have come since the last request)
        word, detail = "ready", "no token yet: the daemon gets one on first use, without a browser"
    elif tokens is None:
        word, detail = "needs_login", "not logged in" if grant.loaded else "not loaded yet"
        if state.refused and grant.last_error:
            detail = f"{grant.last_error}; not sent again until it changes"
        elif (idp := actor.presenter.idp) is not None and grant.loaded:
            detail = f"not logged in at {idp.label}"
        hint = grant.last_hint if state.refused and grant.last_hint else actor.login_hint
    elif grant.unsaved:
        word, detail = "degraded", "credentials are held in memory only; saving is retried"
    elif tokens.expires_at is not None and tokens.expires_at <= now:
        word, detail = "expired", "the access token has expired; the next request refreshes it"
    else:
        word = "valid"
        detail = f"expires {time.ctime(tokens.expires_at)}" if tokens.expires_at else "no expiry given"
    backing_off = state.phase is renewal.Phase.BACKING_OFF and state.retry_at is not None
    if backing_off and word in ("valid", "expired"):
        still = tokens is not None and tokens.expires_at is not None and tokens.expires_at > now
        word = "as_unreachable"
        detail = (
            f"{detail if still else 'expired'}; refresh failing, retrying at {time.ctime(state.retry_at)}"
        )
    if actor.closed:
        detail += " (stopping: no new refreshes)"
    return GrantState(
        state=word,
        detail=detail,
        expires_at=tokens.expires_at if tokens else None,
        last_refresh=grant.last_refresh,
        next_refresh=renewal.wakeup(state),
        retry_at=state.retry_at if backing_off else None,
        last_error=grant.last_error,
        last_error_class=grant.last_error_class,
        login_url=login.url if login is not None else None,
        unanswered_refresh=grant.unanswered.explain() if grant.unanswered and tokens else None,
        hint=hint,
        grant_type=actor.settings.grant,
        dpop_bound=tokens is not None and tokens.dpop_jkt is not None,
    )
