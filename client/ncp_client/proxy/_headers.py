"""The HTTP headers a Streamable HTTP client derives from each message's body, and the tool annotations
it must check.

A host that speaks stdio sends none of these; the proxy, being the HTTP client, adds what the MCP
specification asks of one:

* ``MCP-Protocol-Version`` on every request after initialization: the version of the message's own
  ``_meta`` (2026-07-28 and later, where every request carries it), else the one the ``initialize`` result
  negotiated (2025-06-18 to 2025-11-25); never on ``initialize`` itself.
* From 2026-07-28 (SEP-2243): ``Mcp-Method``; ``Mcp-Name`` for ``tools/call``, ``prompts/get`` (``name``)
  and ``resources/read`` (``uri``); ``Mcp-Param-{token}`` for each tool argument whose ``inputSchema``
  property carries ``x-mcp-header``. Values that are not plain printable ASCII without edge whitespace
  travel as ``=?base64?…?=``.
* Tools whose ``x-mcp-header`` annotations are invalid must be left out of ``tools/list`` (the one place
  where the proxy changes a message: :func:`invalid_annotation` says why, the proxy logs the tool's name).

The rules follow basic/transports/streamable-http.mdx of the 2026-07-28 specification.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "META_VERSION",
    "ToolHeaders",
    "encode_value",
    "invalid_annotation",
    "is_modern",
    "meta_version",
    "request_headers",
]

META_VERSION = "io.modelcontextprotocol/protocolVersion"
FIRST_MODERN = "2026-07-28"  # per-request metadata, no sessions, no GET stream, request headers
_DATED = re.compile(r"\d{4}-\d{2}-\d{2}")
_NAME_FIELD = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
_HEADER_SAFE = re.compile(r"[\x20-\x7e]*")
_SENTINEL = re.compile(r"=\?base64\?.*\?=", re.DOTALL)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 tchar
_HEADER_TYPES = frozenset({"string", "integer", "boolean"})
# JSON Schema keywords whose values are schemas; crossing any of them leaves the `properties` chain, where
# an annotation is invalid. `$ref` is not followed (a client must not dereference, SEP-2106).
_SUB_ONE = frozenset(
    {"items", "contains", "additionalProperties", "propertyNames", "unevaluatedItems",
     "unevaluatedProperties", "not", "if", "then", "else", "contentSchema"}
)  # fmt: skip
_SUB_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SUB_MAP = frozenset({"patternProperties", "dependentSchemas", "$defs", "definitions"})


def is_modern(version: str | None) -> bool:
    """True for 2026-07-28 and later revisions (dated versions compare as strings)."""
    return version is not None and bool(_DATED.fullmatch(version)) and version >= FIRST_MODERN


def meta_version(params: Mapping[str, Any]) -> str | None:
    meta = params.get("_meta")
    version = meta.get(META_VERSION) if isinstance(meta, dict) else None
    return version if isinstance(version, str) else None


def encode_value(value: str) -> str:
    """``value`` as a header value: Base64-wrapped unless printable ASCII, without edge whitespace, and
    not itself looking like the wrapping."""
    if _HEADER_SAFE.fullmatch(value) and value == value.strip() and not _SENTINEL.fullmatch(value):
        return value
    return f"=?base64?{base64.b64encode(value.encode()).decode()}?="


def _positions(schema: Any) -> Iterator[tuple[tuple[str, ...] | None, dict[str, Any]]]:
    """Every schema position, with its chain of ``properties`` keys (None once off that chain)."""
    stack: list[tuple[tuple[str, ...] | None, Any]] = [((), schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield path, node
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                stack.extend(((*path, k) if path is not None else None, v) for k, v in value.items())
            elif key in _SUB_ONE:
                stack.append((None, value))
            elif key in _SUB_LIST and isinstance(value, list):
                stack.extend((None, v) for v in value)
            elif key in _SUB_MAP and isinstance(value, dict):
                stack.extend((None, v) for v in value.values())


def invalid_annotation(schema: Any) -> str | None:
    """Why a tool's ``inputSchema`` has an invalid ``x-mcp-header`` annotation, or None if it has none."""
    seen: dict[str, str] = {}
    for path, node in _positions(schema):
        if "x-mcp-header" not in node:
            continue
        if not path:
            return "x-mcp-header outside a chain of `properties`"
        where = ".".join(path)
        token = node["x-mcp-header"]
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return f"property {where!r}: x-mcp-header is not an HTTP token"
        if node.get("type") not in _HEADER_TYPES:
            return f"property {where!r}: x-mcp-header needs type string, integer or boolean"
        if token.lower() in seen:
            return f"property {where!r}: x-mcp-header {token!r} repeats that of {seen[token.lower()]!r}"
        seen[token.lower()] = where
    return None


def _render(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)  # as the MCP SDKs render it
    return None  # null, objects, arrays: no header


class ToolHeaders:
    """Which arguments of which tool go into ``Mcp-Param-*`` headers, learnt from ``tools/list``."""

    def __init__(self) -> None:
        self._maps: dict[str, dict[tuple[str, ...], str]] = {}

    def learn(self, tools: list[Any]) -> list[tuple[str, str]]:
        """Record the annotations of a ``tools/list`` page; returns ``(name, reason)`` of invalid tools."""
        rejected: list[tuple[str, str]] = []
        for tool in tools:
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                continue
            name, schema = tool["name"], tool.get("inputSchema")
            if (reason := invalid_annotation(schema)) is not None:
                rejected.append((name, reason))
                self._maps.pop(name, None)
                continue
            self._maps[name] = {
                path: node["x-mcp-header"]
                for path, node in _positions(schema)
                if path and isinstance(node.get("x-mcp-header"), str)
            }
        return rejected

    def params(self, tool: str, arguments: Any) -> dict[str, str]:
        headers: dict[str, str] = {}
        for path, token in self._maps.get(tool, {}).items():
            value: Any = arguments
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if (rendered := _render(value)) is not None:
                headers[f"Mcp-Param-{token}"] = encode_value(rendered)
        return headers


def request_headers(
    method: str | None, params: Mapping[str, Any], negotiated: str | None, tools: ToolHeaders
) -> dict[str, str]:
    """The MCP headers for one POST, from the message's method and params (see the module docstring)."""
    headers: dict[str, str] = {}
    if method == "initialize":
        return headers
    version = meta_version(params) or negotiated
    if version is not None:
        headers["MCP-Protocol-Version"] = version
    if method is None or not is_modern(version):
        return headers
    headers["Mcp-Method"] = method
    field = _NAME_FIELD.get(method)
    if field is not None and isinstance(name := params.get(field), str):
        headers["Mcp-Name"] = encode_value(name)
    if method == "tools/call" and isinstance(name := params.get("name"), str):
        headers.update(tools.params(name, params.get("arguments")))
    return headers
