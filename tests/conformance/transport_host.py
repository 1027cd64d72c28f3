"""A host for the conformance suite's client *transport* scenarios: the mcp SDK's ``Client``, reaching the
suite's server either directly (Streamable HTTP) or through ``ncp-broker proxy`` (stdio).

    transport_host.py direct|proxy|command SERVER_URL        (the suite appends SERVER_URL)

Both ways run the same scenario code (the table below), so the suite's checks compare the proxy with the
SDK's own HTTP transport. ``proxy`` writes a private temporary broker config with one server, ``conf``, at
SERVER_URL (an access-key server, since the scenarios need no login: the key is a fixed test value sent as
``Authorization: Bearer``, which these scenarios do not check), and runs the host with the proxy as its
stdio server; the proxy starts the daemon itself (autostart) and this program stops it afterwards
(``ncp-broker stop``). The proxy's stderr and the daemon's log go to this program's stderr, which the suite
keeps in ``stderr.txt``. ``command`` runs another stdio bridge instead, for comparison: the argv in
``$TRANSPORT_HOST_COMMAND`` (JSON list; ``{url}`` is replaced by SERVER_URL), e.g. PyPI's ``mcp-proxy`` or
npm's ``mcp-remote`` (docs/architecture.md records such a run; CI runs only ``direct`` and ``proxy``).

Per scenario (``MCP_CONFORMANCE_SCENARIO``; ``MCP_CONFORMANCE_PROTOCOL_VERSION`` picks the SDK's mode:
``auto``, with ``server/discover``, from 2026-07-28, else ``legacy``, the ``initialize`` handshake):

* initialize, json-schema-ref-no-deref: list the tools;
* tools_call, http-standard-headers, request-metadata: list, then ``add_numbers(5, 3)``;
* sse-retry: list, then ``test_reconnection`` (the server closes the stream; the transport resumes);
* json-schema-2020-12-preservation: list, then echo ``json_schema_2020_12_tool``'s input schema back;
* http-invalid-tool-headers: list, then call every listed tool with its required arguments stubbed;
* http-custom-headers: list, then the calls the context's ``toolCalls`` names (listed tools only);
* elicitation-sep1034-client-defaults: accept elicitations with the schema's defaults;
* sep-2322-client-request-state: accept with ``{"confirmed": true}`` across the MRTR test tools.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

SERVER = "conf"
TEST_KEY = "conformance-transport-test-key"  # not a secret: a fixed value the suite's servers ignore
TIMEOUT = 60.0
VERSION = os.environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION", "2025-11-25")
SCENARIO = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")


def _mode(scenario: str) -> str:
    if scenario == "json-schema-ref-no-deref":
        return "legacy"  # its mock server only speaks the initialize handshake, whatever version it names
    return "auto" if VERSION in MODERN_PROTOCOL_VERSIONS else "legacy"


def _context() -> dict[str, Any]:
    parsed = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    return parsed if isinstance(parsed, dict) else {}


async def _with_defaults(context: Any, params: Any) -> types.ElicitResult:
    content: dict[str, Any] = {}
    schema = getattr(params, "requested_schema", None) or {}
    for name, prop in schema.get("properties", {}).items():
        if isinstance(prop, dict) and "default" in prop:
            content[name] = prop["default"]
    return types.ElicitResult(action="accept", content=content)


async def _confirm(context: Any, params: Any) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"confirmed": True})


async def _sample(context: Any, params: Any) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=""), model="transport-host"
    )


async def _roots(context: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[])


def _stub(schema: dict[str, Any]) -> dict[str, Any]:
    by_type = {"string": "x", "integer": 0, "number": 0, "boolean": False, "object": {}, "array": []}
    props = schema.get("properties", {})
    return {name: by_type.get(props.get(name, {}).get("type"), "x") for name in schema.get("required", [])}


async def _call_quietly(client: Client, name: str, arguments: dict[str, Any]) -> None:
    try:
        await client.call_tool(name, arguments)
    except Exception as exc:  # noqa: BLE001 - these scenarios expect some calls to be refused
        sys.stderr.write(f"transport_host: call_tool({name!r}) failed: {exc}\n")


async def _scenario(client: Client, scenario: str) -> None:
    listed = await client.list_tools()
    names = [tool.name for tool in listed.tools]
    if scenario in ("tools_call", "http-standard-headers", "request-metadata"):
        await client.call_tool("add_numbers", {"a": 5, "b": 3})
    elif scenario == "sse-retry":
        await client.call_tool("test_reconnection", {})
    elif scenario == "json-schema-2020-12-preservation":
        focal = next(tool for tool in listed.tools if tool.name == "json_schema_2020_12_tool")
        await client.call_tool("json_schema_echo", {"schema": focal.input_schema})
    elif scenario == "http-invalid-tool-headers":
        for tool in listed.tools:
            await _call_quietly(client, tool.name, _stub(tool.input_schema))
    elif scenario == "http-custom-headers":
        for call in _context().get("toolCalls", []):
            if call["name"] in names:
                await _call_quietly(client, call["name"], call.get("arguments") or {})
    elif scenario == "elicitation-sep1034-client-defaults":
        await client.call_tool("test_client_elicitation_defaults", {})
    elif scenario == "sep-2322-client-request-state":
        for name in ("test_mrtr_echo_state", "test_mrtr_unrelated", "test_mrtr_no_state"):
            await client.call_tool(name, {})
        await client.call_tool("test_mrtr_no_result_type", {})


def _callbacks(scenario: str) -> dict[str, Callable[..., Awaitable[Any]]]:
    if scenario == "request-metadata":
        return {
            "sampling_callback": _sample,
            "list_roots_callback": _roots,
            "elicitation_callback": _with_defaults,
        }
    if scenario == "elicitation-sep1034-client-defaults":
        return {"elicitation_callback": _with_defaults}
    if scenario == "sep-2322-client-request-state":
        return {"elicitation_callback": _confirm}
    return {}


@contextlib.contextmanager
def _broker(url: str) -> Any:
    """A private broker installation with one access-key server at ``url``; stops its daemon at the end."""
    root = Path(tempfile.mkdtemp(prefix="ncpt-", dir="/tmp" if os.path.isdir("/tmp") else None))
    config = root / "config.json"
    auth = {"type": "bearer", "token": TEST_KEY, "allowInsecureLoopback": True}
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"mcpServers": {SERVER: {"url": url, "auth": auth}}, "store": "file"}, out)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_CONFORMANCE_", "NCP_"))}
    env |= {
        "NCP_BROKER_CONFIG": str(config),
        "NCP_BROKER_SOCK": str(root / "broker.sock"),
        "NCP_BROKER_DATA": str(root / "data"),
        "NCP_BROKER_STATE": str(root / "state"),
    }
    try:
        yield env
    finally:
        subprocess.run(
            [sys.executable, "-m", "brokerd", "stop"], env=env, capture_output=True, timeout=30, check=False
        )
        log = root / "state" / "broker.log"
        if log.exists():
            sys.stderr.write("--- daemon log ---\n" + log.read_text(errors="replace")[-8000:])
        shutil.rmtree(root, ignore_errors=True)


@contextlib.asynccontextmanager
async def _client(how: str, url: str, env: dict[str, str] | None) -> AsyncIterator[Client]:
    options: dict[str, Any] = {"mode": _mode(SCENARIO), **_callbacks(SCENARIO)}
    if how == "direct":
        async with Client(streamable_http_client(url), **options) as client:
            yield client
        return
    if how == "command":
        argv = [part.replace("{url}", url) for part in json.loads(os.environ["TRANSPORT_HOST_COMMAND"])]
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
    else:
        assert env is not None
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "brokerd", "proxy", SERVER], env=env
        )
    async with Client(stdio_client(params, errlog=sys.stderr), **options) as client:
        yield client


async def _run(how: str, url: str, env: dict[str, str] | None) -> None:
    with anyio.fail_after(TIMEOUT):
        async with _client(how, url, env) as client:
            await _scenario(client, SCENARIO)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] not in ("direct", "proxy", "command"):
        sys.stderr.write("usage: transport_host.py direct|proxy|command SERVER_URL (run by the suite)\n")
        return 2
    how, url = argv[1], argv[-1]
    try:
        if how != "proxy":
            anyio.run(_run, how, url, None)
        else:
            with _broker(url) as env:
                anyio.run(_run, how, url, env)
    except Exception as exc:  # noqa: BLE001 - the suite's checks judge; this says what the host saw
        sys.stderr.write(f"transport_host: {SCENARIO} ({VERSION}, {how}): {type(exc).__name__}: {exc}\n")
        return 1
    print(f"transport_host: {SCENARIO} ({VERSION}, {how}): ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
