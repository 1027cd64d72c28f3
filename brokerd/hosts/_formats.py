"""One document interface over the three file formats hosts use: JSON(C), TOML and YAML.

Each document is parsed with a round-trip library that keeps what it does not touch: our own surgical
JSON(C) editor (``_jsonedit``), tomlkit for TOML, ruamel.yaml for YAML. The last two are optional
dependencies (``pip install 'ncp-broker[hosts]'``), imported only when a host that needs them is used.

``get`` returns plain Python data (dicts, lists, strings…), whatever the library's own types are.
"""

from __future__ import annotations

import io
import re
from typing import Any, Protocol

from brokerd.hosts._jsonedit import JsonDocument, JsonEditError

__all__ = ["Document", "FormatError", "MissingLibrary", "parse"]


class FormatError(Exception):
    """The file cannot be parsed, or a key on the way to the entries holds something else."""


class MissingLibrary(Exception):
    """The round-trip library this file format needs is not installed."""


class Document(Protocol):
    def get(self, path: tuple[str, ...]) -> Any: ...
    def set(self, path: tuple[str, ...], value: Any) -> None: ...
    def remove(self, path: tuple[str, ...]) -> bool: ...
    def dump(self) -> str: ...


def parse(text: str, fmt: str) -> Document:
    """Parse ``text`` as ``fmt``: ``json``, ``jsonc`` (comments), ``jsonc+commas`` (and trailing commas),
    ``toml`` or ``yaml``.

    Raises:
        FormatError: the text is not a valid document of that format, or its top level is not a mapping.
        MissingLibrary: tomlkit or ruamel.yaml is needed and not installed.
    """
    if fmt.startswith("json"):
        try:
            return _Json(text, comments=fmt != "json", trailing_commas=fmt.endswith("+commas"))
        except JsonEditError as exc:
            raise FormatError(str(exc)) from None
    if fmt == "toml":
        return _Toml(text)
    if fmt == "yaml":
        return _Yaml(text)
    raise ValueError(f"unknown format {fmt!r}")


def _need(module: str) -> MissingLibrary:
    return MissingLibrary(
        f"this host's config file needs {module} to be edited without losing its formatting; "
        "install it with: pip install 'ncp-broker[hosts]'"
    )


class _Json(JsonDocument):
    def set(self, path: tuple[str, ...], value: Any) -> None:
        try:
            super().set(path, value)
        except JsonEditError as exc:
            raise FormatError(str(exc)) from None


def _walk(root: Any, path: tuple[str, ...], where: str, *, create: Any = None) -> Any:
    """The mapping at ``path`` under ``root``; missing mappings are made with ``create()`` when given.

    Raises:
        FormatError: something on the way is not a mapping.
    """
    node = root
    for depth, key in enumerate(path):
        child = node.get(key)
        if child is None:
            if create is None:
                return None
            child = node[key] = create()
        if not hasattr(child, "keys"):
            raise FormatError(f"{where}{'.'.join(path[: depth + 1])} is not a table/mapping")
        node = child
    return node


class _Toml:
    def __init__(self, text: str) -> None:
        try:
            import tomlkit
            import tomlkit.exceptions
        except ImportError:
            raise _need("tomlkit") from None
        self._tomlkit = tomlkit
        self._text = text
        try:
            self._doc = tomlkit.parse(text)
        except tomlkit.exceptions.ParseError as exc:
            raise FormatError(f"not valid TOML: {exc}") from None

    def get(self, path: tuple[str, ...]) -> Any:
        node = _walk(self._doc, path[:-1], "")
        if node is None or path[-1] not in node:
            return None
        value = node[path[-1]]
        return value.unwrap() if hasattr(value, "unwrap") else value

    def set(self, path: tuple[str, ...], value: Any) -> None:
        tomlkit = self._tomlkit
        # A super table renders its children as [mcp_servers.NAME], without an empty [mcp_servers].
        parent = _walk(self._doc, path[:-1], "", create=lambda: tomlkit.table(is_super_table=True))
        table = tomlkit.table()
        for key, item in value.items():
            if isinstance(item, dict):
                inline = tomlkit.inline_table()
                inline.update(item)
                table[key] = inline
            else:
                table[key] = item
        table.add(tomlkit.nl())  # a blank line before whatever table follows, as codex's own files have
        parent[path[-1]] = table

    def remove(self, path: tuple[str, ...]) -> bool:
        node = _walk(self._doc, path[:-1], "")
        if node is None or path[-1] not in node:
            return False
        del node[path[-1]]
        return True

    def dump(self) -> str:
        text = str(self._tomlkit.dumps(self._doc))
        if text.endswith("\n\n") and not self._text.endswith("\n\n"):
            text = text.rstrip("\n") + "\n"  # our table's blank line at the very end of the file
        return text


class _Yaml:
    def __init__(self, text: str) -> None:
        try:
            from ruamel.yaml import YAML
            from ruamel.yaml.comments import CommentedMap
            from ruamel.yaml.error import YAMLError
        except ImportError:
            raise _need("ruamel.yaml") from None
        self._map = CommentedMap
        self._yaml = YAML()  # round-trip mode: comments, key order and quoting are kept
        self._yaml.preserve_quotes = True
        self._yaml.width = 4096  # never fold a long path onto two lines
        mapping, sequence, offset = _yaml_indents(text)
        self._yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
        try:
            data = self._yaml.load(text)
        except YAMLError as exc:
            raise FormatError(f"not valid YAML: {exc}") from None
        if data is None:
            data = CommentedMap()
        if not isinstance(data, CommentedMap):
            raise FormatError("the top level is not a YAML mapping")
        self._data = data

    def get(self, path: tuple[str, ...]) -> Any:
        node = _walk(self._data, path[:-1], "")
        if node is None or path[-1] not in node:
            return None
        return _plain(node[path[-1]])

    def set(self, path: tuple[str, ...], value: Any) -> None:
        parent = _walk(self._data, path[:-1], "", create=self._map)
        parent[path[-1]] = self._map(value)

    def remove(self, path: tuple[str, ...]) -> bool:
        node = _walk(self._data, path[:-1], "")
        if node is None or path[-1] not in node:
            return False
        del node[path[-1]]
        return True

    def dump(self) -> str:
        out = io.StringIO()
        self._yaml.dump(self._data, out)
        return out.getvalue()


def _plain(value: Any) -> Any:
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _yaml_indents(text: str) -> tuple[int, int, int]:
    """The file's own mapping indent and sequence style, so ruamel writes new entries the same way.

    ruamel.yaml keeps comments and order but re-indents on output; telling it the file's indentation keeps
    the untouched parts as they were. Defaults are goose's own (serde_yaml): two spaces, ``- `` at the
    parent's column.
    """
    mapping = 2
    if match := re.search(r"^[^\s#][^\n]*:[ \t]*\n(?:[ \t]*(?:#[^\n]*)?\n)*( +)[^\s#-]", text, re.M):
        mapping = len(match.group(1))
    offset = 0
    if match := re.search(r"^( *)[^\s#-][^\n]*:[ \t]*\n( *)- ", text, re.M):
        offset = max(0, len(match.group(2)) - len(match.group(1)))
    return mapping, offset + 2, offset
