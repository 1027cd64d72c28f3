"""``ncp-broker proxy`` under bad input and faults (issue 13, item 3): each answered, none fatal.

The host here is :class:`~tests.servers.proxy_hosts.RawHost`, which writes and reads the proxy's lines
itself; the remote server is the mcp SDK's behind oidc-provider, logged in through the daemon, except for
the 5xx test, whose stand-in answers 503 once and then a JSON-RPC result.
"""

from __future__ import annotations

import http.server
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import ncp_client
from tests.conftest import Daemon, Env, start_daemon
from tests.integration.test_proxy import NAME, configure, log_in
from tests.servers.proxy_hosts import RawHost

if TYPE_CHECKING:
    from tests.servers.fixtures import (
        BrowserEnvFactory,
        McpServer,
        McpServerFactory,
        OidcServer,
        OidcServerFactory,
    )

pytestmark = pytest.mark.integration

NO_AUTOSTART = {"NCP_BROKER_NO_AUTOSTART": "1"}


@dataclass
class Setup:
    env: Env
    oidc: OidcServer
    mcp: McpServer
    daemon: Daemon


@pytest.fixture
def setup(
    env: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory, browser_env: BrowserEnvFactory
) -> Iterator[Callable[..., Setup]]:
    """Factory: a logged-in daemon for an mcp SDK server started with the given options."""
    daemons: list[Daemon] = []

    def make(**mcp_options: Any) -> Setup:
        oidc = oidc_server()
        mcp = mcp_server(oidc, **mcp_options)
        configure(env, mcp.url)
        daemon = start_daemon(env)
        daemons.append(daemon)
        log_in(env, browser_env)
        return Setup(env, oidc, mcp, daemon)

    yield make
    for daemon in daemons:
        daemon.stop()


def tool_text(answer: dict[str, Any]) -> str:
    assert "result" in answer, answer
    return str(answer["result"]["content"][0]["text"])


def echo(host: RawHost, ident: int, text: str = "hi") -> dict[str, Any]:
    return host.request(ident, "tools/call", {"name": "echo", "arguments": {"text": text}})


def broker_error(answer: dict[str, Any]) -> dict[str, str]:
    assert "error" in answer, answer
    detail: dict[str, str] = answer["error"]["data"]["ncp_broker"]
    return detail


# ---- bad input from the host ------------------------------------------------------------------------


def test_a_malformed_line_gets_a_parse_error_and_the_proxy_goes_on(setup: Callable[..., Setup]) -> None:
    """Not JSON → -32700; JSON that is no message → -32600; both with id null; then requests still work."""
    s = setup()
    with RawHost(s.env, NAME) as host:
        host.initialize()
        host.send(b'{"jsonrpc": "2.0", "id": 1, "method": \n')
        parse_error = host.receive()
        host.send(b'"just a string"\n')
        invalid = host.receive()
        assert tool_text(echo(host, 2)) == "hi"
    assert parse_error["id"] is None
    assert parse_error["error"]["code"] == -32700
    assert invalid["id"] is None
    assert invalid["error"]["code"] == -32600
    assert "not a JSON-RPC message" in host.stderr()


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_an_oversized_message_is_refused_without_growing_memory(setup: Callable[..., Setup]) -> None:
    """A 200 MiB line with a 1 MiB cap is skipped unread (peak RSS stays far below it) and answered."""
    s = setup()
    cap = 1024 * 1024
    with RawHost(s.env, NAME, "--max-message-bytes", str(cap)) as host:
        host.initialize()
        before = _peak_rss(host.proc.pid)
        chunk = b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"padding":"' + b"x" * (1 << 20)
        for _ in range(200):
            host.send(chunk)
        host.send(b'"}}\n')
        refused = host.receive()
        assert tool_text(echo(host, 3)) == "hi"
        peak = _peak_rss(host.proc.pid)
    assert refused["id"] is None
    assert refused["error"]["code"] == -32600
    assert f"over {cap} bytes" in refused["error"]["message"]
    assert peak - before < 32 * 1024 * 1024, (before, peak)


# ---- the remote server ------------------------------------------------------------------------------


def test_an_unreachable_server_fails_that_request_and_the_next_tries_afresh(
    setup: Callable[..., Setup],
) -> None:
    """Server down: that request gets a JSON-RPC error naming the cause; server up again: the next works."""
    s = setup(stateless=True)
    with RawHost(s.env, NAME) as host:
        host.initialize()
        s.mcp.stop()
        down = echo(host, 1)
        s.mcp.start()
        again = echo(host, 2, "back")
    assert down["error"]["code"] == -32603
    assert "cannot reach" in down["error"]["message"]
    assert tool_text(again) == "back"


