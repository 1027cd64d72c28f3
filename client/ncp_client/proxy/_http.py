"""Streamable HTTP (MCP 2025-03-26 to 2026-07-28), client side, carrying the host's messages as they are.

Each host message is POSTed as the bytes the host wrote, with ``Accept: application/json,
text/event-stream`` and the headers :mod:`~ncp_client.proxy._headers` derives; each server message is
written to the host as the server sent it, on one line. Nothing is parsed into a model, re-encoded or
renumbered; the proxy reads the bodies only for what the transport needs:

* the ``initialize`` answer: its ``Mcp-Session-Id`` header (sent on every later request, ``DELETE``\\ d when
  the host goes away) and ``protocolVersion`` (sent as ``MCP-Protocol-Version``);
* ``tools/list`` answers: the tools' ``x-mcp-header`` annotations; at 2026-07-28 a tool with an invalid one
  is left out of the answer, as the specification requires of an HTTP client (the only rewrite);
* an SSE answer that ends before its response: resumed with ``GET`` and ``Last-Event-ID`` after the
  server's ``retry`` (up to :data:`MAX_RESUMES` times), as 2025-11-25 SEP-1699 describes;
* after ``notifications/initialized`` (sessions only, before 2026-07-28): the ``GET`` stream for the
  server's own requests and notifications, reopened with ``Last-Event-ID``; a 405 means the server has none;
* a host's ``notifications/cancelled`` at 2026-07-28 closes that request's stream instead of being POSTed
  (that revision has no client notifications over HTTP: closing the stream is the cancellation).

A request that fails (server unreachable, HTTP error, broker problem) gets a JSON-RPC error answer with the
reason; the next request tries afresh. A 4xx whose body is a JSON-RPC error goes to the host as the
server's answer (with the request's id when the server could not read it).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from ncp_client.proxy._headers import ToolHeaders, is_modern, meta_version, request_headers
from ncp_client.proxy._jsonrpc import INTERNAL_ERROR, Message, error_line, id_key, single_line
from ncp_client.proxy._sse import EventTooLarge, events, is_event_stream
from ncp_client.proxy._upstream import Upstream, UpstreamError, challenge, jsonrpc_error_body, read_capped

__all__ = ["MAX_RESUMES", "LegacyServer", "StreamableHttp"]

MAX_RESUMES = 3  # reconnections of one answer stream that bring no event, before the request fails
DEFAULT_RETRY_MS = 1000  # when the server sent no `retry` (the MCP SDKs' default)
MAX_GET_FAILURES = 5
CLOSE_TIMEOUT = 3.0
_ACCEPT = "application/json, text/event-stream"


class LegacyServer(Exception):
    """The first POST was answered 400/404/405 without a JSON-RPC error: an HTTP+SSE (2024-11-05) server."""


class StreamableHttp:
    """One host's connection to one server over Streamable HTTP."""

    def __init__(self, up: Upstream, nursery: trio.Nursery, *, may_fall_back: bool) -> None:
        self.up = up
        self.nursery = nursery
        self.may_fall_back = may_fall_back
        self.session_id: str | None = None
        self.negotiated: str | None = None
        self.tools = ToolHeaders()
        self._first = True
        self._get_started = False
        self._pending: dict[str, tuple[str | None, str | None]] = {}  # id → (method, version) in flight
        self._scopes: dict[str, trio.CancelScope] = {}

    # ---- host → server ------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Forward one host message; requests run in their own task (raises LegacyServer, see class doc)."""
        first, self._first = self._first, False
        if message.kind in ("request", "batch"):
            if first and self.may_fall_back:
                await self.nursery.start(self._request, message, True)
            else:
                self.nursery.start_soon(self._request, message, False)
            return
        if message.method == "notifications/cancelled" and self._cancelled(message):
            return
        await self._post_only(message)
        if message.method == "notifications/initialized":
            self._start_get_stream()

    def _version(self, message: Message) -> str | None:
        return meta_version(message.params) or self.negotiated

    def _cancelled(self, message: Message) -> bool:
        """At 2026-07-28 a cancellation closes the request's stream and is not POSTed (True)."""
        if not is_modern(self._version(message)):
            return False
        scope = self._scopes.get(id_key(message.params.get("requestId")))
        if scope is not None:
            self.up.debug("cancelled by the host: closing the request's stream")
            scope.cancel()
        return True

    def _headers(self, message: Message | None, accept: str = _ACCEPT) -> dict[str, str]:
        headers = {"Accept": accept}
        if message is not None:
            headers["Content-Type"] = "application/json"
            headers.update(request_headers(message.method, message.params, self.negotiated, self.tools))
        elif self.negotiated is not None:
            headers["MCP-Protocol-Version"] = self.negotiated
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        return headers

    async def _post(self, message: Message) -> httpx.Response:
        return await self.up.open_authorized("POST", self.up.url, self._headers(message), message.raw)

    async def _request(
        self, message: Message, probe: bool, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        keys = [id_key(i) for i in message.request_ids()]
        scope = trio.CancelScope()
        for key in keys:
            self._pending[key] = (message.method, self._version(message))
            self._scopes[key] = scope
        started = False
        try:
            with scope:
                try:
                    response = await self._post(message)
                except UpstreamError as exc:
                    if probe:
                        self._first = True  # no HTTP answer yet: the next request decides the fallback
                    task_status.started()
                    started = True
                    await self._fail(message, exc.answer)
                    return
                try:
                    started = await self._answer(message, response, probe, task_status)
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                        await response.aclose()
        finally:
            for key in keys:
                self._pending.pop(key, None)
                if self._scopes.get(key) is scope:
                    del self._scopes[key]
            if not started and not probe:
                task_status.started()

    async def _answer(
        self, message: Message, response: httpx.Response, probe: bool, task_status: trio.TaskStatus[None]
    ) -> bool:
        status = response.status_code
        if status >= 400:
            try:
                body = await read_capped(response, self.up.limit)
            except (UpstreamError, httpx.HTTPError):
                body = b""
            error = jsonrpc_error_body(body)
            if probe and self.session_id is None and status in (400, 404, 405) and error is None:
                raise LegacyServer(f"HTTP {status}")
            task_status.started()
            await self._http_error(message, response, error)
            return True
        task_status.started()
        if 300 <= status < 400:
            where = response.headers.get("location", "?")
            why = f"the server redirects to {where} (not followed: configure that URL)"
            await self._fail(message, _error(why, self.up.name))
            return True
        if message.method == "initialize" and (session := response.headers.get("mcp-session-id")):
            self.session_id = session
        if status == 202 or not response.headers.get("content-type"):
            await self._fail(
                message, _error("the server answered a request with no response (HTTP 202)", self.up.name)
            )
        elif is_event_stream(response):
            await self._read_answers(message, response)
        elif response.headers["content-type"].lower().startswith("application/json"):
            try:
                await self._deliver(await read_capped(response, self.up.limit))
            except UpstreamError as exc:
                await self._fail(message, exc.answer)
        else:
            kind = response.headers["content-type"].partition(";")[0]
            await self._fail(
                message, _error(f"the server answered with an unexpected content type {kind!r}", self.up.name)
            )
        return True

    async def _read_answers(self, message: Message, response: httpx.Response) -> None:
        """Deliver the events of a request's SSE answer; resume it when it ends before the response."""
        streams = [response]
        try:
            await self._read_streams(message, streams)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                for stream in streams:
                    await stream.aclose()

    async def _read_streams(self, message: Message, streams: list[httpx.Response]) -> None:
        response = streams[0]
        waiting = {id_key(i) for i in message.request_ids()}
        last_id: str | None = None
        retry_ms: int | None = None
        resumes = 0
        while True:
            delivered = False
            try:
                async for event in events(response, self.up.limit):
                    last_id = event.id or last_id
                    retry_ms = event.retry if event.retry is not None else retry_ms
                    if event.data and event.event in ("", "message"):
                        delivered = True
                        waiting -= await self._deliver(event.data.encode())
                        if not waiting:
                            # Answered: the stream is closed now, unread to its end, as the MCP SDKs do.
                            # Reading on to the server's end of the stream (to reuse the connection) was
                            # measured slower: the mcp SDK's server ends an answered stream ~40 ms later
                            # and serves the session's next request only then (bench_proxy.py).
                            return
            except EventTooLarge as exc:
                if waiting:
                    await self._fail(message, _error(str(exc), self.up.name))
                return
            except httpx.HTTPError as exc:
                self.up.debug(f"an answer stream broke: {type(exc).__name__}")
                if not waiting:
                    return
            resumes = 0 if delivered else resumes + 1
            if last_id is None or resumes > MAX_RESUMES or self.session_id is None:
                await self._fail(
                    message, _error("the server closed the stream before it answered", self.up.name)
                )
                return
            await response.aclose()
            await trio.sleep((retry_ms if retry_ms is not None else DEFAULT_RETRY_MS) / 1000)
            try:
                response = await self.up.open_authorized("GET", self.up.url, self._resume_headers(last_id))
            except UpstreamError as exc:
                await self._fail(message, exc.answer)
                return
            streams.append(response)
            if response.status_code != 200 or not is_event_stream(response):
                await self._fail(
                    message,
                    _error(f"resuming the answer stream got HTTP {response.status_code}", self.up.name),
                )
                return

    def _resume_headers(self, last_id: str) -> dict[str, str]:
        return {**self._headers(None, "text/event-stream"), "Last-Event-ID": last_id}

    async def _post_only(self, message: Message) -> None:
        """A notification or the host's answer to a server request: 202 expected, nothing to answer."""
        try:
            response = await self._post(message)
        except UpstreamError as exc:
            self.up.say(f"{exc.message}; a {message.kind} ({message.method or 'answer'}) was not delivered")
            return
        await response.aclose()
        if response.status_code >= 400:
            self.up.say(
                f"{self.up.name}: HTTP {response.status_code} for a {message.kind} "
                f"({message.method or 'answer'}); not delivered"
            )

    # ---- server → host ------------------------------------------------------------------------------

    async def _deliver(self, data: bytes) -> set[str]:
        """Write one server message (or batch) to the host; returns the ids of the answers in it."""
        try:
            body = json.loads(data)
        except ValueError:
            self.up.say(f"{self.up.name} sent a message that is not JSON; dropped")
            return set()
        answered: set[str] = set()
        changed = False
        for item in body if isinstance(body, list) else [body]:
            if isinstance(item, dict) and "method" not in item and ("result" in item or "error" in item):
                key = id_key(item.get("id"))
                answered.add(key)
                changed |= self._observe(key, item)
        line = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() if changed else data
        await self.up.write(single_line(line))
        return answered

    def _observe(self, key: str, answer: dict[str, Any]) -> bool:
        """Learn from answers to initialize and tools/list; True when the answer was changed."""
        method, version = self._pending.get(key, (None, None))
        result = answer.get("result")
        if not isinstance(result, dict):
            return False
        if method == "initialize" and isinstance(result.get("protocolVersion"), str):
            self.negotiated = result["protocolVersion"]
            return False
        if method != "tools/list" or not isinstance(tools := result.get("tools"), list):
            return False
        rejected = dict(self.tools.learn(tools))
        if not rejected or not is_modern(version or self.negotiated):
            return False
        for name, reason in rejected.items():
            self.up.say(
                f"{self.up.name}: tool {name!r} left out of tools/list: invalid x-mcp-header ({reason})"
            )
        result["tools"] = [t for t in tools if not (isinstance(t, dict) and t.get("name") in rejected)]
        return True

    def _start_get_stream(self) -> None:
        if self._get_started or self.session_id is None or is_modern(self.negotiated):
            return
        self._get_started = True
        self.nursery.start_soon(self._get_stream)

    async def _get_stream(self) -> None:
        """The server's own messages, for the whole session; reopened with Last-Event-ID when it ends."""
        last_id: str | None = None
        retry_ms: int | None = None
        failures = 0
        while failures < MAX_GET_FAILURES:
            headers = self._headers(None, "text/event-stream")
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            try:
                response = await self.up.open_authorized("GET", self.up.url, headers)
            except UpstreamError as exc:
                failures += 1
                self.up.debug(f"GET stream: {exc.message}")
            else:
                try:
                    if response.status_code == 405:
                        self.up.debug("the server offers no GET stream (405)")
                        return
                    if response.status_code == 404:
                        return  # the session is gone; the next request says so
                    if response.status_code != 200 or not is_event_stream(response):
                        failures += 1
                        self.up.debug(f"GET stream: HTTP {response.status_code}")
                    else:
                        async for event in events(response, self.up.limit):
                            last_id = event.id or last_id
                            retry_ms = event.retry if event.retry is not None else retry_ms
                            if event.data and event.event in ("", "message"):
                                await self._deliver(event.data.encode())
                        failures = 0
                except (httpx.HTTPError, EventTooLarge) as exc:
                    failures += 1
                    self.up.debug(f"GET stream broke: {type(exc).__name__}")
                finally:
                    await response.aclose()
            delay = (
                retry_ms / 1000 if retry_ms is not None else min(30.0, DEFAULT_RETRY_MS / 1000 * 2**failures)
            )
            await trio.sleep(delay)
        self.up.say(f"{self.up.name}: the GET stream failed {failures} times in a row; not reopened")

    # ---- errors and the end ------------------------------------------------------------------------

    async def _fail(self, message: Message, answer: Any) -> None:
        ids = message.request_ids()
        if not ids:
            self.up.say(f"{self.up.name}: a {message.kind} ({message.method}) failed")
        for ident in ids:
            await self.up.write(answer(ident))

    async def _http_error(
        self, message: Message, response: httpx.Response, error: dict[str, Any] | None
    ) -> None:
        status = response.status_code
        if error is not None and message.kind == "request":
            error["id"] = message.id if error.get("id") is None else error["id"]
            await self.up.write(json.dumps(error, ensure_ascii=False, separators=(",", ":")).encode())
            return
        why = f"the server answered HTTP {status}"
        if status == 404 and self.session_id is not None:
            why += " (the session ended: restart this server in the host)"
        elif status in (401, 403):
            refused = challenge(response) or ""
            detail = "insufficient_scope" if "insufficient_scope" in refused else "refused the broker's token"
            why += f" ({detail}; see `ncp-broker status {self.up.name}`)"
        await self._fail(message, _error(why, self.up.name))

    async def close(self) -> None:
        """DELETE the session (the host is gone); bounded, and silent on failure."""
        if self.session_id is None:
            return
        with trio.move_on_after(CLOSE_TIMEOUT):
            try:
                response = await self.up.open_authorized("DELETE", self.up.url, self._headers(None))
            except UpstreamError as exc:
                self.up.debug(f"DELETE of the session: {exc.message}")
                return
            await response.aclose()
            self.up.debug(f"DELETE of the session: HTTP {response.status_code}")


def _error(why: str, name: str) -> Any:
    """An answer-maker for :meth:`StreamableHttp._fail`: the proxy's own error, naming the server."""
    return lambda ident: error_line(ident, INTERNAL_ERROR, f"ncp-broker proxy: {name}: {why}")
