"""What both HTTP transports share: the authorized request, bounded body reads and the proxy's error answers.

:func:`open_authorized` sends one HTTP request with the token the daemon gives at that moment, only in the
``Authorization`` header (checklist T1), and on a 401 or a step-up 403 asks the daemon and sends the same
bytes once more (:class:`~ncp_client.proxy._broker.ServerAuth`). Whatever fails on the way becomes an
:class:`UpstreamError` whose text a host can show: it names the server and, for broker problems, carries
the broker's code and the command to run. No error text ever includes a header value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from ncp_client._credential import Credential, nonce_demanded
from ncp_client._errors import BrokerError
from ncp_client.proxy._broker import ServerAuth
from ncp_client.proxy._jsonrpc import INTERNAL_ERROR, error_line
from ncp_client.proxy._stdio import HostOutput

__all__ = ["Upstream", "UpstreamError", "challenge", "jsonrpc_error_body", "read_capped"]


class UpstreamError(Exception):
    """A request could not be carried out; ``message`` is for the host, ``broker_code``/``hint`` if the
    broker was the reason."""

    def __init__(self, message: str, *, broker_code: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.message, self.broker_code, self.hint = message, broker_code, hint

    def answer(self, ident: Any) -> bytes:
        text = f"{self.message} (run: {self.hint})" if self.hint else self.message
        return error_line(ident, INTERNAL_ERROR, text, broker_code=self.broker_code, hint=self.hint)


def challenge(response: httpx.Response) -> str | None:
    values = response.headers.get_list("www-authenticate")
    return ", ".join(values) if values else None


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """The whole body, or UpstreamError past ``limit`` bytes (the rest is not read)."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise UpstreamError(f"the server's answer is over {limit} bytes (--max-message-bytes)")
    return bytes(body)


def jsonrpc_error_body(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON-RPC error object, if it is one (servers answer 4xx with one)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict) and "result" not in parsed:
        return parsed
    return None


@dataclass
class Upstream:
    """One remote MCP server and everything a transport needs to talk to it and to the host."""

    url: str
    client: httpx.AsyncClient
    auth: ServerAuth
    host: HostOutput
    say: Callable[[str], None]
    debug: Callable[[str], None]
    limit: int  # the largest message, either way

    @property
    def name(self) -> str:
        return self.auth.target.name

    async def open_authorized(
        self, method: str, url: str, headers: dict[str, str], content: bytes | None = None
    ) -> httpx.Response:
        """Send one request with the broker's token; the response is open (streaming): close it.

        Raises:
            UpstreamError: no token (the broker's reason), or the server cannot be reached.
        """
        sent = await self._credential(method, url)
        response = await self._send(method, url, headers, content, sent)
        nonce = response.headers.get("dpop-nonce")
        if (
            sent is not None
            and sent.bound
            and nonce_demanded(response.status_code, nonce, challenge(response))
        ):
            # The resource server wants its DPoP nonce in the proof (RFC 9449 §9): a new proof, once.
            await response.aclose()
            self.debug("HTTP 401 use_dpop_nonce: sending once more with a proof that carries the nonce")
            sent = await self._credential(method, url, nonce)
            response = await self._send(method, url, headers, content, sent)
            nonce = response.headers.get("dpop-nonce")
        if response.status_code in (401, 403):
            refused_with = challenge(response)
            try:
                newer = await self.auth.refused(
                    response.status_code, refused_with, sent, method=method, url=url, dpop_nonce=nonce
                )
            except BrokerError as exc:
                await response.aclose()
                raise _from_broker(exc) from None
            if newer is not None and sent is not None and newer.token != sent.token:
                await response.aclose()
                self.debug(f"HTTP {response.status_code}: sending once more with the broker's newer token")
                response = await self._send(method, url, headers, content, newer)
        return response

    async def _credential(self, method: str, url: str, nonce: str | None = None) -> Credential | None:
        try:
            return await self.auth.token(method, url, nonce)
        except BrokerError as exc:
            raise _from_broker(exc) from None

    async def _send(
        self, method: str, url: str, headers: dict[str, str], content: bytes | None, sent: Credential | None
    ) -> httpx.Response:
        if sent is not None:
            # The token (and a DPoP proof) go only in these headers (T1), never in a log line.
            headers = {**{k: v for k, v in headers.items() if k.lower() != "dpop"}, **sent.headers()}
        request = self.client.build_request(method, url, headers=headers, content=content)
        try:
            return await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            # httpx's text names the URL and the cause, never a header.
            raise UpstreamError(f"{self.name}: cannot reach {url}: {type(exc).__name__}: {exc}") from None

    async def write(self, line: bytes) -> None:
        """To the host; a host that went away ends the proxy (its reader sees EOF too)."""
        try:
            await self.host.send(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.debug("the host closed its end; dropping a message for it")


def _from_broker(exc: BrokerError) -> UpstreamError:
    return UpstreamError(f"ncp-broker: {exc.message}", broker_code=exc.code, hint=exc.hint)