class _FlakyServer(http.server.ThreadingHTTPServer):
    """Answers the first POST 503, every later one with a JSON-RPC result echoing the request's id."""

    def __init__(self) -> None:
        self.posts = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.posts += 1
                if outer.posts == 1:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answer = json.dumps({"jsonrpc": "2.0", "id": body.get("id"), "result": {"ok": True}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return

        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True


def test_a_5xx_answer_fails_that_request_and_the_next_tries_afresh(env: Env) -> None:
    """HTTP 503: a JSON-RPC error for that request with the status; the next request is sent and answered."""
    flaky = _FlakyServer()
    thread = threading.Thread(target=flaky.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{flaky.server_address[1]}/mcp"
    key = "flaky-access-key-0123456789"
    env.write_config(
        {NAME: {"url": url, "auth": {"type": "bearer", "token": key, "allowInsecureLoopback": True}}}
    )
    daemon = start_daemon(env)
    try:
        with RawHost(env, NAME) as host:
            failed = host.request(1, "ping")
            answered = host.request(2, "ping")
    finally:
        daemon.stop()
        flaky.shutdown()
        flaky.server_close()
    assert failed["error"]["code"] == -32603
    assert "HTTP 503" in failed["error"]["message"]
    assert answered == {"jsonrpc": "2.0", "id": 2, "result": {"ok": True}}
    assert flaky.posts == 2


# ---- the broker -------------------------------------------------------------------------------------


def test_broker_not_running_and_autostart_off_says_so_once_and_answers_errors(env: Env) -> None:
    """No daemon, NCP_BROKER_NO_AUTOSTART: one stderr line with the fix; every request a JSON-RPC error."""
    env.write_config({})
    with RawHost(env, NAME, extra_env=NO_AUTOSTART) as host:
        answers = [host.request(i, "tools/list") for i in range(3)]
        time.sleep(0.2)
        said = host.stderr()
    for answer in answers:
        assert broker_error(answer)["code"] == "not_running"
        assert "ncp-broker start" in broker_error(answer)["hint"]
        assert "ncp-broker start" in answer["error"]["message"]
    lines = [line for line in said.splitlines() if "not running" in line]
    assert len(lines) == 1, said
    assert "ncp-broker start" in lines[0]


def test_broker_that_cannot_start_says_why(env: Env) -> None:
    """Autostart on, but the config is broken: stderr says the daemon could not start and why."""
    env.config.write_text("{ not json")
    env.config.chmod(0o600)
    with RawHost(env, NAME) as host:
        answer = host.request(1, "tools/list")
        said = host.stderr()
    assert broker_error(answer)["code"] == "not_running"
    assert "could not start ncp-broker" in said
    assert str(env.config) in said  # the config error names the file


def test_autostart_starts_the_daemon_and_says_so(setup: Callable[..., Setup]) -> None:
    """No daemon: the proxy starts it as `ncp-broker start` would, says so on stderr, and serves."""
    s = setup()
    s.daemon.stop()
    with RawHost(s.env, NAME) as host:
        host.initialize()
        answer = echo(host, 1)
        said = host.stderr()
    stopped = s.env.run("ncp-broker", "stop")
    assert tool_text(answer) == "hi"
    assert "not running" in said
    assert "ncp-broker started (pid" in said
    assert "ncp-broker stopped" in stopped.stdout


def test_the_proxy_reconnects_to_a_restarted_daemon(setup: Callable[..., Setup]) -> None:
    """The daemon restarts under a running proxy (autostart off): the next request gets its token."""
    s = setup()
    with RawHost(s.env, NAME, extra_env=NO_AUTOSTART) as host:
        host.initialize()
        first = echo(host, 1, "one")
        s.daemon.stop()
        s.daemon = start_daemon(s.env)
        second = echo(host, 2, "two")
    s.daemon.stop()
    assert tool_text(first) == "one"
    assert tool_text(second) == "two"


# ---- the end ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["stdin closed", "SIGTERM"])
def test_the_host_going_away_deletes_the_session_and_exits_0(setup: Callable[..., Setup], how: str) -> None:
    """End of input or SIGTERM: the session is DELETEd at the server and the proxy exits with status 0."""
    s = setup()
    with RawHost(s.env, NAME) as host:
        host.initialize()
        assert tool_text(echo(host, 1)) == "hi"
        if how == "SIGTERM":
            host.signal(signal.SIGTERM)
        else:
            host.close_stdin()
        status = host.wait()
    assert status == 0, host.stderr()
    assert s.mcp.stats()["http_methods"].get("DELETE") == 1


# ---- the token ----------------------------------------------------------------------------------------


def test_the_token_is_only_in_the_authorization_header(setup: Callable[..., Setup]) -> None:
    """Rule 8: with --verbose, the token is in no stderr line, argv or environment of the proxy."""
    s = setup()
    with RawHost(s.env, NAME, "--verbose") as host:
        host.initialize()
        assert tool_text(echo(host, 1)) == "hi"
        token = ncp_client.get_token(NAME, socket_path=s.env.socket)
        assert tool_text(echo(host, 2)) == "hi"
        cmdline = Path(f"/proc/{host.proc.pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{host.proc.pid}/environ").read_bytes()
    said = host.stderr()
    assert "host → server" in said  # verbose did log
    assert token not in said
    assert token.encode() not in cmdline
    assert token.encode() not in environ


def test_an_access_key_server_without_a_key_answers_with_the_command(env: Env) -> None:
    """A bearer entry with no key yet: no login is tried; the request's error names the command."""
    env.write_config(
        {NAME: {"url": "http://127.0.0.1:9/mcp", "auth": {"type": "bearer", "allowInsecureLoopback": True}}}
    )
    daemon = start_daemon(env)
    try:
        with RawHost(env, NAME) as host:
            answer = host.request(1, "tools/list")
    finally:
        daemon.stop()
    assert broker_error(answer)["code"] == "needs_login"
    assert "--access-key" in broker_error(answer)["hint"]
