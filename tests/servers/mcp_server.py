"""A protected MCP server for ncp-broker's integration tests.

The `mcp` SDK's `MCPServer` over streamable HTTP, guarded by `AuthSettings` and a token verifier that checks
JWT access tokens against the authorization server's JWKS (PyJWT): signature, `iss`, `exp` and `aud` equal
to this server's URL exactly. On top of the SDK, an ASGI layer adds what the SDK has no switch for:

- per-tool scopes: a `tools/call` of a tool listed in `tool_scopes` whose token lacks the scope is answered
  403 with `WWW-Authenticate: Bearer error="insufficient_scope", scope="…", resource_metadata="…"` (step-up);
- DPoP (RFC 9449) as a resource server, with `"dpop": "required"` or `"nonce"` (tests/servers/dpop_check.py):
  only `Authorization: DPoP` tokens with a valid proof per request, optionally with a nonce challenge;
- `GET /__admin/stats`: what the server saw (statuses, HTTP methods, tool calls, distinct tokens, DPoP
  checks), without token values; `POST /__admin/dpop_nonce` makes a new DPoP nonce (the next proofs must
  carry it);
- `POST /__admin/refuse_tokens {"count": N}`: the next N MCP requests that carry a token are answered 401
  `invalid_token`, as if the token had been revoked (a 401 mid-session, for the proxy's tests).

Usage: python mcp_server.py CONFIG   where CONFIG is a JSON object or the path of a JSON file, e.g.
    {"issuer": "http://127.0.0.1:PORT", "required_scopes": ["mcp:read"],
     "tool_scopes": {"admin_action": ["mcp:admin"]}, "port": 0}
When serving it prints one line to stdout: {"url": "http://127.0.0.1:PORT/mcp", "port": PORT, "pid": PID}.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from tests.servers.dpop_check import DpopChecker, Refusal

__all__ = ["JwksTokenVerifier", "ServerConfig", "main"]

_log = logging.getLogger("ncp_test_mcp_server")
_MAX_BODY = 1024 * 1024
_JWKS_REFETCH_INTERVAL = 1.0


@dataclass
class ServerConfig:
    """What the test asks for; every field has a default but `issuer`."""

    issuer: str
    port: int = 0
    host: str = "127.0.0.1"
    path: str = "/mcp"
    required_scopes: list[str] = field(default_factory=lambda: ["mcp:read"])
    tool_scopes: dict[str, list[str]] = field(default_factory=lambda: {"admin_action": ["mcp:admin"]})
    json_response: bool = False
    stateless: bool = False
    audience: str | None = None  # defaults to the server's own URL
    dpop: str = "off"  # "off" (Bearer), "required" or "nonce": see tests/servers/dpop_check.py
    parent_pid: int | None = None  # exit when this process is gone, so no server outlives a killed test run

    @classmethod
    def parse(cls, text: str) -> ServerConfig:
        """Build from a JSON object or a JSON file path; unknown keys raise TypeError."""
        raw = text if text.lstrip().startswith("{") else Path(text).read_text(encoding="utf-8")
        return cls(**json.loads(raw))


class JwksTokenVerifier:
    """Verifies JWT access tokens with the authorization server's published keys.

    Keys are fetched once (metadata, then `jwks_uri`) and again when a token names an unknown `kid`, at most
    once a second, so an authorization server outage does not stop already-issued tokens from verifying.
    """

    def __init__(self, issuer: str, audience: str) -> None:
        self._issuer = issuer
        self._audience = audience
        self._jwks: jwt.PyJWKSet | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _fetch_jwks(self) -> jwt.PyJWKSet:
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
            metadata = (await http.get(f"{self._issuer}/.well-known/oauth-authorization-server")).json()
            jwks = (await http.get(metadata["jwks_uri"])).json()
        return jwt.PyJWKSet.from_dict(jwks)

    async def _key_for(self, kid: str | None) -> jwt.PyJWK | None:
        async with self._lock:
            stale = time.monotonic() - self._fetched_at > _JWKS_REFETCH_INTERVAL
            if self._jwks is None or (stale and not any(k.key_id == kid for k in self._jwks.keys)):
                self._jwks = await self._fetch_jwks()
                self._fetched_at = time.monotonic()
            return next((k for k in self._jwks.keys if k.key_id == kid), None)

    async def verify_token(self, token: str) -> AccessToken | None:
        """Return the token's grant when it verifies, else None (the SDK then answers 401)."""
        try:
            header = jwt.get_unverified_header(token)
            key = await self._key_for(header.get("kid"))
            if key is None:
                _log.info("token refused: unknown kid")
                return None
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256", "PS256", "ES256", "EdDSA"],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, httpx.HTTPError, KeyError, ValueError) as exc:
            _log.info("token refused: %s: %s", type(exc).__name__, exc)
            return None
        scopes = str(claims.get("scope", "")).split()
        _log.info("token ok: sub=%s scopes=%s exp_in=%ds", claims["sub"], scopes, claims["exp"] - time.time())
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id", "")),
            scopes=scopes,
            expires_at=int(claims["exp"]),
            resource=self._audience,
            subject=str(claims["sub"]),
            claims=claims,
        )


