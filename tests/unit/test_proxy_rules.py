"""The stdio proxy's pure rules, table-driven: message classification, the HTTP headers derived from a
message, ``x-mcp-header`` validity, and the host-side line splitter with its size cap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import trio

from ncp_client.proxy._headers import (
    ToolHeaders,
    encode_value,
    invalid_annotation,
    is_modern,
    request_headers,
)
from ncp_client.proxy._jsonrpc import INVALID_REQUEST, PARSE_ERROR, NotJsonRpc, error_line, id_key, parse
from ncp_client.proxy._stdio import OVERSIZED, HostInput


@pytest.mark.parametrize(
    ("line", "kind", "method", "ident"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"ping"}', "request", "ping", 1),
        (b'{"jsonrpc":"2.0","id":"a","method":"ping"}', "request", "ping", "a"),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', "request", "ping", 1.5),  # the SDKs drop this id
        (
            b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
            "notification",
            "notifications/initialized",
            None,
        ),
        (b'{"jsonrpc":"2.0","id":7,"result":{}}', "response", None, 7),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', "batch", None, None),
    ],
)
def test_messages_are_classified_without_being_rebuilt(
    line: bytes, kind: str, method: str | None, ident: Any
) -> None:
    """Each host line keeps its bytes; kind, method and id are read from it."""
    message = parse(line)
    assert (message.kind, message.method, message.id, message.raw) == (kind, method, ident, line)


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"{nope", PARSE_ERROR),
        (b"\xff\xfe", PARSE_ERROR),
        (b'"text"', INVALID_REQUEST),
        (b"[]", INVALID_REQUEST),
    ],
)
def test_lines_that_are_no_message_are_refused(line: bytes, code: int) -> None:
    with pytest.raises(NotJsonRpc) as refused:
        parse(line)
    assert refused.value.code == code


def test_ids_keep_their_json_type() -> None:
    """1, 1.0 and "1" are three ids."""
    assert len({id_key(1), id_key(1.0), id_key("1")}) == 3


def test_error_lines_carry_the_broker_code_and_hint() -> None:
    answer = json.loads(error_line(3, -32603, "no", broker_code="needs_login", hint="ncp-broker login s"))
    assert answer["id"] == 3
    assert answer["error"]["data"]["ncp_broker"] == {"code": "needs_login", "hint": "ncp-broker login s"}


@pytest.mark.parametrize(
    ("value", "header"),
    [
        ("us-west1", "us-west1"),
        ("Hello, 世界", "=?base64?SGVsbG8sIOS4lueVjA==?="),
        (" padded ", "=?base64?IHBhZGRlZCA=?="),
        ("line1\nline2", "=?base64?bGluZTEKbGluZTI=?="),
        ("=?base64?literal?=", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
    ],
)
def test_header_values_follow_the_specification_examples(value: str, header: str) -> None:
    """The encoding table of 2026-07-28 streamable-http.mdx, Value Encoding."""
    assert encode_value(value) == header


def test_versions_before_and_after_2026_07_28() -> None:
    assert not is_modern("2025-11-25")
    assert is_modern("2026-07-28")
    assert not is_modern(None)
    assert not is_modern("draft")


def _tools(**properties: Any) -> list[dict[str, Any]]:
    return [{"name": "t", "inputSchema": {"type": "object", "properties": properties}}]


@pytest.mark.parametrize(
    ("schema", "valid"),
    [
        ({"type": "object", "properties": {"r": {"type": "string", "x-mcp-header": "Region"}}}, True),
        ({"type": "object", "properties": {"r": {"type": "string", "x-mcp-header": ""}}}, False),
        ({"type": "object", "properties": {"r": {"type": "number", "x-mcp-header": "R"}}}, False),
        ({"type": "object", "properties": {"r": {"type": "string", "x-mcp-header": "a b"}}}, False),
        ({"type": "object", "properties": {"r": {"type": "string", "x-mcp-header": "R\n"}}}, False),
        (
            {
                "type": "object",
                "properties": {
                    "a": {"type": "string", "x-mcp-header": "Same"},
                    "b": {"type": "string", "x-mcp-header": "same"},
                },
            },
            False,
        ),
        ({"type": "object", "items": {"type": "string", "x-mcp-header": "R"}}, False),
        (
            {
                "type": "object",
                "properties": {
                    "o": {"type": "object", "properties": {"i": {"type": "integer", "x-mcp-header": "I"}}}
                },
            },
            True,
        ),
        (
            {"type": "object", "anyOf": [{"properties": {"r": {"type": "string", "x-mcp-header": "R"}}}]},
            False,
        ),
    ],
)
def test_x_mcp_header_validity(schema: dict[str, Any], valid: bool) -> None:
    assert (invalid_annotation(schema) is None) == valid


def test_headers_of_a_modern_tools_call() -> None:
    """2026-07-28: version from _meta, Mcp-Method, Mcp-Name and the annotated argument."""
    tools = ToolHeaders()
    assert (
        tools.learn(_tools(region={"type": "string", "x-mcp-header": "Region"}, n={"type": "integer"})) == []
    )
    params = {
        "name": "t",
        "arguments": {"region": "us-west1", "n": 3},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"},
    }
    assert request_headers("tools/call", params, None, tools) == {
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "t",
        "Mcp-Param-Region": "us-west1",
    }


def test_headers_of_a_legacy_request_and_of_initialize() -> None:
    """Before 2026-07-28 only the negotiated version; never any on initialize."""
    tools = ToolHeaders()
    assert request_headers("tools/call", {"name": "t"}, "2025-11-25", tools) == {
        "MCP-Protocol-Version": "2025-11-25"
    }
    assert request_headers("initialize", {}, "2025-11-25", tools) == {}


def test_an_absent_or_null_argument_sends_no_header() -> None:
    tools = ToolHeaders()
    tools.learn(_tools(flag={"type": "boolean", "x-mcp-header": "Flag"}))
    assert tools.params("t", {"flag": None}) == {}
    assert tools.params("t", {}) == {}
    assert tools.params("t", {"flag": False}) == {"Mcp-Param-Flag": "false"}


async def _lines(data: list[bytes], limit: int) -> list[bytes]:
    read, write = os.pipe()
    host = HostInput(read, limit)
    os.close(read)
    out: list[bytes] = []

    async def feed() -> None:
        for chunk in data:
            os.write(write, chunk)
            await trio.sleep(0.01)
        os.close(write)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        async for line in host.lines():
            out.append(line)
    await host.aclose()
    return out


async def test_lines_are_split_across_reads_and_crlf_is_tolerated() -> None:
    assert await _lines([b'{"a"', b":1}\r\n\n", b'{"b":2}'], 100) == [b'{"a":1}', b'{"b":2}']


async def test_a_line_over_the_limit_is_skipped_to_its_newline() -> None:
    """Whether it arrives at once or over several reads, it becomes OVERSIZED; the next line survives."""
    assert await _lines([b"x" * 50 + b"\n", b"ok\n"], 10) == [OVERSIZED, b"ok"]
    assert await _lines([b"x" * 8, b"x" * 8, b"x" * 8, b"\nok\n"], 10) == [OVERSIZED, b"ok"]


def test_ncp_token_and_the_cli_do_not_load_the_proxy() -> None:
    """`import ncp_client` (ncp-token's path) and `import brokerd.cli` load no proxy, trio or httpx."""
    code = (
        "import sys, ncp_client, brokerd.cli; "
        "print(sorted(m for m in ('trio', 'httpx', 'httpx_sse', 'ncp_client.proxy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
