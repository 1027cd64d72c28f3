"""docs/protocol.md is the reference for clients in other languages: its tables must say exactly what the
daemon's message types (brokerd/wire.py) are — every request's fields, every result's fields and types,
every error code — so the docs cannot drift from the wire (issue "fast thin path", item 3)."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import msgspec
import pytest

from brokerd import wire

DOC = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()


def _table_after(heading: str) -> list[list[str]]:
    """The rows (cells, stripped) of the first table after the line ``heading``."""
    lines = DOC.splitlines()
    start = lines.index(heading)
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set("".join(cells)) <= set("-: "):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]  # without the header


def _top_level_names(cell: str) -> list[str]:
    """The backticked names of a fields cell, leaving out what parentheses say about them."""
    depth, kept = 0, []
    for ch in cell:
        depth += ch == "("
        if depth == 0:
            kept.append(ch)
        depth -= ch == ")"
    return re.findall(r"`([a-z_]+)`", "".join(kept))


def _requests() -> dict[str, type[msgspec.Struct]]:
    found = {}
    for cls in typing.get_args(wire.Request):
        tag = cls.__struct_config__.tag
        assert isinstance(tag, str)
        found[tag] = cls
    return found


def test_every_request_is_in_the_table_with_its_fields() -> None:
    """Each op of the Request union has a row whose fields are exactly the Struct's (``id`` aside)."""
    rows = {cells[0].strip("`"): cells for cells in _table_after("## Requests")}
    requests = _requests()
    assert set(rows) == set(requests)
    for op, cls in requests.items():
        documented = _top_level_names(rows[op][1])
        actual = [f for f in cls.__struct_fields__ if f != "id"]
        assert sorted(documented) == sorted(actual), op


def _answer_types() -> set[type[msgspec.Struct]]:
    """Every Struct a result can contain: the Result union and what its fields hold, transitively."""
    seen: set[type[msgspec.Struct]] = set()
    todo = list(typing.get_args(wire.Result))
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for field in _fields(cls):
            todo += _structs_in(field.type)
    return seen


def _fields(cls: type[msgspec.Struct]) -> tuple[msgspec.inspect.Field, ...]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    return info.fields


def _structs_in(t: msgspec.inspect.Type) -> list[type[msgspec.Struct]]:
    if isinstance(t, msgspec.inspect.StructType):
        return [t.cls]
    if isinstance(t, msgspec.inspect.UnionType):
        return [s for member in t.types for s in _structs_in(member)]
    if isinstance(t, msgspec.inspect.ListType):
        return _structs_in(t.item_type)
    return []


def _words(t: msgspec.inspect.Type, *, optional: bool) -> str:
    """How the docs write type ``t``."""
    if isinstance(t, msgspec.inspect.UnionType):
        members = [m for m in t.types if not isinstance(m, msgspec.inspect.NoneType)]
        (only,) = members
        return _words(only, optional=optional) + ("" if optional else " or null")
    if isinstance(t, msgspec.inspect.ListType):
        return f"list of {_words(t.item_type, optional=False)}" + ("s" if _is_scalar(t.item_type) else "")
    if isinstance(t, msgspec.inspect.StructType):
        return f"[{t.cls.__name__}](#{t.cls.__name__.lower()})"
    simple = {
        msgspec.inspect.StrType: "string",
        msgspec.inspect.LiteralType: "string",
        msgspec.inspect.CustomType: "string",  # a Secret, revealed on the wire
        msgspec.inspect.FloatType: "number",
        msgspec.inspect.IntType: "integer",
        msgspec.inspect.BoolType: "boolean",
    }
    return simple[type(t)]


def _is_scalar(t: msgspec.inspect.Type) -> bool:
    return not isinstance(t, msgspec.inspect.StructType)


ANSWERS = sorted(_answer_types(), key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", ANSWERS, ids=[c.__name__ for c in ANSWERS])
def test_every_result_has_a_table_with_its_fields_and_types(cls: type[msgspec.Struct]) -> None:
    """Each result Struct has a ``### Name`` table listing exactly its fields, with their types, and
    marks as *optional* exactly the fields the encoder leaves out when they do not apply."""
    rows = {cells[0].strip("`"): cells for cells in _table_after(f"### {cls.__name__}")}
    fields = _fields(cls)
    assert set(rows) == {f.name for f in fields}
    omits = bool(cls.__struct_config__.omit_defaults)
    for field in fields:
        optional = omits and not field.required
        _, type_cell, meaning = rows[field.name]
        assert type_cell == _words(field.type, optional=optional), field.name
        assert meaning.startswith("*optional:*") is optional, field.name


def test_every_error_code_is_in_the_table() -> None:
    """The error table lists exactly the codes the daemon sends."""
    rows = {cells[0].strip("`") for cells in _table_after("## Answers")}
    assert rows == set(typing.get_args(wire.ErrorCode))
