"""The OAuth actor: the one owner of a server's grant (DESIGN.md rules 2-5).

It composes the pure core (``brokerd.oauth``) with the I/O edges (``oauth_driver``, ``callback``) and the
store. What it guarantees:

* **Single flight.** At most one refresh and one login per server run at a time; every concurrent caller
  awaits the same outcome. Both run as tasks of the daemon's nursery, not of the caller, so a client that
  hangs up mid-refresh cannot cancel a refresh whose answer (a rotated refresh token) would then be lost.
* **Persist before you hand out.** A new token set is written to the store before anyone receives its
  access token. If the write fails the tokens stay in memory, ``status`` says ``degraded``, and the next
  request retries the write.
* **Transient is not definitive.** Only ``invalid_grant`` and friends (``GrantEndedError``) end the grant;
  a network failure keeps it and serves the current access token while it is still valid.

Login: ``login()`` starts the flow (discovery from the server's 401, registration keyed by issuer,
authorization code + PKCE through the loopback listener) and returns once the authorization URL is known;
``login_wait()`` awaits the outcome; ``login_complete()`` accepts a pasted code or redirect URL instead of
the browser's callback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
import trio

from brokerd import ncp_import, oauth
from brokerd.actors import TokenAnswer
from brokerd.browser import open_browser as open_browser_
from brokerd.callback import LOGIN_TIMEOUT, CallbackHub, CallbackListener
from brokerd.config import Server
from brokerd.oauth_driver import drive, send
from brokerd.schedule import EXPIRY_SKEW, Schedule, backoff_delay, is_usable, refresh_at
from brokerd.secret import Secret
from brokerd.store import RegistrationRecord, ServerRecord, Store, StoreError, TokenRecord
from brokerd.wire import WireError

__all__ = ["OAuthActor", "OAuthContext", "Scheduler"]

log = logging.getLogger("brokerd.grant")

_T = TypeVar("_T")

REFRESH_JOIN_WAIT = 2.0
"""How long a request waits for a refresh before it takes the still-valid token (well under the thin
client's 5 s timeout, and under the 10-15 s an unresponsive authorization server can take to time out)."""

ON_DEMAND_RETRY = 10.0
"""With an expired token, how often requests may retry a failed refresh ahead of the backoff timer."""


class Scheduler:
    """Proactive refresh: one task sleeps until the earliest deadline of any actor (no polling).

    Deadlines are wall-clock, like token expiry; the sleep converts them with the actors' clock.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._schedule = Schedule()
        self._actors: dict[str, OAuthActor] = {}
        self._wake = trio.Event()

    def set(self, actor: OAuthActor, deadline: float | None) -> None:
        name = actor.server.name
        self._actors[name] = actor
        self._schedule.set(name, deadline)
        self._wake.set()

    def next_deadline(self, actor: OAuthActor) -> float | None:
        return self._schedule.get(actor.server.name) if self._actors.get(actor.server.name) is actor else None

    async def run(self, nursery: trio.Nursery) -> None:
        while True:
            self._wake = trio.Event()
            for name in self._schedule.pop_due(self._clock()):
                actor = self._actors.pop(name, None)
                if actor is not None:
                    nursery.start_soon(actor.refresh_due)
            deadline = self._schedule.next_deadline()
            with trio.move_on_after(math.inf if deadline is None else max(0.0, deadline - self._clock())):
                await self._wake.wait()


@dataclass
class OAuthContext:
    """What every OAuth actor shares: one HTTP client, the callback listeners, the daemon's nursery."""

    http: httpx.AsyncClient
    hub: CallbackHub
    nursery: trio.Nursery
    clock: Callable[[], float] = time.time
    entropy: Callable[[int], bytes] = os.urandom
    jitter: Callable[[], float] = random.random
    scheduler: Scheduler = field(init=False)

    def __post_init__(self) -> None:
        self.scheduler = Scheduler(self.clock)


@dataclass
class _Outcome:
    done: trio.Event = field(default_factory=trio.Event)
    error: WireError | None = None


@dataclass
class _Login(_Outcome):
    mode: Literal["browser", "paste", "device"] = "browser"
    started_at: float = 0.0
    url: str | None = None
    user_code: str | None = None
    url_known: trio.Event = field(default_factory=trio.Event)
    pasted: trio.MemorySendChannel[str] | None = None
    scopes: tuple[str, ...] | None = None  # a step-up's scopes; None: choose them by discovery (A2)
    opened: bool = False  # a browser was opened on the URL (by the daemon, or by the CLI that asked)


# ---- persistence: the core's records <-> the store's ----------------------------------------------


def _token_record(t: oauth.TokenSet) -> TokenRecord:
    return TokenRecord(
        access_token=t.access_token,
        refresh_token=t.refresh_token,
        token_type=t.token_type,
        expires_at=t.expires_at,
        issued_lifetime=t.lifetime,
        scopes=list(t.scopes),
        token_endpoint=t.token_endpoint,
        issuer=t.issuer,
        resource=t.resource,
        obtained_at=t.obtained_at,
        client_id=t.client_id,
        revocation_endpoint=t.revocation_endpoint,
    )


def _token_set(r: TokenRecord) -> oauth.TokenSet | None:
    if r.access_token is None or r.issuer is None or r.client_id is None or r.token_endpoint is None:
        return None
    return oauth.TokenSet(
        access_token=r.access_token,
        issuer=r.issuer,
        client_id=r.client_id,
        token_endpoint=r.token_endpoint,
        token_type=r.token_type,
        refresh_token=r.refresh_token,
        expires_at=r.expires_at,
        lifetime=r.issued_lifetime,
        obtained_at=r.obtained_at or 0.0,
        scopes=tuple(r.scopes),
        resource=r.resource,
        revocation_endpoint=r.revocation_endpoint,
    )


def _registration_record(g: oauth.Registration) -> RegistrationRecord:
    return RegistrationRecord(
        client_id=g.client_id,
        client_secret=g.client_secret,
        token_endpoint_auth_method=g.token_endpoint_auth_method,
        redirect_uris=list(g.redirect_uris),
        registered_at=g.registered_at,
        registration_client_uri=g.registration_client_uri,
        registration_access_token=g.registration_access_token,
        client_secret_expires_at=g.client_secret_expires_at,
        source=g.source,
        grant_types=list(g.grant_types),
        scope=g.scope,
    )


def _registration(issuer: str, r: RegistrationRecord) -> oauth.Registration | None:
    source = r.source if r.source in ("preregistered", "metadata_document", "dynamic") else "dynamic"
    method = r.token_endpoint_auth_method
    if method not in ("none", "client_secret_basic", "client_secret_post"):
        return None
    return oauth.Registration(
        issuer=issuer,
        client_id=r.client_id,
        client_secret=r.client_secret,
        token_endpoint_auth_method=method,  # type: ignore[arg-type]
        source=source,  # type: ignore[arg-type]
        redirect_uris=tuple(r.redirect_uris),
        grant_types=tuple(r.grant_types),
        scope=r.scope,
        registered_at=r.registered_at or 0.0,
        client_secret_expires_at=r.client_secret_expires_at,
        registration_access_token=r.registration_access_token,
        registration_client_uri=r.registration_client_uri,
    )


def _must_register(
    registration: oauth.Registration, scopes: tuple[str, ...] | None, redirect_uri: str
) -> bool:
    """Whether a login must register again: a configured client (its record is rebuilt from the config
    every time); a dynamic registration whose ``scope`` (what the client may ask for, RFC 7591 §2) lacks
    some of ``scopes``, which the server would refuse (A9); or one with no redirect URI like this login's
    (an imported NCP client is registered for ``localhost``; the port of a loopback URI may vary, RFC 8252
    §7.3)."""
    if registration.source == "preregistered":
        return True
    if registration.source != "dynamic":
        return False
    if registration.scope is not None and not set(scopes or ()) <= set(registration.scope.split()):
        return True
    return not any(_same_but_port(uri, redirect_uri) for uri in registration.redirect_uris)


def _same_but_port(a: str, b: str) -> bool:
    x, y = urlsplit(a), urlsplit(b)
    return (x.scheme, x.hostname, x.path) == (y.scheme, y.hostname, y.path)


# ---- the actor ------------------------------------------------------------------------------------


async def _no_device_code(effect: oauth.ShowDeviceCode) -> None:
    raise AssertionError("device flow is not started by this actor")


async def _no_redirect(effect: oauth.AwaitRedirect) -> Mapping[str, str]:
    raise AssertionError("this flow does not redirect")


class OAuthActor:
    def __init__(self, server: Server, store: Store, ctx: OAuthContext) -> None:
        assert server.url is not None
        assert server.oauth is not None
        self.server = server
        self._url = server.url
        self._settings = server.oauth
        self._store = store
        self._ctx = ctx
        self._policy = oauth.UrlPolicy(
            allow_insecure_loopback=server.allow_insecure_loopback,
            allow_private_network=server.allow_private_network,
        )
        self._loaded = False
        self._tokens: oauth.TokenSet | None = None
        self._registrations: dict[str, oauth.Registration] = {}
        self._refresh: _Outcome | None = None
        self._login: _Login | None = None
        self._unsaved = False
        self._last_refresh: float | None = None
        self._last_error: str | None = None
        self._last_error_class: str | None = None  # transient, refused, grant_ended, login_failed, ...
        self._failures = 0  # transient refresh failures in a row
        self._retry_at: float | None = None
        self._retry_not_before: float | None = None  # the last failure's Retry-After, as a time
        self._last_attempt: float | None = None  # when the last refresh started
        self._planned_at: float | None = None
        self._closed = False
        self._last_login_error: WireError | None = None
        # Authorization requests per requested scope set since the last login a person asked for (A9).
        self._authorizations: dict[frozenset[str], int] = {}

    def accepts(self, server: Server) -> bool:
        return server == self.server

    # ---- hints ------------------------------------------------------------------------------------

    def _needs_login(self, why: str) -> WireError:
        return WireError("needs_login", f"{self.server.name}: {why}", f"ncp-broker login {self.server.name}")

    def _unreachable(self, why: str) -> WireError:
        retry = f"; next try at {time.ctime(self._retry_at)}" if self._retry_at is not None else ""
        return WireError(
            "as_unreachable",
            f"{self.server.name}: the token has expired and cannot be refreshed now ({why}){retry}",
            f"wait for the authorization server; see: ncp-broker status {self.server.name}",
        )

    def _login_pending(self, login: _Login) -> WireError:
        where = f" at {login.url}" if login.url else ""
        return WireError(
            "login_in_progress",
            f"{self.server.name}: a login is in progress{where}",
            f"finish it in the browser, or run: ncp-broker login {self.server.name}",
        )

    def _note_error(self, kind: str | None, text: str | None) -> None:
        """What ``status`` shows as ``last_error`` and its class (None, None: the last attempt worked)."""
        self._last_error_class, self._last_error = kind, text

    # ---- state ------------------------------------------------------------------------------------

    async def _load(self) -> None:
        if self._loaded:
            return
        try:
            record = await self._store.load(self._url)
        except StoreError as exc:
            raise WireError(
                "internal", f"{self.server.name}: cannot read stored credentials: {exc}"
            ) from None
        if record is not None:
            for issuer, reg in record.registrations.items():
                if (registration := _registration(issuer, reg)) is not None:
                    self._registrations[issuer] = registration
            if record.tokens is not None:
                self._tokens = _token_set(record.tokens)
        self._loaded = True
        self._plan()

    def _plan(self) -> None:
        """Schedule the next proactive refresh (or the next retry after a transient failure)."""
        tokens = self._tokens
        if self._closed or tokens is None or tokens.refresh_token is None:
            self._planned_at = None
        elif self._retry_at is not None:
            self._planned_at = self._retry_at
        else:
            self._planned_at = refresh_at(tokens.obtained_at, tokens.expires_at, jitter=self._ctx.jitter())
        self._ctx.scheduler.set(self, self._planned_at)

    def close(self) -> None:
        """This actor was replaced by a reload: it must never refresh again (one writer per grant)."""
        self._closed = True
        self._ctx.scheduler.set(self, None)

    def adopt(self, old: OAuthActor) -> None:
        """Take over the grant of the actor this one replaces (same server URL, changed settings)."""
        self._tokens, self._registrations, self._loaded = old._tokens, old._registrations, old._loaded
        old.close()
        self._plan()

    async def refresh_due(self) -> None:
        """The scheduler's call: refresh now unless the grant changed meanwhile. Never raises."""
        tokens = self._tokens
        planned = self._planned_at
        if self._closed or tokens is None or planned is None or self._ctx.clock() < planned:
            return  # a request refreshed it first, and a later refresh is planned now
        with contextlib.suppress(WireError):
            await self._refresh_once(tokens)

    def _record(self, tokens: oauth.TokenSet | None) -> ServerRecord:
        return ServerRecord(
            server_url=self._url,
            tokens=_token_record(tokens) if tokens is not None else None,
            registrations={i: _registration_record(r) for i, r in self._registrations.items()},
        )

    async def _save(self, new_tokens: oauth.TokenSet | None = None) -> None:
        """Write the whole grant, with ``new_tokens`` in place of the held tokens if given; on failure keep
        it in memory and report ``degraded`` (rule 3)."""
        try:
            await self._store.save(self._record(new_tokens or self._tokens))
        except StoreError as exc:
            self._unsaved = True
            self._note_error("store_write", f"could not save credentials: {exc}")
            log.error(
                "%s: %s; keeping them in memory and retrying on the next request", self.server.name, exc
            )
        else:
            self._unsaved = False

    async def _drive(
        self,
        flow: oauth.Flow[_T],
        *,
        on_redirect: Callable[[oauth.AwaitRedirect], Awaitable[Mapping[str, str]]] = _no_redirect,
        on_device_code: Callable[[oauth.ShowDeviceCode], Awaitable[None]] = _no_device_code,
    ) -> _T:
        return await drive(
            flow,
            http=self._ctx.http,
            on_redirect=on_redirect,
            on_device_code=on_device_code,
            clock=self._ctx.clock,
        )

    # ---- tokens -----------------------------------------------------------------------------------

    async def get_token(self, min_ttl: float) -> TokenAnswer:
        """A token with ``min_ttl`` left (capped for short-lived tokens), refreshing first if needed.

        Never waits on the authorization server for long (T5): a caller waits at most
        :data:`REFRESH_JOIN_WAIT` for a refresh, then gets the still-valid token (the refresh goes on in
        the background) or, once it has expired, ``as_unreachable``.
        """
        await self._load()
        if self._unsaved:
            await self._save()
        refreshed = False
        while True:
            tokens = self._tokens
            if tokens is None:
                if self._login is not None:
                    raise self._login_pending(self._login)
                raise self._needs_login("not logged in")
            now = self._ctx.clock()
            expired = tokens.expires_at is not None and tokens.expires_at <= now
            current = TokenAnswer(tokens.access_token, tokens.token_type, tokens.expires_at)
            if refreshed or is_usable(now, tokens.obtained_at, tokens.expires_at, min_ttl):
                if expired:
                    raise self._unreachable(self._last_error or "the access token has expired")
                return current
            if self._retry_at is not None and now < self._retry_at and self._refresh is None:
                if not expired:
                    return current  # backing off after a failure: the token is still valid, serve it
                if not self._may_retry_early(now):
                    raise self._unreachable(self._last_error or "the authorization server is unreachable")
            wait = REFRESH_JOIN_WAIT
            if not expired and tokens.expires_at is not None:  # never wait the valid token away
                wait = min(wait, max(0.0, tokens.expires_at - now - EXPIRY_SKEW))
            with trio.move_on_after(wait):
                await self._refresh_once(tokens)
                refreshed = True
                continue
            if tokens.expires_at is not None and tokens.expires_at <= self._ctx.clock():
                raise self._unreachable("the authorization server is slow to answer; the refresh goes on")
            return current

    def _may_retry_early(self, now: float) -> bool:
        """With an expired token, a request may try a refresh before the backoff timer fires, at most every
        :data:`ON_DEMAND_RETRY` seconds, unless the server's ``Retry-After`` said when: a recovered server
        is then used within seconds, not when a timer set during the outage (up to 5 minutes) fires."""
        if self._retry_not_before is not None and now < self._retry_not_before:
            return False
        return self._last_attempt is None or now - self._last_attempt >= ON_DEMAND_RETRY

    async def token_rejected(self, token: Secret, www_authenticate: str | None = None) -> TokenAnswer:
        await self._load()
        tokens = self._tokens
        if tokens is not None and tokens.access_token == token:  # compare and swap: only the refused token
            if www_authenticate is not None:
                await self._follow_authorization_server(tokens, www_authenticate)
            await self._refresh_once(tokens)
        return await self.get_token(0)

    async def _follow_authorization_server(self, tokens: oauth.TokenSet, www_authenticate: str) -> None:
        """D7: a refused token may mean the server moved to another authorization server. Rediscover; if
        the protected resource metadata now leads elsewhere, end this grant (a token or client of the old
        issuer is never sent to the new one) and ask for a login there.

        A discovery that fails changes nothing: the caller refreshes as usual.
        """
        challenge = oauth.bearer_challenge(www_authenticate)
        try:
            discovery = await self._drive(oauth.discover(self._url, policy=self._policy, challenge=challenge))
        except oauth.OAuthError as exc:
            log.info("%s: rediscovery after a refused token failed (%s); refreshing", self.server.name, exc)
            return
        if discovery.issuer == tokens.issuer or self._tokens is not tokens:
            return
        self._tokens = None
        self._note_error(
            "authorization_server_moved", f"the server moved from {tokens.issuer} to {discovery.issuer}"
        )
        self._plan()
        await self._save()
        log.warning("%s: %s; a login there is needed", self.server.name, self._last_error)
        raise self._needs_login(f"{self._last_error}; log in there")

    async def scope_insufficient(
        self, token: Secret | None, scopes: list[str], www_authenticate: str | None
    ) -> TokenAnswer:
        """Step-up (A9): re-authorize with the union of the held and the challenged scopes, opening the
        browser; answers with the new token. At most :data:`oauth.MAX_AUTHORIZATIONS` authorization
        requests per scope set, the first login included, until a person runs ``ncp-broker login``."""
        await self._load()
        if self._login is None:
            tokens = self._tokens
            if tokens is None:
                raise self._needs_login("not logged in")
            if token is not None and tokens.access_token != token:
                return await self.get_token(0)  # someone stepped up already: try the newer token
            header = (("www-authenticate", www_authenticate),) if www_authenticate is not None else ()
            want = oauth.step_up_scopes(tokens.scopes, oauth.HttpResponse(403, header))
            if scopes:
                want = tuple(dict.fromkeys((*(want or tokens.scopes), *scopes)))
            if want is None:
                raise WireError(
                    "bad_request",
                    f"{self.server.name}: not a step-up: the 403 names no scope with "
                    'error="insufficient_scope"',
                    "send scopes, or the 403's WWW-Authenticate header; see docs/protocol.md",
                )
            if self._authorizations.get(frozenset(want), 0) >= oauth.MAX_AUTHORIZATIONS:
                raise WireError(
                    "insufficient_scope",
                    f"{self.server.name}: the server still refuses for lack of scope after "
                    f"{oauth.MAX_AUTHORIZATIONS} authorizations for {' '.join(want)}",
                    f"check the account's permissions, then: ncp-broker login {self.server.name}",
                )
            await self.login("browser", open_browser=True, scopes=want)
        return await self.login_wait()

    async def _refresh_once(self, seen: oauth.TokenSet) -> None:
        """Refresh ``seen`` unless someone already replaced it; join a refresh in flight."""
        if self._tokens is not seen and self._refresh is None:
            return
        if seen.refresh_token is None:
            raise self._needs_login("the token needs renewing and the server issued no refresh token")
        if self._refresh is None:
            self._refresh = _Outcome()
            self._ctx.nursery.start_soon(self._run_refresh, seen, self._refresh)
        outcome = self._refresh
        await outcome.done.wait()
        if outcome.error is not None:
            raise outcome.error

    async def _run_refresh(self, tokens: oauth.TokenSet, outcome: _Outcome) -> None:
        self._last_attempt = self._ctx.clock()
        try:
            registration = self._registrations.get(tokens.issuer)
            if registration is None:
                raise oauth.GrantEndedError("the client registration for this grant is gone", error="")
            new = await self._drive(
                oauth.refresh(tokens, registration, policy=self._policy),
            )
            if self._closed:
                log.warning("%s: a refresh finished after a reload replaced this server", self.server.name)
            await self._save(new)  # on disk before any caller can take its access token (rule 3)
            self._tokens = new
            self._last_refresh = self._ctx.clock()
            if not self._unsaved:
                self._note_error(None, None)
            self._failures, self._retry_at = 0, None
            log.info("%s: refreshed; the new token expires at %s", self.server.name, new.expires_at)
        except oauth.GrantEndedError as exc:
            self._tokens = None
            self._note_error("grant_ended", f"grant ended: {exc.message}")
            if exc.client_rejected:
                self._registrations.pop(tokens.issuer, None)
            await self._save()
            log.warning("%s: the grant ended (%s); a login is needed", self.server.name, exc.message)
            outcome.error = self._needs_login(f"the authorization server ended the grant ({exc.message})")
        except oauth.OAuthError as exc:
            # Transient (network, 408, 429, 5xx) or a refusal that does not end the grant: keep it, back off.
            self._failures += 1
            retry_after = exc.retry_after if isinstance(exc, oauth.TransientError) else None
            self._retry_not_before = self._ctx.clock() + retry_after if retry_after is not None else None
            delay = backoff_delay(self._failures, jitter=self._ctx.jitter(), retry_after=retry_after)
            self._retry_at = self._ctx.clock() + delay
            kind = "transient" if isinstance(exc, oauth.TransientError) else "refused"
            self._note_error(kind, f"{type(exc).__name__}: {exc.message}")
            log.warning(
                "%s: refresh failed (attempt %d), keeping the grant, retrying in %.0f s: %s",
                self.server.name,
                self._failures,
                delay,
                exc.message,
            )
            if tokens.expires_at is not None and tokens.expires_at <= self._ctx.clock():
                outcome.error = self._unreachable(exc.message)
        finally:
            self._refresh = None
            self._plan()
            outcome.done.set()

    # ---- logout -----------------------------------------------------------------------------------

    async def logout(self) -> dict[str, Any]:
        """Revoke the grant at the authorization server (RFC 7009, refresh token first), then forget the
        tokens whatever the answer (T6). The client registration is kept for the next login."""
        await self._load()
        if self._refresh is not None:
            await self._refresh.done.wait()  # revoke what the refresh produced, not what it replaced
        tokens = self._tokens
        revoked: list[dict[str, str]] = []
        if tokens is not None:
            registration = self._registrations.get(tokens.issuer)
            if registration is not None:
                try:
                    outcomes = await self._drive(
                        oauth.revoke(tokens, registration, policy=self._policy),
                    )
                except oauth.OAuthError as exc:
                    revoked.append({"token": "all", "outcome": "refused", "detail": exc.message})
                else:
                    revoked += [
                        {"token": o.token_type_hint, "outcome": o.outcome, "detail": o.detail}
                        for o in outcomes
                    ]
        self._tokens = None
        self._failures, self._retry_at = 0, None
        self._plan()
        await self._save()
        log.info(
            "%s: logged out (%s)", self.server.name, ", ".join(r["outcome"] for r in revoked) or "no grant"
        )
        return {"had_grant": tokens is not None, "revocation": revoked, "saved": not self._unsaved}

    async def invalidate(self, what: Literal["tokens", "client", "all"]) -> dict[str, Any]:
        """Forget tokens, client registrations or both, locally only: nothing is revoked (compare
        :meth:`logout`). Discovery is not cached beyond the grant, so ``all`` is ``tokens`` + ``client``."""
        await self._load()
        if self._refresh is not None:
            await self._refresh.done.wait()  # forget what the refresh produced, not what it replaced
        forgot: list[str] = []
        if what in ("tokens", "all") and self._tokens is not None:
            self._tokens = None
            forgot.append("tokens")
        if what in ("client", "all") and self._registrations:
            self._registrations = {}
            forgot.append("client")
        self._failures, self._retry_at = 0, None
        self._note_error(None, None)
        self._plan()
        await self._save()
        log.info("%s: invalidated %s (%s)", self.server.name, what, ", ".join(forgot) or "nothing held")
        return {"forgot": forgot, "saved": not self._unsaved}

    async def import_grant(self, item: ncp_import.ImportItem, *, replace: bool) -> dict[str, Any]:
        """Take over NCP's grant for this server (``ncp-broker import-ncp``): bind it to the authorization
        server that discovery finds now, store it, and refresh once to prove it (see brokerd/ncp_import.py).
        Never raises for the item's own problems: the answer says what happened."""
        await self._load()
        answer: dict[str, Any] = {
            "server": self.server.name,
            "file": str(item.path),
            "notes": list(item.notes),
        }
        if self._tokens is not None and not replace:
            return answer | {"outcome": "kept", "detail": "the broker holds a grant already (--replace)"}
        try:
            discovery = await self._discover()
            record = item.to_record(discovery, existing=self._record(self._tokens), replace=True)
        except (oauth.OAuthError, ncp_import.ImportBindError) as exc:
            return answer | {"outcome": "failed", "detail": str(exc)}
        assert record.tokens is not None
        self._tokens = _token_set(record.tokens)
        for issuer, reg in record.registrations.items():
            if (registration := _registration(issuer, reg)) is not None:
                self._registrations[issuer] = registration
        self._failures, self._retry_at = 0, None
        self._note_error(None, None)
        self._plan()
        await self._save()
        log.info(
            "%s: imported NCP's grant from %s (issuer %s)", self.server.name, item.path, discovery.issuer
        )
        tokens = self._tokens
        if tokens is None or tokens.refresh_token is None:
            return answer | {"outcome": "imported", "detail": "no refresh token: a login follows its expiry"}
        try:
            await self._refresh_once(tokens)
        except WireError as exc:
            return answer | {"outcome": "imported", "detail": f"but the first refresh failed: {exc.message}"}
        return answer | {"outcome": "imported", "detail": f"refreshed at {discovery.issuer}"}

    # ---- login ------------------------------------------------------------------------------------

    async def login(
        self,
        mode: Literal["browser", "paste", "device"],
        *,
        open_browser: bool = False,
        will_open: bool = False,
        scopes: tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        """Start a login (or join the pending one) and return its authorization URL.

        ``scopes`` marks a step-up (see :meth:`scope_insufficient`); any other login is a person's (or a
        host's first use) and starts the count of authorization requests afresh. With ``open_browser``
        the daemon opens the URL itself; when it cannot, the answer is ``needs_login`` and the login stays
        pending for ``ncp-broker login`` to join. ``will_open``: the caller opens it. Either way, a login
        that has a browser open already is not opened again (``opened_elsewhere`` in the answer).
        """
        await self._load()
        joined = self._login is not None
        if self._login is None:
            if scopes is None:
                self._authorizations.clear()
            self._login = _Login(mode=mode, started_at=self._ctx.clock(), scopes=scopes)
            self._ctx.nursery.start_soon(self._run_login, self._login)
        login = self._login
        with trio.move_on_after(60):
            await login.url_known.wait()  # set when the URL is known, or when the login ends early
        if login.error is not None:
            raise login.error
        if login.url is None:
            raise WireError("as_unreachable", f"{self.server.name}: the login did not start within 60 s")
        # Whoever woke first may have claimed the browser, the login's creator included: check the flag.
        opened_elsewhere = login.opened
        if login.mode == "browser" and not opened_elsewhere:
            if will_open:
                login.opened = True  # the caller (ncp-broker login, ncp-token) opens it
            elif open_browser:
                # Claimed before the await: callers that woke with this one must not open a second tab.
                login.opened = True
                if not await open_browser_(login.url, policy=self._policy):
                    login.opened = False
                    raise WireError(
                        "needs_login",
                        f"{self.server.name}: a login is waiting at {login.url}, but the daemon could not "
                        "open a browser",
                        f"open that URL, or run: ncp-broker login {self.server.name}",
                    )
        return {
            "url": login.url,
            "user_code": login.user_code,
            "joined": joined,
            "opened_elsewhere": opened_elsewhere,
            "started_at": login.started_at,
        }

    async def login_wait(self) -> TokenAnswer:
        login = self._login
        if login is not None:
            await login.done.wait()
            if login.error is not None:
                raise login.error
        elif self._tokens is None and self._last_login_error is not None:
            raise self._last_login_error  # the login ended before this caller started waiting
        return await self.get_token(0)

    async def login_complete(self, response: str) -> TokenAnswer:
        login = self._login
        if login is None or login.pasted is None:
            raise WireError("bad_request", f"{self.server.name}: no login is waiting for a pasted code")
        await login.pasted.send(response)
        return await self.login_wait()

    async def _run_login(self, login: _Login) -> None:
        try:
            port = self._settings.callback_port or 0
            async with self._ctx.hub.listener(port=port) as listener:
                self._tokens = await self._authorize(login, listener)
                self._last_refresh = self._ctx.clock()
                self._note_error(None, None)
                self._failures, self._retry_at = 0, None
                self._last_login_error = None
                await self._save()
                self._plan()
                log.info("%s: logged in", self.server.name)
        except oauth.OAuthError as exc:
            login.error = self._last_login_error = WireError(
                "needs_login",
                f"{self.server.name}: login failed: {exc.message}",
                exc.hint or f"ncp-broker login {self.server.name}",
            )
            self._note_error("login_failed", f"login failed: {exc.message}")
            log.warning("%s: login failed: %s", self.server.name, exc.message)
        except Exception:
            log.exception("%s: login crashed", self.server.name)
            login.error = WireError("internal", f"{self.server.name}: login failed; see the daemon's log")
        finally:
            self._login = None
            login.url_known.set()
            login.done.set()

    async def _discover(self) -> oauth.Discovery:
        """Discovery as a client meets the server: probe it without a token, follow the 401's challenge."""
        ctx = self._ctx
        probe = await send(
            ctx.http,
            oauth.HttpRequest(
                "POST",
                self._url,
                (("content-type", "application/json"), ("accept", "application/json, text/event-stream")),
                # tools/list, not initialize: some servers let initialize through without a token, and the
                # 401's challenge (its scope, its resource_metadata) is what discovery should start from.
                json.dumps({"jsonrpc": "2.0", "id": 0, "method": "tools/list", "params": {}}).encode(),
            ),
            clock=ctx.clock,
        )
        challenge = None
        if isinstance(probe, oauth.HttpResponse):
            challenge = oauth.bearer_challenge(probe.header_values("www-authenticate"))
        return await self._drive(oauth.discover(self._url, policy=self._policy, challenge=challenge))

    async def _authorize(self, login: _Login, listener: CallbackListener) -> oauth.TokenSet:
        ctx = self._ctx
        discovery = await self._discover()
        scopes = login.scopes or oauth.select_scopes(discovery, self._settings.scopes)
        key = frozenset(scopes or ())
        self._authorizations[key] = self._authorizations.get(key, 0) + 1
        if login.mode != "device":
            oauth.require_s256(discovery)  # before registering: no client at a server we will not use (A1)
        registration = self._registrations.get(discovery.issuer)
        if registration is None or _must_register(registration, scopes, listener.redirect_uri):
            registration = await self._drive(
                oauth.register(
                    discovery,
                    policy=self._policy,
                    redirect_uris=[listener.redirect_uri],
                    now=ctx.clock(),
                    client_id=self._settings.client_id,
                    client_secret=self._settings.client_secret,
                    client_metadata_url=self._settings.client_metadata_url,
                    # No `scope`: it would cap what the client may ever ask for, and a step-up beyond it
                    # would need a new client id, which ends the MCP session on servers that bind
                    # sessions to the client.
                ),
            )
            self._registrations[discovery.issuer] = registration
            await self._save()

        if login.mode == "device":
            if discovery.device_authorization_endpoint is None:
                raise oauth.PolicyError(
                    f"{discovery.issuer} does not offer the device authorization grant",
                    hint=f"log in with the browser: ncp-broker login {self.server.name}",
                )

            async def on_device_code(effect: oauth.ShowDeviceCode) -> None:
                login.url = effect.verification_uri_complete or effect.verification_uri
                login.user_code = effect.user_code
                login.url_known.set()

            return await self._drive(
                oauth.device_flow(discovery, registration, policy=self._policy, scopes=scopes),
                on_device_code=on_device_code,
            )

        async def on_redirect(effect: oauth.AwaitRedirect) -> Mapping[str, str]:
            send_pasted, receive_pasted = trio.open_memory_channel[str](1)
            login.pasted = send_pasted
            login.url = effect.authorization_url
            login.url_known.set()
            result: dict[str, Mapping[str, str]] = {}
            async with trio.open_nursery() as nursery:

                async def from_listener() -> None:
                    result["query"] = await listener.expect(
                        effect.state, timeout=LOGIN_TIMEOUT, issuer=discovery.issuer
                    )
                    nursery.cancel_scope.cancel()

                async def from_paste() -> None:
                    text = await receive_pasted.receive()
                    result["query"] = oauth.parse_pasted_response(text, effect.redirect_uri, effect.state)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(from_listener)
                nursery.start_soon(from_paste)
            return result["query"]

        return await self._drive(
            oauth.authorization_code_flow(
                discovery,
                registration,
                policy=self._policy,
                redirect_uri=listener.redirect_uri,
                scopes=scopes,
                entropy=ctx.entropy,
            ),
            on_redirect=on_redirect,
        )

    # ---- status -----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self._ctx.clock()
        info: dict[str, Any] = {
            "last_refresh": self._last_refresh,
            "last_error": self._last_error,
            "last_error_class": self._last_error_class,
        }
        tokens = self._tokens
        if self._login is not None:
            state, detail = "login_pending", f"login pending since {time.ctime(self._login.started_at)}"
            info["login_url"] = self._login.url
        elif self._refresh is not None:
            state, detail = "refreshing", "refreshing now"
        elif tokens is None:
            state, detail = "needs_login", "not logged in" if self._loaded else "not loaded yet"
            info["hint"] = f"ncp-broker login {self.server.name}"
        elif self._unsaved:
            state, detail = "degraded", "credentials are held in memory only; saving is retried"
        elif tokens.expires_at is not None and tokens.expires_at <= now:
            state, detail = "expired", "the access token has expired; the next request refreshes it"
        else:
            state = "valid"
            detail = f"expires {time.ctime(tokens.expires_at)}" if tokens.expires_at else "no expiry given"
        info["expires_at"] = tokens.expires_at if tokens else None
        info["next_refresh"] = self._ctx.scheduler.next_deadline(self)
        if self._failures and self._retry_at is not None:
            info["retry_at"] = self._retry_at
            if state in ("valid", "expired"):
                state = "as_unreachable"
                detail = (
                    f"{detail if tokens and tokens.expires_at and tokens.expires_at > now else 'expired'}; "
                    f"refresh failing, retrying at {time.ctime(self._retry_at)}"
                )
        return {"state": state, "detail": detail, **info}
