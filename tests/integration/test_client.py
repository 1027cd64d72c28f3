"""The thin client against a real daemon: stdlib-only imports, async variants, BrokerAuth with httpx."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest
import trio

import ncp_client
from tests.harness import Daemon, Env

pytestmark = pytest.mark.integration

KEY = "bearer-e1d2c3-do-not-log"
HEAVY = ("trio", "httpx", "keyring", "msgspec", "platformdirs", "asyncio", "brokerd")


@pytest.mark.parametrize(
    "code",
    [
        "import ncp_client; ncp_client.get_token",
        "import ncp_client._cli",
        "import ncp_client; ncp_client.default_socket_path()",
    ],
)
def test_thin_client_imports_no_heavy_dependency(code: str) -> None:
    """get_token and ncp-token load only the standard library (as httpx tests its lazy imports)."""
    probe = f"{code}; import sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_broker_auth_is_imported_lazily() -> None:
    """httpx is imported only when BrokerAuth is first used."""
    probe = (
        "import sys, ncp_client; assert 'httpx' not in sys.modules;"
        "ncp_client.BrokerAuth; print('httpx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_default_socket_path_matches_the_daemon() -> None:
    """The client and the daemon compute the same default socket path."""
    from brokerd import paths

    assert ncp_client.default_socket_path() == paths.socket_path()


class _Resource(BaseHTTPRequestHandler):
    accepted = KEY
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        auth = self.headers.get("Authorization", "")
        self.seen.append(auth)
        ok = auth == f"Bearer {self.accepted}"
        self.send_response(200 if ok else 401)
        if not ok:
            self.send_header("WWW-Authenticate", 'Bearer error="invalid_token"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def resource() -> Iterator[tuple[str, type[_Resource]]]:
    handler = type("Handler", (_Resource,), {"seen": [], "accepted": KEY})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mcp", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served(env: Env, daemon: Daemon, resource: tuple[str, type[_Resource]]) -> Env:
    """The daemon with one bearer server, ``neus``, at the local resource's URL: BrokerAuth names each
    request's URL, and the daemon answers only for requests to the server's own origin."""
    env.write_config(
        {
            "neus": {
                "url": resource[0],
                "auth": {"type": "bearer", "token": KEY, "allowInsecureLoopback": True},
            }
        }
    )
    assert env.run("ncp-broker", "reload").returncode == 0
    return env


def test_get_token_sync(served: Env) -> None:
    """ncp_client.get_token returns the key; errors are typed."""
    assert ncp_client.get_token("neus", socket_path=served.socket) == KEY
    with pytest.raises(ncp_client.UnknownServer) as err:
        ncp_client.get_token("nope", socket_path=served.socket)
    assert "ncp-broker add nope" in err.value.hint


def test_get_token_not_running(env: Env) -> None:
    """No daemon: BrokerNotRunning with the start command."""
    with pytest.raises(ncp_client.BrokerNotRunning) as err:
        ncp_client.get_token("neus", socket_path=env.socket)
    assert err.value.hint == "start it with: ncp-broker start"


async def test_aget_token_from_trio(served: Env) -> None:
    """The async variant works inside trio, concurrently."""
    results: list[str] = []

    async def one() -> None:
        results.append(await ncp_client.aget_token("neus", socket_path=served.socket))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(one)
    assert results == [KEY] * 20
    with pytest.raises(ncp_client.UnknownServer):
        await ncp_client.aget_token("nope", socket_path=served.socket)


def test_aget_token_from_asyncio(served: Env) -> None:
    """The async variant works under asyncio too."""

    async def main() -> list[str]:
        return list(
            await asyncio.gather(
                *(ncp_client.aget_token("neus", socket_path=served.socket) for _ in range(20))
            )
        )

    assert asyncio.run(main()) == [KEY] * 20


def test_aget_token_not_running_under_asyncio(env: Env) -> None:
    """The asyncio path maps a missing socket to BrokerNotRunning."""
    with pytest.raises(ncp_client.BrokerNotRunning):
        asyncio.run(ncp_client.aget_token("neus", socket_path=env.socket))


def test_broker_auth_sync_sets_bearer_header(served: Env, resource: tuple[str, type[_Resource]]) -> None:
    """BrokerAuth puts the broker's token in the Authorization header (T1: header only, not the URL)."""
    url, handler = resource
    with httpx.Client(auth=ncp_client.BrokerAuth("neus", socket_path=served.socket)) as client:
        response = client.post(url, json={"jsonrpc": "2.0"})
    assert response.status_code == 200
    assert handler.seen == [f"Bearer {KEY}"]
    assert KEY not in str(response.request.url)


async def test_broker_auth_async_401_same_token_is_not_retried(
    served: Env, resource: tuple[str, type[_Resource]]
) -> None:
    """On a 401, BrokerAuth reports the token; when the broker has nothing newer it returns the 401."""
    url, handler = resource
    handler.accepted = "something-else"
    async with httpx.AsyncClient(auth=ncp_client.BrokerAuth("neus", socket_path=served.socket)) as client:
        response = await client.post(url, content=b"{}")
    assert response.status_code == 401
    assert handler.seen == [f"Bearer {KEY}"]
    status = json.loads(served.run("ncp-broker", "status", "--json", "neus").stdout)
    assert status["servers"][0]["state"] == "rejected"
    assert KEY not in json.dumps(status)


def test_broker_auth_retries_once_with_a_newer_token(
    served: Env, resource: tuple[str, type[_Resource]]
) -> None:
    """When the token was replaced meanwhile, the retry carries the new one and succeeds."""
    url, handler = resource
    handler.accepted = "fresh-key"
    auth = ncp_client.BrokerAuth("neus", socket_path=served.socket)
    flow = auth.sync_auth_flow(httpx.Request("POST", url))
    first = next(flow)
    assert first.headers["Authorization"] == f"Bearer {KEY}"
    # the key changes between the request and the 401 (as a refresh by another client would)
    served.write_config({"neus": {"url": url, "auth": {"type": "bearer", "allowInsecureLoopback": True}}})
    assert served.run("ncp-broker", "reload").returncode == 0
    ncp_client.call({"op": "set_access_key", "server": "neus", "key": "fresh-key"}, socket_path=served.socket)
    retry = flow.send(httpx.Response(401, request=first))
    assert retry.headers["Authorization"] == "Bearer fresh-key"
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(200, request=retry))


async def test_broker_auth_for_httpx2_used_by_the_mcp_sdk(
    served: Env, resource: tuple[str, type[_Resource]]
) -> None:
    """The MCP Python SDK 2.x sends through httpx2: the same auth works there (T1: header only)."""
    import httpx2

    url, handler = resource
    auth = ncp_client.broker_auth_for_httpx2("neus", socket_path=served.socket)
    async with httpx2.AsyncClient(auth=auth) as client:
        response = await client.post(url, content=b"{}")
    assert response.status_code == 200
    assert handler.seen == [f"Bearer {KEY}"]


def test_broker_auth_refuses_to_name_a_request_elsewhere(
    served: Env, resource: tuple[str, type[_Resource]]
) -> None:
    """A request to another origin than the server's gets no token: the daemon refuses to name it."""
    url, handler = resource
    elsewhere = url.replace("127.0.0.1", "localhost")
    with (
        httpx.Client(auth=ncp_client.BrokerAuth("neus", socket_path=served.socket)) as client,
        pytest.raises(ncp_client.ServerError, match="not at the server's origin") as err,
    ):
        client.post(elsewhere, content=b"{}")
    assert err.value.code == "bad_request"
    assert handler.seen == []
