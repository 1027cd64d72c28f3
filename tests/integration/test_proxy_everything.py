"""Traffic in both directions through ``ncp-broker proxy``: npm's ``@modelcontextprotocol/server-everything``
as the remote server, three real hosts (the mcp SDK's stdio client, the TypeScript SDK's, the Inspector's
CLI), and the HTTP+SSE (2024-11-05) fallback.

The server needs no login; its entry is an access-key server (a fixed test key it ignores), which is also
how the proxy treats any bearer entry. Nothing of the MCP side is simulated: every request a server sends
(sampling, form and URL elicitation, roots) must reach the host and the host's answer must reach the server,
which puts it into the tool's result.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest

from tests.conftest import Daemon, Env, start_daemon
from tests.servers.everything import Everything, start_everything
from tests.servers.fixtures import SERVERS_DIR
from tests.servers.proxy_hosts import RawHost, initialize_message, proxy_argv, sdk_host, stderr_log

pytestmark = [
    pytest.mark.integration,
    # ping and logging/setLevel are deprecated from 2026-07-28 on; these hosts speak 2025-11-25
    # (mode="legacy"), where both are part of the protocol and server-everything uses them.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

NAME = "everything"
KEY = "everything-test-access-key"  # the server ignores it; the proxy sends it as a bearer entry's key


def _configure(env: Env, url: str) -> None:
    env.write_config(
        {NAME: {"url": url, "auth": {"type": "bearer", "token": KEY, "allowInsecureLoopback": True}}}
    )


@pytest.fixture
def everything(env: Env, tmp_path: Path) -> Iterator[tuple[Everything, Daemon]]:
    server = start_everything(tmp_path / "servers")
    _configure(env, server.url)
    daemon = start_daemon(env)
    try:
        yield server, daemon
    finally:
        daemon.stop()
        server.stop()


def _text(result: Any) -> str:
    assert not result.is_error, result.content
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def _sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text="sampled by the host"), model="host"
    )


async def _elicit(context: Any, params: Any) -> types.ElicitResult:
    if getattr(params, "mode", None) == "url":
        return types.ElicitResult(action="accept")
    return types.ElicitResult(action="accept", content={"name": "Ada", "check": True, "integer": 7})


async def _roots(context: Any) -> types.ListRootsResult:
    root = types.Root.model_validate({"uri": "file:///tmp/host-root", "name": "host-root"})
    return types.ListRootsResult(roots=[root])


def test_server_requests_reach_the_host_and_its_answers_reach_the_server(
    env: Env, everything: tuple[Everything, Daemon]
) -> None:
    """Sampling, form and URL elicitation, roots: each server request is answered by the host's callback,
    and the answer is in the tool's result; ping and progress pass too."""
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async def session() -> dict[str, str]:
        async with sdk_host(
            env, NAME, sampling_callback=_sample, elicitation_callback=_elicit, list_roots_callback=_roots
        ) as client:
            await client.send_ping()
            out = {
                "sampling": _text(await client.call_tool("trigger-sampling-request", {"prompt": "hi"})),
                "form": _text(await client.call_tool("trigger-elicitation-request", {})),
                "url": _text(
                    await client.call_tool(
                        "trigger-url-elicitation", {"url": "https://example.invalid/consent"}
                    )
                ),
                "roots": _text(await client.call_tool("get-roots-list", {})),
            }
            args = {"duration": 1, "steps": 3}
            out["progress"] = _text(
                await client.call_tool("trigger-long-running-operation", args, progress_callback=on_progress)
            )
            return out

    out = anyio.run(session)
    assert "sampled by the host" in out["sampling"]
    assert "Ada" in out["form"]
    assert "accept" in out["url"]
    assert "file:///tmp/host-root" in out["roots"]
    assert seen == [1, 2, 3]


def test_logging_and_resource_updates_arrive_on_the_get_stream(
    env: Env, everything: tuple[Everything, Daemon]
) -> None:
    """Notifications the server sends outside any request (its simulated logging, resource updates for a
    subscription) reach the host through the proxy's GET stream."""
    logs: list[str] = []
    updates: list[str] = []
    got_both = anyio.Event()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.level)
        if updates:
            got_both.set()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))
            if logs:
                got_both.set()

    async def session() -> None:
        async with sdk_host(env, NAME, logging_callback=on_log, message_handler=on_message) as client:
            uri = "demo://resource/static/document/architecture.md"
            await client.set_logging_level("debug")
            await client.subscribe_resource(uri)
            await client.call_tool("toggle-simulated-logging", {})
            await client.call_tool("toggle-subscriber-updates", {})
            with anyio.fail_after(30):
                await got_both.wait()
            await client.call_tool("toggle-simulated-logging", {})
            await client.call_tool("toggle-subscriber-updates", {})

    anyio.run(session)
    assert logs
    assert updates


