"""The HTTP+SSE transport of MCP 2024-11-05, for servers that predate Streamable HTTP.

``GET`` on the server's URL opens an event stream whose first ``endpoint`` event names the URL to POST
messages to (on the same origin: another origin is refused, as the MCP SDKs do); every answer and every
server message then arrives on that stream. The session lives as long as the stream: when the server
closes it, requests still waiting and every later one are answered with an error saying so (a host
reconnects by restarting the server entry, which starts a new proxy).
"""

from __future__ import annotations

import json
import math
from urllib.parse import urljoin, urlsplit

import httpx
import trio

from ncp_client.proxy._jsonrpc import INTERNAL_ERROR, Message, error_line, id_key, single_line
from ncp_client.proxy._sse import EventTooLarge, events, is_event_stream
from ncp_client.proxy._upstream import Upstream, UpstreamError, jsonrpc_error_body, read_capped

__all__ = ["ENDPOINT_TIMEOUT", "LegacySse"]

ENDPOINT_TIMEOUT = 15.0


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


class LegacySse:
    def __init__(self, up: Upstream, nursery: trio.Nursery) -> None:
        self.up = up
        self.nursery = nursery
        self.endpoint: str | None = None
        self._waiting: dict[str, object] = {}  # id key → id, of requests not answered yet
        self._ended: str | None = None

    async def connect(self) -> None:
        """Open the stream and wait for its endpoint.

        Raises:
            UpstreamError: no stream, or no valid endpoint within :data:`ENDPOINT_TIMEOUT`.
        """
        await self.nursery.start(self._stream)

    async def _stream(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        response = await self.up.open_authorized("GET", self.up.url, {"Accept": "text/event-stream"})
        started = False
        try:
            if response.status_code != 200 or not is_event_stream(response):
                raise UpstreamError(
                    f"{self.up.name}: the SSE stream was answered HTTP {response.status_code}"
                )
            with trio.CancelScope(deadline=trio.current_time() + ENDPOINT_TIMEOUT) as waiting_for_endpoint:
                async for event in events(response, self.up.limit):
                    if event.event == "endpoint":
                        endpoint = urljoin(self.up.url, event.data.strip())
                        if _origin(endpoint) != _origin(self.up.url):
                            raise UpstreamError(
                                f"{self.up.name}: the SSE endpoint is on another origin; refused"
                            )
                        self.endpoint = endpoint
                        if not started:
                            started = True
                            waiting_for_endpoint.deadline = math.inf
                            task_status.started()
                    elif event.data and event.event in ("", "message"):
                        await self._deliver(event.data.encode())
            if not started:
                raise UpstreamError(f"{self.up.name}: the SSE stream sent no endpoint event")
            self._ended = "the server closed the SSE stream (restart this server in the host)"
        except (httpx.HTTPError, EventTooLarge) as exc:
            if not started:
                raise UpstreamError(f"{self.up.name}: the SSE stream broke: {type(exc).__name__}") from None
            self._ended = f"the SSE stream broke ({type(exc).__name__}); restart this server in the host"
        finally:
            await response.aclose()
        self.up.say(f"{self.up.name}: {self._ended}")
        for ident in list(self._waiting.values()):
            await self.up.write(self._error(ident))
        self._waiting.clear()

    def _error(self, ident: object) -> bytes:
        return error_line(ident, INTERNAL_ERROR, f"ncp-broker proxy: {self.up.name}: {self._ended}")

    async def _deliver(self, data: bytes) -> None:
        try:
            body = json.loads(data)
        except ValueError:
            self.up.say(f"{self.up.name} sent a message that is not JSON; dropped")
            return
        for item in body if isinstance(body, list) else [body]:
            if isinstance(item, dict) and "method" not in item:
                self._waiting.pop(id_key(item.get("id")), None)
        await self.up.write(single_line(data))

    async def send(self, message: Message) -> None:
        if self._ended is not None:
            for ident in message.request_ids():
                await self.up.write(self._error(ident))
            return
        for ident in message.request_ids():
            self._waiting[id_key(ident)] = ident
        if message.request_ids():
            self.nursery.start_soon(self._post, message)
        else:
            await self._post(message)

    async def _post(self, message: Message) -> None:
        assert self.endpoint is not None
        headers = {"Content-Type": "application/json"}
        try:
            response = await self.up.open_authorized("POST", self.endpoint, headers, message.raw)
        except UpstreamError as exc:
            await self._failed(message, exc.answer)
            return
        try:
            if response.status_code < 400:
                return
            try:
                error = jsonrpc_error_body(await read_capped(response, self.up.limit))
            except (UpstreamError, httpx.HTTPError):
                error = None
        finally:
            await response.aclose()
        if error is not None and message.kind == "request":
            self._waiting.pop(id_key(message.id), None)
            error["id"] = message.id if error.get("id") is None else error["id"]
            await self.up.write(json.dumps(error, ensure_ascii=False, separators=(",", ":")).encode())
            return
        status = response.status_code
        why = f"ncp-broker proxy: {self.up.name}: the server answered HTTP {status}"
        await self._failed(message, lambda ident: error_line(ident, INTERNAL_ERROR, why))

    async def _failed(self, message: Message, answer: object) -> None:
        assert callable(answer)
        if not message.request_ids():
            self.up.say(f"{self.up.name}: a {message.kind} ({message.method or 'answer'}) was not delivered")
        for ident in message.request_ids():
            self._waiting.pop(id_key(ident), None)
            await self.up.write(answer(ident))

    async def close(self) -> None:
        """Nothing to end: the session ends with the stream, which closes with the proxy."""
