"""Login for one grant: browser, pasted code, device code, and step-up (A1-A9, D7).

:meth:`Logins.start` starts the flow (discovery from the server's 401, registration keyed by issuer,
authorization code + PKCE through the loopback listener, or the device grant) as a task of the daemon's
work nursery and returns once the authorization URL is known; :meth:`Logins.wait` awaits the outcome;
:meth:`Logins.complete` accepts a pasted code or redirect URL instead of the browser's callback. One login
at a time per grant: a second caller joins the pending one, and one browser tab serves them all.

A stop cancels a pending login (nobody will finish it in the browser now), but the code exchange, once
sent, is shielded like every exchange (DESIGN rule 10) and its tokens are saved before the task ends.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import trio

from brokerd import keys, oauth
from brokerd.browser import open_browser as open_browser_
from brokerd.callback import LOGIN_TIMEOUT, CallbackListener
from brokerd.grant._sources import CredentialError
from brokerd.secret import Secret
from brokerd.wire import LoginStarted, TokenResult, WireError

if TYPE_CHECKING:
    from brokerd.grant._actor import OAuthActor

__all__ = ["Logins"]

log = logging.getLogger("brokerd.grant")

URL_WAIT = 60.0
"""How long ``login`` waits for the authorization URL (discovery and registration) before giving up."""


@dataclass
class _Login:
    mode: Literal["browser", "paste", "device"]
    started_at: float
    scopes: tuple[str, ...] | None = None  # a step-up's scopes; None: choose them by discovery (A2)
    done: trio.Event = field(default_factory=trio.Event)
    error: WireError | None = None
    url: str | None = None
    user_code: str | None = None
    url_known: trio.Event = field(default_factory=trio.Event)
    pasted: trio.MemorySendChannel[str] | None = None
    opened: bool = False  # a browser was opened on the URL (by the daemon, or by the CLI that asked)
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)


def must_register(
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


class Logins:
    """The pending login of one grant, the last login's failure, and the step-up counts (A9)."""

    def __init__(self, actor: OAuthActor) -> None:
        self._actor = actor
        self.pending: _Login | None = None
        self.last_error: WireError | None = None
        # Authorization requests per requested scope set since the last login a person asked for (A9).
        self._authorizations: dict[frozenset[str], int] = {}

    def pending_error(self, login: _Login) -> WireError:
        actor = self._actor
        where = f" at {login.url}" if login.url else ""
        return WireError(
            "login_in_progress",
            f"{actor.label}: a login is in progress{where}",
            f"finish it in the browser, or run: ncp-broker login {actor.server.name}",
        )

    def cancel(self) -> None:
        """The daemon stops: end the pending login (its code exchange, if sent, still finishes)."""
        if self.pending is not None:
            self.pending.cancel_scope.cancel()

    async def start(
        self,
        mode: Literal["browser", "paste", "device"],
        *,
        open_browser: bool = False,
        will_open: bool = False,
        scopes: tuple[str, ...] | None = None,
    ) -> LoginStarted:
        """Start a login (or join the pending one) and return its authorization URL.

        ``scopes`` marks a step-up (see :meth:`step_up`); any other login is a person's (or a host's first
        use) and starts the count of authorization requests afresh. With ``open_browser`` the daemon opens
        the URL itself; when it cannot, the answer is ``needs_login`` and the login stays pending for
        ``ncp-broker login`` to join. ``will_open``: the caller opens it. Either way, a login that has a
        browser open already is not opened again (``opened_elsewhere`` in the answer).

        Raises:
            WireError: ``stopping``; the login failed before its URL was known; ``needs_login`` when the
                daemon was to open a browser and could not.
        """
        actor = self._actor
        await actor.grant.load()
        joined = self.pending is not None
        if self.pending is None:
            if actor.closed:
                raise actor.stopping_error("logins")
            if scopes is None:
                self._authorizations.clear()
            self.pending = _Login(mode=mode, started_at=actor.ctx.clock(), scopes=scopes)
            actor.ctx.nursery.start_soon(self._run, self.pending)
        login = self.pending
        with trio.move_on_after(URL_WAIT):
            await login.url_known.wait()  # set when the URL is known, or when the login ends early
        if login.error is not None:
            raise login.error
        if login.url is None:
            raise WireError("as_unreachable", f"{actor.label}: the login did not start within {URL_WAIT:g} s")
        # Whoever woke first may have claimed the browser, the login's creator included: check the flag.
        opened_elsewhere = login.opened
        if login.mode == "browser" and not opened_elsewhere:
            if will_open:
                login.opened = True  # the caller (ncp-broker login, ncp-token) opens it
            elif open_browser:
                # Claimed before the await: callers that woke with this one must not open a second tab.
                login.opened = True
                if not await open_browser_(login.url, policy=actor.policy):
                    login.opened = False
                    raise WireError(
                        "needs_login",
                        f"{actor.label}: a login is waiting at {login.url}, but the daemon could not open "
                        "a browser",
                        f"open that URL, or run: ncp-broker login {actor.server.name}",
                    )
        return LoginStarted(
            url=login.url,
            user_code=login.user_code,
            joined=joined,
            opened_elsewhere=opened_elsewhere,
            started_at=login.started_at,
        )

    async def wait(self) -> TokenResult:
        """Wait for the pending login; answer with the token (or the login's failure)."""
        actor = self._actor
        login = self.pending
        if login is not None:
            await login.done.wait()
            if login.error is not None:
                raise login.error
        elif actor.grant.tokens is None and self.last_error is not None:
            raise self.last_error  # the login ended before this caller started waiting
        return await actor.serve(0)

    async def complete(self, response: str) -> TokenResult:
        """Finish the pending login with a pasted code or redirect URL."""
        login = self.pending
        if login is None or login.pasted is None:
            raise WireError("bad_request", f"{self._actor.label}: no login is waiting for a pasted code")
        try:
            login.pasted.send_nowait(response)  # one answer per login; never wait on the channel
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            raise WireError(
                "bad_request",
                f"{self._actor.label}: a code was pasted for this login already; its outcome follows",
                f"wait for it, or start again: ncp-broker login {self._actor.server.name} --no-browser",
            ) from None
        login.pasted.close()
        return await self.wait()

    async def step_up(
        self, token: Secret | None, scopes: list[str], www_authenticate: str | None
    ) -> TokenResult:
        """Step-up (A9): re-authorize with the union of the held and the challenged scopes, opening the
        browser; answers with the new token. At most :data:`oauth.MAX_AUTHORIZATIONS` authorization
        requests per scope set, the first login included, until a person runs ``ncp-broker login``."""
        actor = self._actor
        grant = actor.grant
        await grant.load()
        if self.pending is None:
            tokens = grant.tokens
            if tokens is None:
                raise actor.needs_login("not logged in")
            if token is not None and tokens.access_token != token:
                return await actor.serve(0)  # someone stepped up already: try the newer token
            header = (("www-authenticate", www_authenticate),) if www_authenticate is not None else ()
            want = oauth.step_up_scopes(tokens.scopes, oauth.HttpResponse(403, header))
            if scopes:
                want = tuple(dict.fromkeys((*(want or tokens.scopes), *scopes)))
            if want is None:
                raise WireError(
                    "bad_request",
                    f'{actor.label}: not a step-up: the 403 names no scope with error="insufficient_scope"',
                    "send scopes, or the 403's WWW-Authenticate header; see docs/protocol.md",
                )
            if self._authorizations.get(frozenset(want), 0) >= oauth.MAX_AUTHORIZATIONS:
                raise WireError(
                    "insufficient_scope",
                    f"{actor.label}: the server still refuses for lack of scope after "
                    f"{oauth.MAX_AUTHORIZATIONS} authorizations for {' '.join(want)}",
                    f"check the account's permissions, then: ncp-broker login {actor.server.name}",
                )
            await self.start("browser", open_browser=True, scopes=want)
        return await self.wait()

    # ---- the login task ---------------------------------------------------------------------------

    async def _run(self, login: _Login) -> None:
        actor = self._actor
        grant = actor.grant
        logged_in = False
        try:
            with login.cancel_scope:
                port = actor.settings.callback_port or 0
                async with actor.ctx.hub.listener(port=port) as listener:
                    await self._authorize(login, listener)  # its tokens are saved and taken in its shield
                    logged_in = True
                    self.last_error = None
                    log.info("%s: logged in", actor.label)
        except (oauth.OAuthError, CredentialError) as exc:
            login.error = self.last_error = WireError(
                "needs_login",
                f"{actor.label}: login failed: {exc.message}",
                exc.hint or f"ncp-broker login {actor.server.name}",
            )
            grant.note_error("login_failed", f"login failed: {exc.message}")
            log.warning("%s: login failed: %s", actor.label, exc.message)
        except Exception:
            log.exception("%s: login crashed", actor.label)
            login.error = WireError("internal", f"{actor.label}: login failed; see the daemon's log")
        finally:
            if actor.closed and not logged_in:
                login.error = actor.stopping_error("logins")  # whatever it broke on on the way out
            self.pending = None
            login.url_known.set()
            login.done.set()

    async def _client(
        self, discovery: oauth.Discovery, scopes: tuple[str, ...] | None, redirect_uri: str
    ) -> oauth.Registration:
        """The client registered at this issuer, registering one first if there is none that fits
        (saved in the registration's shield: a client the server made is never forgotten)."""
        actor = self._actor
        grant = actor.grant
        settings = actor.settings
        registration = grant.registrations.get(discovery.issuer)
        if registration is not None and not must_register(registration, scopes, redirect_uri):
            return registration
        issuer = discovery.issuer

        async def keep_client(registered: oauth.Registration) -> None:
            grant.registrations[issuer] = registered
            await grant.save()

        return await actor.drive(
            oauth.register(
                discovery,
                policy=actor.policy,
                redirect_uris=[redirect_uri],
                now=actor.ctx.clock(),
                client_id=settings.client_id,
                client_secret=settings.client_secret,
                client_metadata_url=settings.client_metadata_url,
                auth_method=settings.token_endpoint_auth_method,
                private_key=settings.private_key is not None,
                # No `scope`: it would cap what the client may ever ask for, and a step-up beyond it
                # would need a new client id, which ends the MCP session on servers that bind
                # sessions to the client.
            ),
            keep=keep_client,
        )

    async def _authorize(self, login: _Login, listener: CallbackListener) -> None:
        """Log in: the tokens (and the DPoP key they are bound to, a new one per login, E3) are saved
        and taken in the same shield as the exchange that bought them, so a stop or a cancelled login
        between the answer and the save cannot lose the grant (DESIGN rule 10)."""
        actor = self._actor
        grant = actor.grant
        settings = actor.settings
        discovery, challenges = await actor.probe()
        # Before registering: no client at a server whose DPoP offer this config refuses.
        dpop_key = keys.new_dpop_key() if oauth.wants_dpop(settings.dpop, discovery, challenges) else None
        scopes = login.scopes or oauth.select_scopes(discovery, settings.scopes)
        key = frozenset(scopes or ())
        self._authorizations[key] = self._authorizations.get(key, 0) + 1
        if login.mode != "device":
            oauth.require_s256(discovery)  # before registering: no client at a server we will not use (A1)
        registration = await self._client(discovery, scopes, listener.redirect_uri)
        sender = await actor.presenter.sender(dpop_key)

        async def keep(tokens: oauth.TokenSet) -> None:
            await grant.save(tokens, dpop_key)
            grant.take(tokens, dpop_key=dpop_key)

        if login.mode == "device":
            if discovery.device_authorization_endpoint is None:
                raise oauth.PolicyError(
                    f"{discovery.issuer} does not offer the device authorization grant",
                    hint=f"log in with the browser: ncp-broker login {actor.server.name}",
                )

            async def on_device_code(effect: oauth.ShowDeviceCode) -> None:
                login.url = effect.verification_uri_complete or effect.verification_uri
                login.user_code = effect.user_code
                login.url_known.set()

            await actor.drive(
                oauth.device_flow(discovery, registration, policy=actor.policy, scopes=scopes, sender=sender),
                on_device_code=on_device_code,
                keep=keep,
            )
            return

        async def on_redirect(effect: oauth.AwaitRedirect) -> Mapping[str, str]:
            send_pasted, receive_pasted = trio.open_memory_channel[str](1)
            login.pasted = send_pasted
            login.url = effect.authorization_url
            login.url_known.set()
            # The browser's callback or a pasted answer, whichever comes first. Each outcome, error or
            # not, is kept rather than raised inside the nursery: two at once (the listener closing as
            # the daemon stops, say) must not become an exception group nobody handles.
            outcomes: list[Mapping[str, str] | oauth.OAuthError] = []

            async def from_listener() -> Mapping[str, str]:
                return await listener.expect(effect.state, timeout=LOGIN_TIMEOUT, issuer=discovery.issuer)

            async def from_paste() -> Mapping[str, str]:
                text = await receive_pasted.receive()
                return oauth.parse_pasted_response(text, effect.redirect_uri, effect.state)

            async with trio.open_nursery() as nursery:

                async def first(source: Callable[[], Awaitable[Mapping[str, str]]]) -> None:
                    try:
                        outcomes.append(await source())
                    except oauth.OAuthError as exc:
                        outcomes.append(exc)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(first, from_listener)
                nursery.start_soon(first, from_paste)
            if isinstance(outcomes[0], oauth.OAuthError):
                raise outcomes[0]
            return outcomes[0]

        await actor.drive(
            oauth.authorization_code_flow(
                discovery,
                registration,
                policy=actor.policy,
                redirect_uri=listener.redirect_uri,
                scopes=scopes,
                entropy=actor.ctx.entropy,
                sender=sender,
            ),
            on_redirect=on_redirect,
            keep=keep,
        )