@dataclass
class _Stats:
    statuses: Counter[int] = field(default_factory=Counter)
    tool_calls: Counter[str] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)
    http_methods: Counter[str] = field(default_factory=Counter)
    step_up_refusals: int = 0
    refused_tokens: int = 0
    token_digests: set[str] = field(default_factory=set)

    def as_json(self) -> dict[str, Any]:
        return {
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "unauthorized": self.statuses[401],
            "forbidden": self.statuses[403],
            "methods": dict(self.methods),
            "http_methods": dict(self.http_methods),
            "refused_tokens": self.refused_tokens,
            "tool_calls": dict(self.tool_calls),
            "step_up_refusals": self.step_up_refusals,
            "distinct_tokens": len(self.token_digests),
        }


class _Guard:
    """ASGI layer in front of the SDK app: per-tool scopes, stats, the admin route."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        config: ServerConfig,
        verifier: JwksTokenVerifier,
        metadata_url: str,
        url: str,
        dpop: DpopChecker,
    ) -> None:
        self._app = app
        self._config = config
        self._verifier = verifier
        self._metadata_url = metadata_url
        self._url = url
        self._dpop = dpop
        self.stats = _Stats()
        self.refuse_next = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/__admin/"):
            await self._admin(scope, receive, send)
            return
        if self._dpop.enabled and path == self._config.path:
            checked = await self._check_dpop(scope, send)
            if checked is None:
                return
            scope = checked
        token = _bearer(scope)
        if token:
            self.stats.token_digests.add(hashlib.sha256(token.encode()).hexdigest()[:16])
        if path == self._config.path:
            self.stats.http_methods[scope["method"]] += 1
            if token and self.refuse_next > 0:
                self.refuse_next -= 1
                self.stats.refused_tokens += 1
                header = f'Bearer error="invalid_token", resource_metadata="{self._metadata_url}"'
                refusal = [(b"www-authenticate", header.encode())]
                await _send_json(send, 401, {"error": "invalid_token"}, refusal)
                return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.stats.statuses[int(message["status"])] += 1
            await send(message)

        if path != self._config.path or scope["method"] != "POST":
            await self._app(scope, receive, counting_send)
            return
        body = await _read_body(receive)
        request = _json_or_none(body)
        if isinstance(request, dict):
            method = str(request.get("method", ""))
            self.stats.methods[method] += 1
            params = request.get("params")
            tool = params.get("name") if method == "tools/call" and isinstance(params, dict) else None
            if isinstance(tool, str):
                self.stats.tool_calls[tool] += 1
                if await self._lacks_tool_scope(tool, token, counting_send):
                    return
        await self._app(scope, _replay(body, receive), counting_send)

    async def _check_dpop(self, scope: Scope, send: Send) -> Scope | None:
        """The request with its DPoP token presented to the SDK as a Bearer token (the SDK verifies the
        token itself), or None when it was refused here with a DPoP challenge."""
        headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        auth = next((bytes(v).decode("latin-1") for n, v in headers if n == b"authorization"), None)
        proofs = [bytes(v).decode("latin-1") for n, v in headers if n == b"dpop"]
        refusal: Refusal | None
        if auth is None:
            refusal = self._dpop.missing()
        else:
            kind, _, token = auth.partition(" ")
            refusal = self._dpop.check(
                method=str(scope["method"]), url=self._url, scheme=kind, token=token.strip(), proofs=proofs
            )
        if refusal is not None:
            self.stats.statuses[401] += 1
            extra = [(b"www-authenticate", refusal.challenge.encode()), *refusal.headers]
            await _send_json(
                send, 401, {"error": "invalid_token", "error_description": refusal.reason}, extra
            )
            return None
        bearer = (b"authorization", b"Bearer " + token.strip().encode("latin-1"))
        kept = [(n, v) for n, v in headers if n not in (b"authorization", b"dpop")]
        return {**scope, "headers": [*kept, bearer]}

    async def _lacks_tool_scope(self, tool: str, token: str | None, send: Send) -> bool:
        needed = self._config.tool_scopes.get(tool)
        if not needed or not token:
            return False  # no extra scope, or no token: the SDK answers (401 when the token is missing)
        grant = await self._verifier.verify_token(token)
        if grant is None or all(s in grant.scopes for s in needed):
            return False
        self.stats.step_up_refusals += 1
        challenge = " ".join(dict.fromkeys([*self._config.required_scopes, *needed]))
        header = (
            f'Bearer error="insufficient_scope", scope="{challenge}", '
            f'resource_metadata="{self._metadata_url}", '
            f'error_description="tool {tool} requires {" ".join(needed)}"'
        )
        await _send_json(send, 403, {"error": "insufficient_scope"}, [(b"www-authenticate", header.encode())])
        return True

    async def _admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/__admin/stats" and scope["method"] == "GET":
            await _send_json(send, 200, {**self.stats.as_json(), "dpop": self._dpop.as_json()})
        elif scope["path"] == "/__admin/dpop_nonce" and scope["method"] == "POST":
            await _send_json(send, 200, {"ok": True, "nonce_rotated": bool(self._dpop.rotate_nonce())})
        elif scope["path"] == "/__admin/reset_stats" and scope["method"] == "POST":
            self.stats = _Stats()
            await _send_json(send, 200, {"ok": True})
        elif scope["path"] == "/__admin/refuse_tokens" and scope["method"] == "POST":
            body = _json_or_none(await _read_body(receive))
            self.refuse_next = int(body.get("count", 1)) if isinstance(body, dict) else 1
            await _send_json(send, 200, {"ok": True})
        else:
            await _send_json(send, 404, {"error": "not_found"})


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return bytes(value[7:]).decode("latin-1")
    return None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            break
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _json_or_none(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(
    send: Send, status: int, body: object, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def build_server(config: ServerConfig, url: str) -> tuple[MCPServer, JwksTokenVerifier]:
    """The SDK server with its tools; `url` is the resource identifier (scheme, host, port, path)."""
    verifier = JwksTokenVerifier(config.issuer, config.audience or url)
    server: MCPServer = MCPServer(
        name="ncp-test-mcp",
        token_verifier=verifier,
        auth=AuthSettings(
            issuer_url=config.issuer,  # type: ignore[arg-type]  # pydantic validates the str
            resource_server_url=url,  # type: ignore[arg-type]
            required_scopes=config.required_scopes,
            # The verifier checks `aud` itself; the SDK's own check would also pass (resource = aud).
            validate_token_resource=True,
        ),
    )

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def whoami() -> dict[str, Any]:
        """The caller's subject, client and scopes, read from the verified access token."""
        grant = get_access_token()
        if grant is None:
            return {"sub": None, "scopes": []}
        return {
            "sub": grant.subject,
            "client_id": grant.client_id,
            "scopes": grant.scopes,
            "expires_at": grant.expires_at,
            "aud": (grant.claims or {}).get("aud"),
        }

    @server.tool()
    def admin_action() -> str:
        """A tool that needs an extra scope (mcp:admin by default): for step-up tests."""
        return "admin action done"

    return server, verifier


