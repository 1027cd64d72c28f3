"""Small client-side pieces for tests that talk to the test servers without the broker.

- `CallbackCatcher`: a loopback HTTP listener that receives one OAuth redirect (the client's redirect_uri).
- `pkce_pair()`: an RFC 7636 S256 verifier and challenge.
- `McpSession`: plain-httpx JSON-RPC over MCP streamable HTTP (initialize, then requests), reading both the
  JSON and the SSE answer forms.
- `parse_www_authenticate()`: the parameters of a single `Bearer` challenge (enough for the test servers;
  the broker has its own robust parser).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import secrets
import threading
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

__all__ = ["CallbackCatcher", "McpError", "McpSession", "parse_www_authenticate", "pkce_pair"]

MCP_PROTOCOL_VERSION = "2025-06-18"


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def parse_www_authenticate(header: str) -> dict[str, str]:
    """`Bearer k="v", k2=v2` → {k: v, k2: v2}; quoted values may hold commas and spaces."""
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "bearer":
        return {}
    pattern = re.compile(r'\s*([A-Za-z0-9_\-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')
    return {m[1]: m[2] if m[2] is not None else m[3] for m in pattern.finditer(rest)}


class CallbackCatcher:
    """Listens on 127.0.0.1 (ephemeral port) for one GET to `/callback` and keeps its query parameters.

    Use as a context manager; `redirect_uri` is `http://127.0.0.1:PORT/callback`. `wait(timeout)` returns
    the parameters or raises TimeoutError.
    """

    def __init__(self, path: str = "/callback") -> None:
        self.path = path
        self._params: dict[str, str] | None = None
        self._event = threading.Event()
        catcher = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != catcher.path:
                    self.send_error(404)
                    return
                catcher._params = dict(parse_qsl(parts.query, keep_blank_values=True))
                body = b"<html><title>done</title><body>You can close this window.</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                catcher._event.set()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def __enter__(self) -> CallbackCatcher:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def wait(self, timeout: float) -> dict[str, str]:
        """The redirect's query parameters; TimeoutError if none arrived in time."""
        if not self._event.wait(timeout) or self._params is None:
            raise TimeoutError(f"no redirect to {self.redirect_uri} within {timeout}s")
        return self._params


class McpError(Exception):
    """An MCP HTTP exchange failed: `status` and `www_authenticate` say how."""

    def __init__(self, message: str, status: int, www_authenticate: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.www_authenticate = www_authenticate


class McpSession:
    """One MCP session over streamable HTTP with a fixed bearer token (settable between calls)."""

    def __init__(self, http: httpx.Client, url: str, token: str | None) -> None:
        self.http = http
        self.url = url
        self.token = token
        self.session_id: str | None = None
        self._next_id = 1

    def _headers(self) -> dict[str, str]:
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "MCP-Protocol-Version": MCP_PROTOCOL_VERSION,
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        return headers

    def _post(self, message: dict[str, Any]) -> httpx.Response:
        response = self.http.post(self.url, headers=self._headers(), json=message)
        if response.status_code >= 400:
            raise McpError(
                f"{message.get('method')} → HTTP {response.status_code}",
                response.status_code,
                response.headers.get("www-authenticate"),
            )
        self.session_id = response.headers.get("mcp-session-id", self.session_id)
        return response

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a JSON-RPC request and return its `result`; McpError on HTTP or JSON-RPC errors."""
        request_id = self._next_id
        self._next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        response = self._post(message)
        for reply in _messages(response):
            if reply.get("id") == request_id:
                if "error" in reply:
                    raise McpError(f"{method} → {reply['error']}", response.status_code, None)
                result: dict[str, Any] = reply["result"]
                return result
        raise McpError(f"{method}: no reply with id {request_id}", response.status_code, None)

    def initialize(self) -> dict[str, Any]:
        """initialize + notifications/initialized; keeps the session id the server assigned."""
        result = self.request(
            "initialize",
            {
                "protocolVersion": MCP_PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "ncp-broker-tests", "version": "0"},
            },
        )
        self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return result

    def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("tools/call", {"name": name, "arguments": arguments or {}})


def _messages(response: httpx.Response) -> list[dict[str, Any]]:
    kind = response.headers.get("content-type", "")
    if kind.startswith("application/json"):
        body = response.json()
        return body if isinstance(body, list) else [body]
    if kind.startswith("text/event-stream"):
        out: list[dict[str, Any]] = []
        for block in response.text.split("\n\n"):
            data = "\n".join(line[5:].lstrip() for line in block.splitlines() if line.startswith("data:"))
            if data:
                out.append(json.loads(data))
        return out
    return []
