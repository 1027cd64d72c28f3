"""The daemon's state and its answers to requests, independent of sockets.

:class:`Broker` holds the config, one actor per server and the store. :meth:`Broker.handle` turns a decoded
request into a result (a msgspec-encodable value) or raises :class:`~brokerd.wire.WireError`. The socket
server (``brokerd.server``) calls it once per frame; tests call it directly.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from brokerd import __version__, config, ncp_import, wire
from brokerd.actors import Actor, BearerActor, make_actor
from brokerd.grant import OAuthActor, OAuthContext
from brokerd.store import Store

__all__ = ["Broker"]

log = logging.getLogger("brokerd")


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
        self.actors: dict[str, Actor] = {}
        self._apply(cfg)

    # ---- config -------------------------------------------------------------------------------------

    def _apply(self, cfg: config.Config) -> None:
        actors: dict[str, Actor] = {}
        for name, server in cfg.servers.items():
            old = self.actors.get(name)
            if old is not None and old.accepts(server):
                actors[name] = old
                continue
            new = make_actor(server, self.store, self.oauth)
            if isinstance(old, OAuthActor) and isinstance(new, OAuthActor) and old.server.url == server.url:
                new.adopt(old)  # same grant, new settings: one writer, never two
            actors[name] = new
        for name, old in self.actors.items():
            if isinstance(old, OAuthActor) and actors.get(name) is not old:
                old.close()
        self.config = cfg
        self.actors = actors

    def reload(self) -> dict[str, Any]:
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
        before = set(self.actors)
        kept = {
            name
            for name, actor in self.actors.items()
            if name in cfg.servers and actor.accepts(cfg.servers[name])
        }
        self._apply(cfg)
        after = set(self.actors)
        summary = {
            "added": sorted(after - before),
            "removed": sorted(before - after),
            "changed": sorted((before & after) - kept),
        }
        log.info("config reloaded from %s: %s", path, summary)
        return summary

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

    async def handle(self, req: wire.Request) -> Any:
        match req:
            case wire.GetToken(server=name, min_ttl=min_ttl):
                ttl = wire.DEFAULT_MIN_TTL if min_ttl is None else max(0.0, min_ttl)
                answer = await self._actor(name).get_token(ttl)
                return answer.as_result(self.clock())
            case wire.TokenRejected(server=name, token=token, www_authenticate=header):
                answer = await self._actor(name).token_rejected(token, header)
                return answer.as_result(self.clock())
            case wire.ScopeInsufficient(server=name, token=token, scopes=scopes, www_authenticate=header):
                answer = await self._oauth_actor(name).scope_insufficient(token, scopes, header)
                return answer.as_result(self.clock())
            case wire.Hello(protocol=protocol):
                if protocol != wire.PROTOCOL_VERSION:
                    raise wire.WireError(
                        "unsupported_protocol",
                        f"this daemon speaks protocol {wire.PROTOCOL_VERSION}, not {protocol}",
                        "upgrade the client or the daemon so that both match",
                    )
                return {"protocol": wire.PROTOCOL_VERSION, "version": __version__, "pid": os.getpid()}
            case wire.Status(server=name):
                names = [name] if name is not None else list(self.actors)
                return {"daemon": self._daemon_status(), "servers": [self._server_status(n) for n in names]}
            case wire.ListServers():
                return {"servers": [self._listing(a) for a in self.actors.values()]}
            case wire.Reload():
                return self.reload()
            case wire.SetAccessKey(server=name, key=key):
                actor = self._actor(name)
                if not isinstance(actor, BearerActor):
                    raise wire.WireError(
                        "bad_request",
                        f"{name} is not a bearer server; access keys are only for auth type bearer",
                        f"ncp-broker add {name} URL --access-key -",
                    )
                await actor.set_key(key)
                return {"stored": True}
            case wire.Login(server=name, mode=mode, open_browser=opens, will_open=will_open):
                return await self._oauth_actor(name).login(mode, open_browser=opens, will_open=will_open)
            case wire.LoginWait(server=name):
                answer = await self._oauth_actor(name).login_wait()
                return answer.as_result(self.clock())
            case wire.LoginComplete(server=name, response=response):
                answer = await self._oauth_actor(name).login_complete(response.reveal())
                return answer.as_result(self.clock())
            case wire.Logout(server=name):
                actor = self._actor(name)
                if isinstance(actor, OAuthActor):
                    return await actor.logout()
                if isinstance(actor, BearerActor):
                    return await actor.forget_key()
                raise wire.WireError("not_brokered", f"{name} holds no credentials to log out of")
            case wire.Invalidate(server=name, what=what):
                actor = self._actor(name)
                if isinstance(actor, OAuthActor):
                    return await actor.invalidate(what)
                if isinstance(actor, BearerActor) and what != "client":
                    result = await actor.forget_key()
                    return {"forgot": ["tokens"] if result["had_grant"] else [], "saved": True}
                held = "client registration" if what == "client" else "credentials"
                raise wire.WireError("not_brokered", f"{name} holds no {held} to invalidate")
            case wire.ImportNcp(directory=directory, replace=replace):
                return await self.import_ncp(Path(directory), replace=replace)
            case wire.Shutdown():
                self.shutdown_requested.set()
                return {"stopping": True}
        raise AssertionError(f"unhandled request {type(req).__name__}")  # pragma: no cover

    async def import_ncp(self, directory: Path, *, replace: bool) -> dict[str, Any]:
        """``ncp-broker import-ncp``: read NCP's files, then hand each matched grant to its server's actor
        (one writer per grant). Files that match no configured OAuth server are listed, never guessed."""
        if not directory.is_absolute():
            raise wire.WireError("bad_request", f"import_ncp needs an absolute directory, not {directory}")
        try:
            plan = await trio.to_thread.run_sync(
                lambda: ncp_import.scan(directory, self.config.servers, now=self.clock())
            )
        except ncp_import.NcpImportError as exc:
            raise wire.WireError("bad_request", str(exc), "ncp-broker import-ncp DIRECTORY") from None
        results = []
        for item in plan.items:
            actor = self.actors.get(item.server)
            if isinstance(actor, OAuthActor):  # the scan matched only OAuth servers; the actor may differ
                results.append(await actor.import_grant(item, replace=replace))
        return {
            "directory": str(plan.auth_dir),
            "imported": results,
            "skipped": [
                {"file": str(s.path), "kind": s.kind, "reason": s.reason, "server": s.server}
                for s in plan.skipped
            ],
            "not_found": list(plan.not_found),
        }

    def _oauth_actor(self, name: str) -> OAuthActor:
        actor = self._actor(name)
        if not isinstance(actor, OAuthActor):
            kind = actor.server.kind
            raise wire.WireError(
                "bad_request" if kind != "oauth" else "login_unavailable",
                f"{name} is not an OAuth server (auth type: {kind}); there is nothing to log in to",
                f"ncp-broker add {name} {actor.server.url or 'URL'} --oauth",
            )
        return actor

    def _daemon_status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "version": __version__,
            "protocol": wire.PROTOCOL_VERSION,
            "socket": str(self.socket_path),
            "config": str(self.config.path) if self.config.path else None,
            "store": self.store_description,
            "started_at": self.started_at,
        }

    def _listing(self, actor: Actor) -> dict[str, Any]:
        s = actor.server
        return {"name": s.name, "url": s.url, "kind": s.kind, "brokered": s.kind != "none"}

    def _server_status(self, name: str) -> dict[str, Any]:
        actor = self._actor(name)
        return {**self._listing(actor), **actor.status()}