async def _serve(config: ServerConfig) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    port = int(sock.getsockname()[1])
    url = f"http://{config.host}:{port}{config.path}"
    server, verifier = build_server(config, url)
    sdk_app = server.streamable_http_app(
        streamable_http_path=config.path,
        json_response=config.json_response,
        stateless_http=config.stateless,
        host=config.host,
    )
    metadata_url = f"http://{config.host}:{port}/.well-known/oauth-protected-resource{config.path}"
    from tests.servers.dpop_check import DpopChecker

    dpop = DpopChecker(config.dpop, metadata_url)
    app = _Guard(sdk_app, config=config, verifier=verifier, metadata_url=metadata_url, url=url, dpop=dpop)
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    deadline = time.monotonic() + 30
    while not uv.started:
        if task.done() or time.monotonic() > deadline:
            await task
            raise SystemExit("uvicorn did not start")
        await asyncio.sleep(0.02)
    sys.stdout.write(json.dumps({"url": url, "port": port, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    while not task.done():
        if config.parent_pid is not None and not _alive(config.parent_pid):
            uv.should_exit = True
        await asyncio.wait({task}, timeout=1.0)
    await task
    sock.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> None:
    """Parse the config argument (or $NCP_TEST_MCP_CONFIG) and serve until SIGTERM."""
    args = sys.argv[1:] if argv is None else argv
    text = args[0] if args else os.environ.get("NCP_TEST_MCP_CONFIG", "")
    if not text:
        raise SystemExit("usage: mcp_server.py CONFIG_JSON_OR_FILE")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    root = str(Path(__file__).resolve().parents[2])  # run as a script: make `tests.servers` importable
    if root not in sys.path:
        sys.path.insert(0, root)
    asyncio.run(_serve(ServerConfig.parse(text)))


if __name__ == "__main__":
    main()
