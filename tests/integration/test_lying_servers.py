"""Servers that lie, through the real daemon and `ncp-broker login`: the login stops before any
authorization request, and the message says what was wrong.

The liar is one loopback HTTP server playing MCP server, protected resource and authorization server. Its
authorization server metadata is oidc-provider's own document with one thing changed, so everything else
about it is real.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.harness import Daemon, Env, oauth_entry

if TYPE_CHECKING:
    from tests.servers.fixtures import OidcServer, OidcServerFactory

pytestmark = pytest.mark.integration

Lie = Callable[[str, dict[str, Any], dict[str, Any]], None]  # (origin, prm, as_metadata) -> edit in place


class Liar:
    def __init__(self, oidc: OidcServer, lie: Lie) -> None:
        self.oidc = oidc
        self.real_metadata = oidc.metadata()
        self.lie = lie
        self.paths: list[str] = []
        liar = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                liar.paths.append(self.path)
                origin = liar.origin
                prm = {"resource": f"{origin}/mcp", "authorization_servers": [origin]}
                metadata = {**liar.real_metadata, "issuer": origin}
                liar.lie(origin, prm, metadata)
                documents = {
                    "/.well-known/oauth-protected-resource/mcp": prm,
                    "/.well-known/oauth-authorization-server": metadata,
                }
                if self.path in documents:
                    self._send(200, documents[self.path])
                else:
                    self._send(404, {"error": "not_found"})

            def do_POST(self) -> None:  # the MCP endpoint: always the 401 that starts discovery
                liar.paths.append(self.path)
                self.rfile.read(int(self.headers.get("content-length", "0")))
                challenge = (
                    f'Bearer resource_metadata="{liar.origin}/.well-known/oauth-protected-resource/mcp"'
                )
                self._send(401, {"error": "invalid_token"}, {"WWW-Authenticate": challenge})

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _no_s256(origin: str, prm: dict[str, Any], metadata: dict[str, Any]) -> None:
    metadata["code_challenge_methods_supported"] = ["plain"]


def _other_issuer(origin: str, prm: dict[str, Any], metadata: dict[str, Any]) -> None:
    metadata["issuer"] = "http://127.0.0.1:1"


def _other_resource(origin: str, prm: dict[str, Any], metadata: dict[str, Any]) -> None:
    prm["resource"] = "http://127.0.0.1:1/mcp"


@pytest.fixture
def liar(oidc_server: OidcServerFactory, request: pytest.FixtureRequest) -> Iterator[Liar]:
    lie: Lie = request.param
    server = Liar(oidc_server(), lie)
    yield server
    server.close()


@pytest.mark.parametrize(
    ("liar", "said"),
    [
        (_no_s256, "S256"),  # A1: no PKCE with S256, no login
        (_other_issuer, "issuer"),  # D5 (RFC 8414 §3.3): metadata for another issuer
        (_other_resource, "resource"),  # D3 (RFC 9728 §3.3): metadata for another resource
    ],
    indirect=["liar"],
    ids=["A1-no-S256", "D5-issuer-mismatch", "D3-resource-mismatch"],
)
def test_login_refuses_a_lying_server_before_authorizing(
    env: Env, liar: Liar, said: str, daemon: Daemon
) -> None:
    """A server whose metadata lies is refused during discovery, naming what was wrong, before any
    registration or authorization request."""
    env.write_config({"srv": oauth_entry(f"{liar.origin}/mcp")})
    assert env.run("ncp-broker", "reload").returncode == 0
    login = env.run("ncp-broker", "login", "srv", extra_env={"BROWSER": "false"}, timeout=60)
    assert login.returncode == 5, login.stdout + login.stderr
    assert said in login.stderr, login.stderr
    assert "login failed" in login.stderr
    assert env.run("ncp-token", "srv").returncode == 5
    # Nothing past discovery: the real endpoints the metadata names saw no registration, no authorization.
    stats = liar.oidc.stats()
    assert (stats["registrations"], stats["authorizations"]) == (0, 0)
    assert any(path.startswith("/.well-known/") for path in liar.paths)  # discovery did reach the liar
