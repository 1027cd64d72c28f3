"""One server's grant in memory: tokens, client registrations, renewal state, and their one writer.

:class:`Grant` is the only code that loads or saves the server's store record (DESIGN rule 2). Every
change of tokens goes through :meth:`Grant.take` or :meth:`Grant.drop`, which step the renewal machine
(``brokerd.renewal``) and move the proactive-renewal timer with it: the tokens, the machine's state and
the timer never disagree, and the failure state is reset in exactly one place.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from brokerd import keys, oauth, renewal
from brokerd.grant._context import OAuthContext
from brokerd.grant._dpop import load_stored_key
from brokerd.secret import Secret
from brokerd.store import RefreshSent, ServerRecord, Store, StoreError
from brokerd.wire import WireError

__all__ = ["Grant", "Unanswered", "token_digest"]

log = logging.getLogger("brokerd.grant")


def token_digest(tokens: oauth.TokenSet) -> str | None:
    """Which refresh token a refresh presents, without keeping it twice: SHA-256, first 16 hex digits."""
    if tokens.refresh_token is None:
        return None
    return hashlib.sha256(tokens.refresh_token.reveal().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Unanswered:
    """A refresh of the current refresh token that was sent and never answered: this daemon's (no answer
    in time, or the connection broke) or a previous daemon's (stopped or killed before the answer came).
    Should the server then end the grant, this is the likely reason, and ``needs_login`` says so."""

    sent_at: float
    by_previous_daemon: bool

    def explain(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.sent_at))
        if self.by_previous_daemon:
            return (
                f"the daemon was stopped during a refresh at {when}, after the authorization server had "
                "rotated the refresh token, so the new one never arrived"
            )
        return (
            f"a refresh at {when} got no answer; the authorization server had probably rotated the refresh "
            "token, so the retry looked like a replay"
        )


class Grant:
    """The tokens and client registrations of one server, and the renewal machine's state.

    ``key`` is the canonical server URL (DESIGN rule 11): all aliases of a server share one Grant.
    ``label()`` names it in messages; ``on_due()`` is what the timer calls when a renewal is due.
    """

    def __init__(
        self,
        key: str,
        store: Store,
        ctx: OAuthContext,
        *,
        label: Callable[[], str],
        on_due: Callable[[], Awaitable[None]],
        on_renewal_end: Callable[[], None] = lambda: None,
    ) -> None:
        self.key = key
        self._store = store
        self._ctx = ctx
        self._label = label
        self._on_due = on_due
        self._on_renewal_end = on_renewal_end
        self.loaded = False
        self.tokens: oauth.TokenSet | None = None
        #: The key ``tokens`` are DPoP-bound to (E3); None for Bearer tokens. Changes only with them.
        self.dpop_key: keys.PrivateKey | None = None
        self.registrations: dict[str, oauth.Registration] = {}
        self.state = renewal.State()
        self.unsaved = False
        self.unanswered: Unanswered | None = None
        self.last_refresh: float | None = None
        self.last_error: str | None = None
        self.last_error_class: str | None = None  # transient, refused, grant_ended, login_failed, …
        self.last_hint: str | None = None  # what fixes last_error, when it is a config or credential problem
        self._sent: RefreshSent | None = None  # the durable "a refresh was sent" mark, as last saved
        #: An access key stored for the same URL (a bearer entry of it), as loaded: written back, not erased.
        self._access_key: Secret | None = None
        self._loading = trio.Lock()
        # One save at a time, each written from the state at its turn: two saves overlapping in the
        # store's worker thread could otherwise land in either order, an older token set last (rule 3).
        self._saving = trio.Lock()

    @property
    def name(self) -> str:
        return self._label()

    # ---- changes, through the machine --------------------------------------------------------------

    def apply(self, event: renewal.Event) -> None:
        """Step the renewal machine and move the timer to its next wake-up. When the step leaves
        ``IN_FLIGHT``, the renewal has ended: ``on_renewal_end`` tells the actor at that very moment, so
        that whoever the machine now lets renew finds no renewal still registered."""
        was = self.state.phase
        self.state = renewal.step(self.state, event)
        self._ctx.scheduler.set(self.key, renewal.wakeup(self.state), self._on_due)
        if was is renewal.Phase.IN_FLIGHT and self.state.phase is not renewal.Phase.IN_FLIGHT:
            self._on_renewal_end()

    def take(
        self, tokens: oauth.TokenSet, *, dpop_key: keys.PrivateKey | None = None, renewed: bool = False
    ) -> None:
        """``tokens`` are the grant from now on (saved already, or held in memory when saving failed), with
        ``dpop_key``, the key they are bound to (None for Bearer tokens): ``renewed`` by the renewal in
        flight, else from a login, an import or the store."""
        self.tokens = tokens
        self.dpop_key = dpop_key if tokens.dpop_jkt is not None else None
        self.last_refresh = self._ctx.clock()
        self.unanswered = None
        if not self.unsaved:
            self.note_error(None, None)
        held = renewal.Held(tokens.obtained_at, tokens.expires_at, renewable=tokens.refresh_token is not None)
        jitter = self._ctx.jitter()
        self.apply(renewal.Renewed(held, jitter) if renewed else renewal.LoggedIn(held, jitter))

    def drop(self, event: renewal.Ended | renewal.Forgotten) -> None:
        """The tokens are gone (the grant ended, or was forgotten on purpose); registrations stay."""
        self.tokens = None
        self.dpop_key = None
        self.unanswered = None
        self.apply(event)

    def note_error(self, kind: str | None, text: str | None, hint: str | None = None) -> None:
        """What ``status`` shows as ``last_error``, its class and what fixes it (None, None: the last
        attempt worked)."""
        self.last_error_class, self.last_error, self.last_hint = kind, text, hint

    # ---- the store ---------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the stored record once; a later call does nothing.

        Raises:
            WireError: ``internal``, the record cannot be read (the message has the store's reason).
        """
        async with self._loading:  # one load: a second one could replace tokens a renewal is using
            if self.loaded:
                return
            try:
                record = await self._store.load(self.key)
            except StoreError as exc:
                raise WireError("internal", f"{self.name}: cannot read stored credentials: {exc}") from None
            self.loaded = True
            self._adopt(record)

    def _adopt(self, record: ServerRecord | None) -> None:
        if record is None:
            return
        self._access_key = record.access_key
        self.registrations = dict(record.registrations)
        if record.tokens is None:
            return
        self.take(record.tokens, dpop_key=load_stored_key(record.dpop_key, record.tokens, label=self.name))
        self.last_refresh = None
        sent = record.refresh_sent
        if sent is not None and sent.token_digest == token_digest(record.tokens):
            self._sent = sent
            self.unanswered = Unanswered(sent.sent_at, by_previous_daemon=True)
            log.warning("%s: %s", self.name, self.unanswered.explain())

    def record(
        self, tokens: oauth.TokenSet | None = None, dpop_key: keys.PrivateKey | None = None
    ) -> ServerRecord:
        """The grant as the store keeps it, with ``tokens`` (and the ``dpop_key`` they are bound to) in place
        of the held ones if given."""
        if tokens is None:
            tokens, dpop_key = self.tokens, self.dpop_key
        if tokens is None or tokens.dpop_jkt is None:
            dpop_key = None
        sent = self._sent
        if sent is not None and (tokens is None or sent.token_digest != token_digest(tokens)):
            sent = None  # a mark speaks of the refresh token it names, and of no other
        return ServerRecord(
            server_url=self.key,
            access_key=self._access_key,
            tokens=tokens,
            registrations=dict(self.registrations),
            refresh_sent=sent,
            dpop_key=dpop_key.to_secret() if dpop_key is not None else None,
        )

    async def save(
        self, tokens: oauth.TokenSet | None = None, dpop_key: keys.PrivateKey | None = None
    ) -> None:
        """Write the whole grant, with ``tokens`` (and the ``dpop_key`` they are bound to) in place of the
        held ones if given. On failure, keep it in memory, report ``degraded`` and retry on the next request
        (DESIGN rule 3). Never raises."""
        try:
            async with self._saving:
                await self._store.save(self.record(tokens, dpop_key))
        except StoreError as exc:
            self.unsaved = True
            self.note_error("store_write", f"could not save credentials: {exc}")
            log.error("%s: %s; keeping them in memory and retrying on the next request", self.name, exc)
        else:
            self.unsaved = False

    async def mark_sent(self, tokens: oauth.TokenSet) -> None:
        """Before a refresh leaves: record durably which refresh token it presents, and when. Should the
        daemon die before the answer comes, the next one can say what happened. A failed write does not
        stop the refresh: the mark explains a loss, it cannot prevent one."""
        digest = token_digest(tokens)
        assert digest is not None
        self._sent = RefreshSent(token_digest=digest, sent_at=self._ctx.clock())
        try:
            async with self._saving:
                await self._store.save(self.record())
        except StoreError as exc:
            log.warning("%s: could not record the refresh before sending it: %s", self.name, exc)

    def sent_ended(self, *, answered: bool) -> None:
        """The refresh marked by :meth:`mark_sent` ended. Answered: the mark goes with the next save.
        Not answered (no HTTP answer at all): the server may have rotated the token all the same, so the
        mark stays, and so does the explanation for a refusal that may follow."""
        sent, self._sent = self._sent, None
        if sent is not None and not answered:
            self._sent = sent
            self.unanswered = Unanswered(sent.sent_at, by_previous_daemon=False)
