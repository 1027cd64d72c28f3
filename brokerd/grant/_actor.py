"""The OAuth actor: the one owner of a server's grant, carrying out what the renewal machine decides.

What it guarantees (DESIGN rules 2-5, 10, 11):

* **One grant per server.** One actor per canonical server URL; every alias of the server reaches it.
* **Single flight.** At most one renewal runs at a time, as a task of the daemon's work nursery, not of the
  caller who asked: a client that hangs up cancels nothing.
* **An exchange once sent is finished.** A renewal is shielded from cancellation from the moment it is
  marked as sent until its answer is persisted; only its own timeout (the HTTP driver's) ends it early. A
  stop or a reload waits for it.
* **Persist before you hand out.** A new token set is written to the store before anyone gets its access
  token. If the write fails the tokens stay in memory, ``status`` says ``degraded``, and the next request
  retries the write.
* **Transient is not definitive.** Only ``invalid_grant`` and friends end the grant; anything else keeps it
  and backs off (the machine decides when to try again).

Grants that need no person (client credentials, a workload's token, an enterprise IdP's grant: E1, E2,
E4) get their first token the way any grant is renewed, through the same machine and the same shielded
path (``brokerd.grant._present`` says what each presents). A DPoP-bound grant (E3) signs every request
with its own key, and answers a caller who names the request it is about to send with a proof for it.

Login, step-up, logout, invalidation, NCP import and status live in the modules beside this one; they
change the grant only through :class:`~brokerd.grant._grant.Grant`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

import msgspec
import trio

from brokerd import oauth, renewal
from brokerd.actors import Actor, LoginMode
from brokerd.config import OAuthSettings, Server
from brokerd.grant import _forget, _import, _renew, _status
from brokerd.grant._context import OAuthContext
from brokerd.grant._dpop import resource_proof
from brokerd.grant._grant import Grant
from brokerd.grant._login import Logins
from brokerd.grant._present import Presenter
from brokerd.oauth import canonical_url
from brokerd.oauth_driver import drive, send
from brokerd.resource_requests import ResourceRequest
from brokerd.secret import Secret
from brokerd.store import Store
from brokerd.wire import (
    GrantState,
    Imported,
    InvalidateResult,
    LoginStarted,
    LogoutResult,
    TokenResult,
    WireError,
)

if TYPE_CHECKING:
    from brokerd.grant._enterprise import IdpRegistry
    from brokerd.ncp_import import ImportItem

__all__ = ["OAuthActor"]

log = logging.getLogger("brokerd.grant")

_T = TypeVar("_T")


async def _no_device_code(effect: oauth.ShowDeviceCode) -> None:
    raise AssertionError("this flow shows no device code")


async def _no_redirect(effect: oauth.AwaitRedirect) -> Mapping[str, str]:
    raise AssertionError("this flow does not redirect")


@dataclass
class _Renewal:
    """The renewal in flight; every caller who needs it waits on ``done``."""

    done: trio.Event = field(default_factory=trio.Event)


class OAuthActor(Actor):
    kind = "oauth"
    keeps_a_grant = True

    def __init__(
        self,
        server: Server,
        store: Store,
        ctx: OAuthContext,
        aliases: Sequence[str] = (),
        *,
        idps: IdpRegistry | None = None,
        key: str | None = None,
    ) -> None:
        assert server.url is not None
        assert server.oauth is not None
        super().__init__(server, aliases)
        self._ctx = ctx
        self._idps = idps
        key = key if key is not None else canonical_url(server.url)
        self.grant = Grant(
            key, store, ctx, label=lambda: self.label, on_due=self._due, on_renewal_end=self._renewal_ended
        )
        self.logins = Logins(self)
        self._renewal: _Renewal | None = None
        self._rs_nonce: str | None = None  # the resource server's last DPoP nonce (RFC 9449 §9), in memory
        self.presenter = self._presenter()
        self.grant.apply(renewal.Unattended(self.presenter.able()))

    def _presenter(self) -> Presenter:
        enterprise = self.settings.enterprise
        idp = None
        if enterprise is not None and enterprise.id_token is None and self._idps is not None:
            idp = self._idps.get(enterprise, self.server)
        return Presenter(self, idp)

    # ---- settings ---------------------------------------------------------------------------------

    @property
    def ctx(self) -> OAuthContext:
        return self._ctx

    @property
    def settings(self) -> OAuthSettings:
        assert self.server.oauth is not None
        return self.server.oauth

    @property
    def policy(self) -> oauth.UrlPolicy:
        return oauth.UrlPolicy(
            allow_insecure_loopback=self.server.allow_insecure_loopback,
            allow_private_network=self.server.allow_private_network,
        )

    @property
    def login_hint(self) -> str:
        return f"ncp-broker login {self.server.name}"

    def accepts(self, server: Server) -> bool:
        """Any OAuth entry for this same server keeps the grant; new settings apply from the next login."""
        return (
            server.kind == "oauth" and server.url is not None and canonical_url(server.url) == self.grant.key
        )

    def reconfigure(self, server: Server, aliases: Sequence[str]) -> None:
        """New settings: new credentials to present, so a refusal of the old ones no longer stands."""
        changed = server.oauth != self.server.oauth
        super().reconfigure(server, aliases)
        if changed:
            self.presenter = self._presenter()
            self.grant.apply(renewal.Unattended(self.presenter.able()))
            self.grant.apply(renewal.Retry())

    async def sync_inputs(self) -> None:
        """Tell the machine what it cannot see: whether the grant can be had without a person now (an
        enterprise IdP grant may have come or gone), and whether credentials it refused have changed."""
        presenter = self.presenter
        if (idp := presenter.idp) is not None:
            await idp.grant.load()
        able = presenter.able()
        if able != self.grant.state.unattended:
            self.grant.apply(renewal.Unattended(able))
        if self.grant.state.refused and await presenter.changed_since_refusal():
            self.grant.apply(renewal.Retry())

    # ---- life -------------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.grant.load()
            await self.sync_inputs()  # an enterprise grant is renewable on schedule once its IdP's is loaded
        except WireError as exc:
            log.error("%s", exc.message)

    def close(self) -> None:
        self.grant.apply(renewal.Closed())
        self.logins.cancel()

    def reopen(self) -> None:
        self.grant.apply(renewal.Closed(closed=False))

    @property
    def closed(self) -> bool:
        """Taking no new exchanges (the machine's ``closed``): the daemon stops, or a reload retired it."""
        return self.grant.state.closed

    def stopping_error(self, what: str) -> WireError:
        return WireError(
            "stopping",
            f"{self.label}: ncp-broker is stopping and starts no new {what}",
            "wait for it to stop, then: ncp-broker start",
        )

    # ---- errors -----------------------------------------------------------------------------------

    def needs_login(self, why: str, hint: str | None = None) -> WireError:
        return WireError("needs_login", f"{self.label}: {why}", hint or self.login_hint)

    def _refused(self, decision: renewal.Decision) -> WireError:
        grant = self.grant
        match decision.action:
            case renewal.Action.NEEDS_LOGIN:
                if self.logins.pending is not None:
                    return self.logins.pending_error(self.logins.pending)
                if grant.tokens is None and grant.last_error_class in (
                    "grant_ended",
                    "authorization_server_moved",
                    "credentials",
                    "refused",
                ):
                    return self.needs_login(grant.last_error or decision.why, grant.last_hint)
                if (idp := self.presenter.idp) is not None and not self.presenter.able():
                    return self.needs_login(f"not logged in at {idp.label}")
                return self.needs_login(decision.why)
            case renewal.Action.STOPPING:
                return self.stopping_error("token refreshes")
        retry_at = grant.state.retry_at
        retry = f"; next try at {time.ctime(retry_at)}" if retry_at is not None else ""
        why = grant.last_error or decision.why
        what = "the token has expired and cannot be refreshed" if grant.tokens else "no token can be had"
        hint = f"wait for the authorization server; see: ncp-broker status {self.server.name}"
        if grant.last_error_class == "credentials" and grant.last_hint:
            hint = grant.last_hint
        return WireError("as_unreachable", f"{self.label}: {what} now ({why}){retry}", hint)

    # ---- tokens -----------------------------------------------------------------------------------

    async def get_token(self, min_ttl: float, *, request: ResourceRequest | None = None) -> TokenResult:
        """A token with ``min_ttl`` left (capped for short-lived tokens), renewing first if needed; with
        ``request``, and a DPoP-bound token, a proof for that request too.

        Waits at most :data:`renewal.JOIN_WAIT` for a renewal (T5): then the still-valid token, or
        ``as_unreachable`` once it has expired.
        """
        return self._with_proof(await self.serve(min_ttl), request)

    def _with_proof(self, result: TokenResult, request: ResourceRequest | None) -> TokenResult:
        """``result`` with a DPoP proof for ``request`` when its token is DPoP-bound (E3)."""
        if request is None:
            return result
        if request.dpop_nonce is not None:
            self._rs_nonce = request.dpop_nonce  # the resource server's latest, until it demands another
        tokens = self.grant.tokens
        if tokens is None or tokens.access_token != result.token:
            return result
        proof = resource_proof(
            tokens,
            self.grant.dpop_key,
            method=request.method,
            url=request.url,
            now=self._ctx.clock(),
            entropy=self._ctx.entropy,
            nonce=self._rs_nonce,
            label=self.label,
            login_hint=self.login_hint,
        )
        return msgspec.structs.replace(result, dpop=proof)

    def token_now(self, min_ttl: float) -> TokenResult | None:
        """The token, when the machine says serve at once and nothing needs doing first (loaded, saved);
        None otherwise — ``get_token`` then carries the decision out. Never waits, never does I/O."""
        grant = self.grant
        tokens = grant.tokens
        if not grant.loaded or grant.unsaved or tokens is None:
            return None
        now = self._ctx.clock()
        decision = renewal.decide(grant.state, now=now, min_ttl=min_ttl, asked_at=now)
        if decision.action is not renewal.Action.SERVE:
            return None
        return TokenResult.at(now, tokens.access_token, tokens.token_type, tokens.expires_at)

    async def serve(self, min_ttl: float, *, refused: Secret | None = None) -> TokenResult:
        """Carry out the machine's decisions for one caller until it says serve or refuse.

        ``refused`` is a token the resource answered 401 to: while it is the one held, it counts as
        expired.
        """
        grant = self.grant
        await grant.load()
        await self.sync_inputs()
        if grant.unsaved and grant.tokens is not None:
            with trio.CancelScope(shield=True):
                await grant.save()
        clock = self._ctx.clock
        asked_at, first = clock(), grant.tokens
        while True:
            tokens = grant.tokens
            decision = renewal.decide(
                grant.state,
                now=clock(),
                min_ttl=min_ttl,
                asked_at=asked_at,
                refused=refused is not None and tokens is not None and tokens.access_token == refused,
                renewed=tokens is not first,
            )
            match decision.action:
                case renewal.Action.SERVE:
                    assert tokens is not None
                    return TokenResult.at(clock(), tokens.access_token, tokens.token_type, tokens.expires_at)
                case renewal.Action.RENEW:
                    self._start_renewal()
                    await self._join(decision.wait)
                case renewal.Action.JOIN:
                    await self._join(decision.wait)
                case renewal.Action.PAUSE:
                    await trio.sleep(decision.wait)
                case _:
                    raise self._refused(decision)

    async def token_rejected(
        self, token: Secret, www_authenticate: str | None = None, *, request: ResourceRequest | None = None
    ) -> TokenResult:
        """The resource answered 401 to ``token``: renew it if it is still the one held (compare and swap),
        else answer the newer one (with a proof for ``request`` when it is DPoP-bound). With the 401's
        header, first check that the server has not moved to another authorization server (D7)."""
        grant = self.grant
        await grant.load()
        tokens = grant.tokens
        if tokens is not None and tokens.access_token == token and www_authenticate is not None:
            await self._follow_authorization_server(tokens, www_authenticate)
        return self._with_proof(await self.serve(0, refused=token), request)

    async def _follow_authorization_server(self, tokens: oauth.TokenSet, www_authenticate: str) -> None:
        """D7: a refused token may mean the server moved to another authorization server. Rediscover; if the
        protected resource metadata now leads elsewhere, end this grant (no token or client of the old
        issuer is ever sent to the new one) and ask for a login there. A failed discovery changes nothing:
        the caller renews as usual."""
        challenge = oauth.resource_challenge(www_authenticate)
        try:
            discovery = await self.drive(
                oauth.discover(self.server.url or "", policy=self.policy, challenge=challenge)
            )
        except oauth.OAuthError as exc:
            log.info("%s: rediscovery after a refused token failed (%s); refreshing", self.label, exc)
            return
        if discovery.issuer == tokens.issuer:
            return
        await self.settle()
        grant = self.grant
        if grant.tokens is not tokens:
            return  # renewed or replaced meanwhile: the caller tries the newer token
        moved = f"the server moved from {tokens.issuer} to {discovery.issuer}"
        grant.drop(renewal.Forgotten())
        grant.note_error("authorization_server_moved", moved)
        with trio.CancelScope(shield=True):
            await grant.save()
        log.warning("%s: %s; a login there is needed", self.label, moved)
        raise self.needs_login(f"{moved}; log in there")

    # ---- renewal ----------------------------------------------------------------------------------

    def _start_renewal(self) -> None:
        tokens = self.grant.tokens  # None: the first token of a grant that needs no person
        assert self._renewal is None
        self.grant.apply(renewal.Sent(self._ctx.clock()))
        self._renewal = _Renewal()
        self._ctx.nursery.start_soon(self._run_renewal, tokens, self._renewal)

    async def _join(self, wait: float) -> None:
        current = self._renewal
        if current is not None and wait > 0:
            with trio.move_on_after(wait):
                await current.done.wait()

    async def settle(self) -> None:
        """Wait until no renewal is in flight (logout and invalidate act on what it produced). Returns
        with none in flight and no checkpoint since: the caller may change the grant at once."""
        while (current := self._renewal) is not None:
            await current.done.wait()

    async def renew_and_wait(self) -> None:
        """Renew now (or join the renewal in flight) and wait for it to end, however long: for an import
        that proves the grant it took over."""
        await self.settle()
        if not self.closed and self.grant.tokens is not None and self.grant.tokens.refresh_token is not None:
            self._start_renewal()
            await self.settle()

    async def _due(self) -> None:
        """The timer's call: renew, unless a request did it first or there is nothing to do. Never raises."""
        if self._renewal is None and renewal.due(self.grant.state, self._ctx.clock()):
            self._start_renewal()

    def _renewal_ended(self) -> None:
        """The machine left ``IN_FLIGHT``: the renewal is over for everyone waiting on it, even while its
        task still saves (the next renewal waits for that save: ``Grant`` saves one at a time)."""
        current, self._renewal = self._renewal, None
        if current is not None:
            current.done.set()

    async def _run_renewal(self, seen: oauth.TokenSet | None, current: _Renewal) -> None:
        # What to present is prepared cancellably (a stop before anything is sent sends nothing); from the
        # moment it is sent to the persisted answer, _renew.renew shields the exchange (DESIGN rule 10).
        crashed = False
        try:
            await _renew.renew(self, seen)
        except Exception:
            crashed = True
            log.exception("%s: the refresh crashed", self.label)
        finally:
            if self._renewal is current and self.grant.state.phase is renewal.Phase.IN_FLIGHT:
                # Cancelled before anything was sent (a stop), or a bug: the renewal is over either way.
                failed = renewal.Failed(self._ctx.clock(), self._ctx.jitter())
                self.grant.apply(failed if crashed else renewal.Settled())
            current.done.set()

    # ---- the HTTP side ----------------------------------------------------------------------------

    async def drive(
        self,
        flow: oauth.Flow[_T],
        *,
        on_redirect: Callable[[oauth.AwaitRedirect], Awaitable[Mapping[str, str]]] = _no_redirect,
        on_device_code: Callable[[oauth.ShowDeviceCode], Awaitable[None]] = _no_device_code,
        keep: Callable[[_T], Awaitable[None]] | None = None,
    ) -> _T:
        return await drive(
            flow,
            http=self._ctx.http,
            on_redirect=on_redirect,
            on_device_code=on_device_code,
            clock=self._ctx.clock,
            keep=keep,
        )

    async def discover(self) -> oauth.Discovery:
        """Discovery as a client meets the server: probe it without a token, follow the 401's challenge."""
        return (await self.probe())[0]

    async def probe(self) -> tuple[oauth.Discovery, tuple[oauth.Challenge, ...]]:
        """:meth:`discover`, and the challenges of the server's 401 (a ``DPoP`` one says it checks proofs)."""
        url = self.server.url or ""
        probe = await send(
            self._ctx.http,
            oauth.HttpRequest(
                "POST",
                url,
                (("content-type", "application/json"), ("accept", "application/json, text/event-stream")),
                # tools/list, not initialize: some servers let initialize through without a token, and the
                # 401's challenge (its scope, its resource_metadata) is what discovery should start from.
                json.dumps({"jsonrpc": "2.0", "id": 0, "method": "tools/list", "params": {}}).encode(),
            ),
            clock=self._ctx.clock,
        )
        challenge = None
        challenges: tuple[oauth.Challenge, ...] = ()
        if isinstance(probe, oauth.HttpResponse):
            values = probe.header_values("www-authenticate")
            challenge = oauth.resource_challenge(values)
            challenges = tuple(oauth.parse_www_authenticate(values))
        discovery = await self.drive(oauth.discover(url, policy=self.policy, challenge=challenge))
        return discovery, challenges

    # ---- everything else, in the modules beside this one ------------------------------------------

    async def login(self, mode: LoginMode, *, open_browser: bool, will_open: bool) -> LoginStarted:
        """A person's login; for a grant that needs none, a fresh token now (credentials it refused may
        have been fixed); for an enterprise grant, the login at the IdP."""
        await self.grant.load()
        if (idp := self.presenter.idp) is not None:
            return await idp.login(mode, open_browser=open_browser, will_open=will_open)
        if self.presenter.kind == "authorization_code":
            return await self.logins.start(mode, open_browser=open_browser, will_open=will_open)
        if self.closed:
            raise self.stopping_error("token requests")
        await self.sync_inputs()
        self.grant.apply(renewal.Retry())
        joined = self._renewal is not None
        tokens = self.grant.tokens
        clock = self._ctx.clock
        now = clock()
        refused = tokens is not None and tokens.access_token is not None
        decision = renewal.decide(self.grant.state, now=now, min_ttl=0, asked_at=now, refused=refused)
        if decision.action is renewal.Action.RENEW:
            self._start_renewal()
        return LoginStarted(
            url="", user_code=None, joined=joined, opened_elsewhere=False, started_at=now, automatic=True
        )

    async def login_wait(self) -> TokenResult:
        if (idp := self.presenter.idp) is not None:
            await idp.login_wait()
            await self.sync_inputs()
            return await self.serve(0)
        if self.presenter.kind == "authorization_code":
            return await self.logins.wait()
        await self.settle()
        return await self.serve(0)

    async def login_complete(self, response: str) -> TokenResult:
        return await self.logins.complete(response)

    async def scope_insufficient(
        self, token: Secret | None, scopes: list[str], www_authenticate: str | None
    ) -> TokenResult:
        if self.presenter.kind != "authorization_code":
            # No person to consent to more: the grant asks for the scopes its config names.
            wanted = " ".join(scopes) or "more scope"
            raise WireError(
                "insufficient_scope",
                f"{self.label}: the server wants {wanted}, and this grant ({self.settings.grant}) asks for "
                "the scopes its config names; nobody is there to grant more",
                f"add them to auth.oauth21.scopes of {self.server.name}, then: ncp-broker reload",
            )
        return await self.logins.step_up(token, scopes, www_authenticate)

    async def logout(self) -> LogoutResult:
        return await _forget.logout(self)

    async def invalidate(self, what: Literal["tokens", "client", "all"]) -> InvalidateResult:
        return await _forget.invalidate(self, what)

    async def import_grant(self, item: ImportItem, *, replace: bool) -> Imported:
        return await _import.import_grant(self, item, replace=replace)

    def status(self) -> GrantState:
        return _status.status(self)