def test_a_cancelled_request_leaves_the_session_usable(
    env: Env, everything: tuple[Everything, Daemon]
) -> None:
    """The host cancels a long call (notifications/cancelled goes through); the next call is answered."""

    async def session() -> str:
        async with sdk_host(env, NAME) as client:
            with anyio.move_on_after(1):
                await client.call_tool("trigger-long-running-operation", {"duration": 20, "steps": 2})
            return _text(await client.call_tool("echo", {"message": "still here"}))

    assert "still here" in anyio.run(session)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is needed for the TypeScript host and the Inspector")
    return node


def test_the_typescript_sdk_host(env: Env, everything: tuple[Everything, Daemon]) -> None:
    """@modelcontextprotocol/sdk's StdioClientTransport + Client through the proxy: tools, sampling,
    elicitation and roots answered by the TypeScript host."""
    log = stderr_log(env)
    with log.open("ab") as err:
        done = subprocess.run(
            [_node(), str(SERVERS_DIR / "ts_host.mjs"), "tools,echo,sampling,elicitation,roots", "--",
             *proxy_argv(NAME)],
            capture_output=False,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env.vars,
            timeout=120,
            check=False,
        )  # fmt: skip
    out = json.loads(done.stdout)
    assert done.returncode == 0, (out, log.read_text())
    assert "trigger-sampling-request" in out["tools"]
    assert "from the TypeScript host" in out["echo"]
    assert "sampled by the TypeScript host" in out["sampling"]
    assert "Ada" in out["elicitation"]
    assert "file:///tmp/ts-host-root" in out["roots"]


def test_the_inspector_cli(env: Env, everything: tuple[Everything, Daemon]) -> None:
    """@modelcontextprotocol/inspector-cli --method tools/list and tools/call against the proxy command."""
    cli = SERVERS_DIR / "node_modules" / "@modelcontextprotocol" / "inspector-cli" / "build" / "index.js"
    log = stderr_log(env, "inspector")
    results = []
    for method in (["--method", "tools/list"], ["--method", "tools/call", "--tool-name", "echo",
                                                 "--tool-arg", "message=from the inspector"]):  # fmt: skip
        with log.open("ab") as err:
            done = subprocess.run(
                [_node(), str(cli), *proxy_argv(NAME), *method],
                # inspector-cli 1.0.3 looks for ../package.json from the working directory but imports it
                # from its module's: only its build/ directory satisfies both.
                cwd=cli.parent,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env.vars,
                timeout=120,
                check=False,
            )
        assert done.returncode == 0, log.read_text()
        results.append(json.loads(done.stdout))
    listed, called = results
    assert "echo" in {tool["name"] for tool in listed["tools"]}
    assert "from the inspector" in called["content"][0]["text"]


@pytest.mark.parametrize("flag", ["auto", "sse"])
def test_an_http_sse_server_through_the_fallback(env: Env, tmp_path: Path, flag: str) -> None:
    """A 2024-11-05 HTTP+SSE server: `--transport auto` falls back after the first POST's 404/405;
    `--transport sse` goes there at once. Either way the host initializes, lists and calls tools."""
    server = start_everything(tmp_path / "servers", "sse")
    _configure(env, server.url)
    daemon = start_daemon(env)
    try:
        with RawHost(env, NAME, "--transport", flag) as host:
            host.send(initialize_message(0, "2024-11-05"))
            initialized = host.receive()
            host.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            listed = host.request(1, "tools/list")
            called = host.request(2, "tools/call", {"name": "echo", "arguments": {"message": "over sse"}})
            said = host.stderr()
    finally:
        daemon.stop()
        server.stop()
    assert initialized["result"]["serverInfo"]
    assert "echo" in {t["name"] for t in listed["result"]["tools"]}
    assert "over sse" in called["result"]["content"][0]["text"]
    assert ("using HTTP+SSE" in said) == (flag == "auto")
