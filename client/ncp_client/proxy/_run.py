"""The proxy's life: read the host's lines, forward them, and end cleanly.

One trio nursery holds everything: the loop reading standard input, one task per request in flight, the
GET stream, and a signal watcher. The loop ends on end of input; SIGTERM, SIGINT and SIGHUP end it too.
Either way the tasks are cancelled, the session is DELETEd (bounded) and the exit status is 0.

The server is found lazily, on the first message (and at start-up, to start the daemon and to report
problems early): the daemon's ``list`` gives its URL and kind. While that fails (the daemon is down and
cannot be started, the name is unknown) every request is answered with a JSON-RPC error carrying the
broker's hint, and the next message tries again.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import trio

from ncp_client._errors import BrokerError
from ncp_client.proxy._broker import BrokerLink, ServerAuth, Target
from ncp_client.proxy._http import LegacyServer, StreamableHttp
from ncp_client.proxy._jsonrpc import INVALID_REQUEST, Message, NotJsonRpc, error_line, parse
from ncp_client.proxy._legacy import LegacySse
from ncp_client.proxy._stdio import OVERSIZED, HostInput, HostOutput
from ncp_client.proxy._upstream import Upstream, UpstreamError

__all__ = ["DEFAULT_LOGIN_TIMEOUT", "DEFAULT_MAX_MESSAGE", "ProxyOptions", "run"]

DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
DEFAULT_LOGIN_TIMEOUT = 300.0
CONNECT_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 5.0

Transport = StreamableHttp | LegacySse


@dataclass(frozen=True)
class ProxyOptions:
    """What ``ncp-broker proxy`` was asked to do (see ``ncp-broker proxy --help`` and docs/proxy.md)."""

    server: str
    socket_path: Path
    transport: Literal["auto", "http", "sse"] = "auto"
    login_timeout: float | None = DEFAULT_LOGIN_TIMEOUT  # None: never start a login
    max_message_bytes: int = DEFAULT_MAX_MESSAGE
    verbose: bool = False
    autostart: Callable[[], str] | None = None  # starts the daemon, returns what to tell the person


class _Stderr:
    def __init__(self, server: str, verbose: bool) -> None:
        self._prefix = f"ncp-broker proxy ({server}): "
        self._verbose = verbose

    def say(self, text: str) -> None:
        sys.stderr.write(self._prefix + text + "\n")
        sys.stderr.flush()

    def debug(self, text: str) -> None:
        if self._verbose:
            self.say(text)


class Proxy:
    def __init__(
        self, opts: ProxyOptions, link: BrokerLink, host: HostOutput, client: httpx.AsyncClient, log: _Stderr
    ) -> None:
        self.opts, self.link, self.host, self.client, self.log = opts, link, host, client, log
        self.nursery: trio.Nursery | None = None
        self.transport: Transport | None = None
        self._resolving = trio.Lock()
        self._told: set[str] = set()

    # ---- finding the server -------------------------------------------------------------------------

    async def _find(self) -> Target:
        wanted = self.opts.server
        # A URL is matched by the daemon, by its one rule for "the same server" (brokerd.oauth.canonical_url).
        request: dict[str, Any] = {"op": "list", "url": wanted} if "://" in wanted else {"op": "list"}
        try:
            listing = await self.link.call(request)
        except BrokerError as exc:
            raise UpstreamError(f"ncp-broker: {exc.message}", broker_code=exc.code, hint=exc.hint) from None
        entries = listing.get("servers", []) if isinstance(listing, dict) else []
        found = [e for e in entries if isinstance(e, dict) and ("://" in wanted or e.get("name") == wanted)]
        if not found:
            hint = f"ncp-broker add NAME {wanted}" if "://" in wanted else f"ncp-broker add {wanted} URL"
            raise UpstreamError(
                f"ncp-broker knows no server {wanted!r} (see `ncp-broker list`)",
                broker_code="unknown_server",
                hint=hint,
            )
        entry = next((e for e in found if e.get("name") == wanted), found[0])
        name = str(entry["name"])
        if not isinstance(entry.get("url"), str):
            raise UpstreamError(
                f"{name} has no URL in the broker's config (a stdio server): nothing to proxy",
                broker_code="not_brokered",
                hint=f"ncp-broker add {name} URL",
            )
        return Target(name, entry["url"], str(entry.get("kind", "none")))

    async def _transport(self) -> Transport:
        async with self._resolving:
            if self.transport is not None:
                return self.transport
            target = await self._find()
            assert self.nursery is not None
            auth = ServerAuth(self.link, target, login_timeout=self.opts.login_timeout, say=self.log.say)
            up = Upstream(
                target.url,
                self.client,
                auth,
                self.host,
                self.log.say,
                self.log.debug,
                self.opts.max_message_bytes,
            )
            if self.opts.transport == "sse":
                legacy = LegacySse(up, self.nursery)
                await legacy.connect()
                self.transport = legacy
            else:
                self.transport = StreamableHttp(up, self.nursery, may_fall_back=self.opts.transport == "auto")
            self.log.debug(f"proxying to {target.url} ({target.kind}, transport {self.opts.transport})")
            return self.transport

    async def warm_up(self) -> None:
        """Start the daemon if needed and find the server now, so problems show at the host's start-up."""
        try:
            await self._transport()
        except UpstreamError as exc:
            self._tell(exc)

    def _tell(self, exc: UpstreamError) -> None:
        if exc.broker_code == "not_running":
            return  # the broker link says that itself, once per outage
        line = f"{exc.message} (run: {exc.hint})" if exc.hint else exc.message
        if line not in self._told:  # once per problem, not once per request
            self._told.add(line)
            self.log.say(line)

    # ---- the host's messages ------------------------------------------------------------------------

    async def handle(self, line: bytes) -> None:
        if line is OVERSIZED:
            limit = self.opts.max_message_bytes
            self.log.say(f"a message over {limit} bytes from the host was skipped (--max-message-bytes)")
            await self._answer(
                error_line(None, INVALID_REQUEST, f"ncp-broker proxy: message over {limit} bytes")
            )
            return
        try:
            message = parse(line)
        except NotJsonRpc as exc:
            self.log.say(f"the host sent a line that is not a JSON-RPC message: {exc}")
            await self._answer(error_line(None, exc.code, f"ncp-broker proxy: {exc}"))
            return
        self.log.debug(f"host → server: {message.kind} {message.method or ''} id={message.id!r}")
        try:
            transport = await self._transport()
            await self._send(transport, message)
        except UpstreamError as exc:
            self._tell(exc)
            for ident in message.request_ids():
                await self._answer(exc.answer(ident))

    async def _send(self, transport: Transport, message: Message) -> None:
        try:
            await transport.send(message)
        except LegacyServer as exc:
            assert isinstance(transport, StreamableHttp)
            assert self.nursery is not None
            self.log.say(f"{transport.up.name} answered a POST with {exc}: using HTTP+SSE (2024-11-05)")
            legacy = LegacySse(transport.up, self.nursery)
            try:
                await legacy.connect()
            except UpstreamError:
                self.transport = None  # the next message starts over: resolution, probe, fallback
                raise
            self.transport = legacy
            await legacy.send(message)

    async def _answer(self, line: bytes) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.host.send(line)

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.close()


async def _watch_signals(cancel: trio.CancelScope, log: _Stderr) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.debug(f"{signal.Signals(signum).name}: ending")
            cancel.cancel()
            return


async def _main(opts: ProxyOptions) -> int:
    log = _Stderr(opts.server, opts.verbose)
    link = BrokerLink(opts.socket_path, autostart=opts.autostart, say=log.say)
    host_in = HostInput(0, opts.max_message_bytes)
    host_out = HostOutput(1)
    timeout = httpx.Timeout(CONNECT_TIMEOUT, read=None)  # answers may take as long as a tool runs
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        proxy = Proxy(opts, link, host_out, client, log)
        async with trio.open_nursery() as nursery:
            proxy.nursery = nursery
            nursery.start_soon(_watch_signals, nursery.cancel_scope, log)
            nursery.start_soon(proxy.warm_up)
            async for line in host_in.lines():
                await proxy.handle(line)
            log.debug("end of input: ending")
            nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT):
            await proxy.close()
    await link.aclose()
    await host_in.aclose()
    await host_out.aclose()
    return 0


def run(opts: ProxyOptions) -> int:
    """Serve one host on standard input and output until it goes away; returns the exit status (0)."""
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines are every request's URL
    return trio.run(_main, opts)
