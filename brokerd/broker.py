"""The daemon's state and its answers to requests, independent of sockets.

:class:`Broker` holds the config, one actor per grant and the store. :meth:`Broker.handle` turns a decoded
request into a result (a msgspec-encodable value) or raises :class:`~brokerd.wire.WireError`. The socket
server (``brokerd.server``) calls it once per frame; tests call it directly.

Names and grants (DESIGN rule 11): config entries that name one server (one canonical URL) are aliases of
one grant and reach one actor. Entries that name one server with different settings are all refused with
``config_conflict``, naming the entries and the keys in which they differ; every other server works.

A reload keeps every actor whose server is still configured, with its grant, its timer and any renewal in
flight: new settings apply from the next login. An OAuth actor whose server left the config is closed (it
starts no new exchange; one in flight finishes and is saved) and kept aside, so that should the server
come back in a later reload, the same actor — the one writer of that grant — takes it up again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec
import trio

from brokerd import __version__, config, ncp_import, wire
from brokerd.actors import Actor, BearerActor, ConflictActor, OAuthUnavailableActor, UnbrokeredActor
from brokerd.grant import IdpRegistry, OAuthActor, OAuthContext
from brokerd.oauth import canonical_url
from brokerd.resource_requests import ResourceRequest, resource_request
from brokerd.store import Store

__all__ = ["Broker"]

_WithAliases = TypeVar("_WithAliases", wire.LoginStarted, wire.LogoutResult, wire.InvalidateResult)

log = logging.getLogger("brokerd")

_STOPPING_REFUSES = (
    wire.Login,
    wire.LoginComplete,
    wire.Logout,
    wire.Invalidate,
    wire.ImportNcp,
    wire.SetAccessKey,
    wire.Reload,
)


class Broker:
    def __init__(
        self,
        cfg: config.Config,
        store: Store,
        *,
        oauth: OAuthContext | None = None,
        socket_path: Path,
        store_description: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = cfg
        self.store = store
        self.oauth = oauth
        self.socket_path = socket_path
        self.store_description = store_description
        self.clock = clock
        self.started_at = clock()
        self.shutdown_requested = trio.Event()
        self.stopping = False
        self.actors: dict[str, Actor] = {}  # by config name; aliases share one actor
        self._grants: dict[str, Actor] = {}  # by canonical server URL
        self._retired: dict[str, Actor] = {}  # OAuth actors whose server left the config, by URL
        # The enterprise IdP grants (E2), one per issuer, shared by every server that names it.
        self._idps = IdpRegistry(store, oauth) if oauth is not None else None
        self._apply(cfg)

    # ---- config -------------------------------------------------------------------------------------

    def _make(self, server: config.Server, aliases: tuple[str, ...]) -> Actor:
        if server.kind == "bearer":
            return BearerActor(server, self.store, aliases)
        if self.oauth is None:
            return OAuthUnavailableActor(server, aliases)
        return OAuthActor(server, self.store, self.oauth, aliases, idps=self._idps)

    def _apply(self, cfg: config.Config) -> None:
        actors: dict[str, Actor] = {}
        grants: dict[str, Actor] = {}
        for group in cfg.grants():
            first = group.members[0]
            if conflicts := group.conflicts:
                actor: Actor = ConflictActor(first, group.names, conflicts)
                log.error("%s", actor.status().detail)
            else:
                # The actor that owns this grant already, if any: live, or retired by an earlier reload.
                candidates = (self._retired.get(group.key), self._grants.get(group.key))
                old = next((a for a in candidates if a is not None and a.accepts(first)), None)
                if old is not None:
                    old.reconfigure(first, group.names)
                    if self._retired.pop(group.key, None) is old:
                        old.reopen()
                    actor = old
                else:
                    actor = self._make(first, group.names)
                    if self.oauth is not None:
                        self.oauth.nursery.start_soon(actor.start)
            grants[group.key] = actor
            actors.update(dict.fromkeys(group.names, actor))
        for name, server in cfg.servers.items():
            if name not in actors:
                actors[name] = UnbrokeredActor(server)
        for key, old in self._grants.items():
            if grants.get(key) is not old and old.keeps_a_grant:
                old.close()
                self._retired[key] = old
        self.config = cfg
        self.actors = actors
        self._grants = grants

    def reload(self) -> wire.ReloadResult:
        """Re-read the config file; on any error keep the running config.

        Raises:
            WireError: ``config_error`` naming the file, JSON path and problem.
        """
        path = self.config.path
        if path is None:
            raise wire.WireError("config_error", "this daemon was started without a config file")
        try:
            cfg = config.load(path)
        except config.ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            raise wire.WireError(
                "config_error", f"reload refused, the running config stays: {exc}", f"fix {path}"
            ) from None
        before = self.config.servers
        self._apply(cfg)
        after = cfg.servers
        summary = wire.ReloadResult(
            added=sorted(after.keys() - before.keys()),
            removed=sorted(before.keys() - after.keys()),
            changed=sorted(n for n in before.keys() & after.keys() if before[n] != after[n]),
        )
        log.info("config reloaded from %s: %s", path, summary)
        return summary

    def begin_stop(self) -> None:
        """Stop taking new exchanges: every grant is closed (what is in flight finishes), and requests that
        would start an exchange or change a grant get ``stopping``. What is held is still served."""
        if self.stopping:
            return
        self.stopping = True
        for actor in {id(a): a for a in (*self._grants.values(), *self._retired.values())}.values():
            actor.close()
        if self._idps is not None:
            self._idps.close()

    # ---- requests -----------------------------------------------------------------------------------

    def _actor(self, name: str) -> Actor:
        actor = self.actors.get(name)
        if actor is None:
            known = ", ".join(sorted(self.actors)) or "none"
            raise wire.WireError(
                "unknown_server",
                f"no server named {name!r} in {self.config.path or 'the config'} (configured: {known})",
                f"ncp-broker add {name} URL --oauth   (or --access-key -)",
            )
        return actor

    def answer_now(self, req: wire.Request) -> wire.Result | None:
        """What :meth:`handle` would answer to ``req`` at this moment, when that can be known without
        waiting or I/O (the socket server's answer-at-once path); None when only ``handle`` can answer.

        Raises:
            WireError: as ``handle`` would (``unknown_server``).
        """
        match req:
            case wire.GetToken(server=name, min_ttl=min_ttl):
                ttl = wire.DEFAULT_MIN_TTL if min_ttl is None else max(0.0, min_ttl)
                actor = self._actor(name)
                result = actor.token_now(ttl)
                if result is None:
                    return None
                # A DPoP proof is made by get_token (a fresh one per request); the origin is checked first.
                named = self._request(actor, req)
                if named is not None and result.token_type != "Bearer":  # noqa: S105 - a token type
                    return None
                return result
            case wire.Hello(protocol=wire.PROTOCOL_VERSION) | wire.Status() | wire.ListServers():
                return self._answer(req)
        return None

    async def handle(self, req: wire.Request) -> wire.Result:
        if self.stopping and isinstance(req, _STOPPING_REFUSES):
            raise wire.WireError(
                "stopping",
                "ncp-broker is stopping: it finishes what is in flight and takes nothing new",
                "wait for it to stop, then: ncp-broker start",
            )
        match req:
            case wire.GetToken(server=name, min_ttl=min_ttl):
                ttl = wire.DEFAULT_MIN_TTL if min_ttl is None else max(0.0, min_ttl)
                actor = self._actor(name)
                return await actor.get_token(ttl, request=self._request(actor, req))
            case wire.TokenRejected(server=name, token=token, www_authenticate=header):
                actor = self._actor(name)
                return await actor.token_rejected(token, header, request=self._request(actor, req))
            case wire.ScopeInsufficient(server=name, token=token, scopes=scopes, www_authenticate=header):
                return await self._actor(name).scope_insufficient(token, scopes, header)
            case wire.Hello() | wire.Status() | wire.ListServers():
                return self._answer(req)
            case wire.Reload():
                return self.reload()
            case wire.SetAccessKey(server=name, key=key):
                await self._actor(name).set_access_key(key)
                return wire.StoredResult()
            case wire.Login(server=name, mode=mode, open_browser=opens, will_open=will_open):
                started = await self._actor(name).login(mode, open_browser=opens, will_open=will_open)
                return self._with_aliases(name, started)
            case wire.LoginWait(server=name):
                return await self._actor(name).login_wait()
            case wire.LoginComplete(server=name, response=response):
                return await self._actor(name).login_complete(response.reveal())
            case wire.Logout(server=name):
                return self._with_aliases(name, await self._actor(name).logout())
            case wire.Invalidate(server=name, what=what):
                return self._with_aliases(name, await self._actor(name).invalidate(what))
            case wire.ImportNcp(directory=directory, replace=replace):
                return await self.import_ncp(Path(directory), replace=replace)
            case wire.Shutdown():
                self.begin_stop()
                self.shutdown_requested.set()
                return wire.ShutdownResult()
        raise AssertionError(f"unhandled request {type(req).__name__}")  # pragma: no cover

    def _answer(self, req: wire.Hello | wire.Status | wire.ListServers) -> wire.Result:
        """The requests answered from memory alone."""
        match req:
            case wire.Hello(protocol=protocol):
                if protocol != wire.PROTOCOL_VERSION:
                    raise wire.WireError(
                        "unsupported_protocol",
                        f"this daemon speaks protocol {wire.PROTOCOL_VERSION}, not {protocol}",
                        "upgrade the client or the daemon so that both match",
                    )
                return wire.HelloResult(
                    protocol=wire.PROTOCOL_VERSION,
                    version=__version__,
                    pid=os.getpid(),
                    stopping=self.stopping,
                )
            case wire.Status(server=name):
                names = [name] if name is not None else list(self.actors)
                servers = [self._server_status(n) for n in names]
                return wire.StatusResult(daemon=self._daemon_status(), servers=servers)
            case wire.ListServers(url=url):
                names = list(self.actors) if url is None else self.find(url)
                return wire.ListResult(servers=[self._listing(name) for name in names])
        raise AssertionError(f"not answered from memory: {type(req).__name__}")  # pragma: no cover

    @staticmethod
    def _request(actor: Actor, req: wire.GetToken | wire.TokenRejected) -> ResourceRequest | None:
        """The HTTP request ``req`` names its token for, checked to be at the server's origin.

        Raises:
            WireError: ``bad_request``: malformed, or a URL at another origin.
        """
        return resource_request(
            actor.server.url or "", method=req.method, url=req.url, nonce=req.dpop_nonce, label=actor.label
        )

    def _with_aliases(self, name: str, result: _WithAliases) -> _WithAliases:
        """``result`` with the other names of the grant the request acted on, so the answer can say so."""
        others = [a for a in self._actor(name).aliases if a != name]
        return msgspec.structs.replace(result, aliases=others)

    async def import_ncp(self, directory: Path, *, replace: bool) -> wire.ImportResult:
        """``ncp-broker import-ncp``: read NCP's files, then hand each matched grant to its server's actor
        (one writer per grant). Files that match no configured OAuth server are listed, never guessed."""
        if not directory.is_absolute():
            raise wire.WireError("bad_request", f"import_ncp needs an absolute directory, not {directory}")
        # One entry per grant: an NCP file of a server listed under two names is that one server's.
        servers = {g.names[0]: g.members[0] for g in self.config.grants() if not g.conflicts}
        try:
            plan = await trio.to_thread.run_sync(
                lambda: ncp_import.scan(directory, servers, now=self.clock())
            )
        except ncp_import.NcpImportError as exc:
            raise wire.WireError("bad_request", str(exc), "ncp-broker import-ncp DIRECTORY") from None
        results = [await self._actor(item.server).import_grant(item, replace=replace) for item in plan.items]
        skipped = [
            wire.ImportSkipped(file=str(s.path), kind=s.kind, reason=s.reason, server=s.server)
            for s in plan.skipped
        ]
        return wire.ImportResult(
            directory=str(plan.auth_dir), imported=results, skipped=skipped, not_found=list(plan.not_found)
        )

    def _daemon_status(self) -> wire.DaemonStatus:
        return wire.DaemonStatus(
            pid=os.getpid(),
            version=__version__,
            protocol=wire.PROTOCOL_VERSION,
            socket=str(self.socket_path),
            config=str(self.config.path) if self.config.path else None,
            store=self.store_description,
            started_at=self.started_at,
            stopping=self.stopping,
        )

    def _listing(self, name: str) -> wire.Listing:
        actor = self._actor(name)
        server = self.config.servers[name]
        return wire.Listing(
            name=name,
            url=server.url,
            kind=server.kind,
            brokered=server.kind != "none",
            aliases=[a for a in actor.aliases if a != name],
        )

    def _server_status(self, name: str) -> wire.ServerStatus:
        listing = msgspec.structs.asdict(self._listing(name))
        grant = msgspec.structs.asdict(self._actor(name).status())
        return wire.ServerStatus(**listing, **grant)

    def find(self, url: str) -> list[str]:
        """The configured names whose URL names the same server as ``url``."""
        try:
            wanted = canonical_url(url)
        except ValueError:
            return []
        return [s.name for s in self.config.find_by_url(wanted)]
