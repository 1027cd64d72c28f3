"""brokerd.shape: a JSON value against a msgspec type, the first mismatch named in our own words."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import pytest

from brokerd import config, shape, wire
from brokerd.secret import Secret, dec_hook


class _Inner(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    max_age: int
    label: str | None = None


class _Outer(msgspec.Struct):
    inner: _Inner
    ratio: float = 1.0
    tags: list[str] = []
    extra: dict[str, Any] = {}
    secret: Secret | None = None
    mode: Literal["a", "b"] = "a"


CASES: list[tuple[str, Any, str, str]] = [
    ("not an object", [], "$", "expected an object, not a list"),
    ("missing", {}, "$", 'missing the required key "inner"'),
    ("nested missing", {"inner": {}}, "$.inner", 'missing the required key "maxAge"'),
    (
        "unknown key",
        {"inner": {"maxAge": 1, "x": 2}},
        "$.inner",
        'unknown key "x" (known keys: maxAge, label)',
    ),
    (
        "bool is not an int",
        {"inner": {"maxAge": True}},
        "$.inner.maxAge",
        "expected an integer, not true or false",
    ),
    (
        "fraction",
        {"inner": {"maxAge": 1.5}},
        "$.inner.maxAge",
        "expected an integer, not a number with a fraction",
    ),
    ("float", {"inner": {"maxAge": 1}, "ratio": "x"}, "$.ratio", "expected a number, not a string"),
    ("list item", {"inner": {"maxAge": 1}, "tags": ["a", None]}, "$.tags[1]", "expected a string, not null"),
    (
        "secret",
        {"inner": {"maxAge": 1}, "secret": 5},
        "$.secret",
        "expected a string or null, not an integer",
    ),
    ("literal", {"inner": {"maxAge": 1}, "mode": "c"}, "$.mode", 'expected one of "a", "b"'),
    (
        "literal kind",
        {"inner": {"maxAge": 1}, "mode": 1},
        "$.mode",
        'expected one of "a", "b", not an integer',
    ),
]


@pytest.mark.parametrize(("label", "value", "where", "what"), CASES, ids=[c[0] for c in CASES])
def test_first_problem_is_named_with_its_path(label: str, value: Any, where: str, what: str) -> None:
    """Each mismatch is reported with its JSON path and our sentence, and msgspec refuses it too."""
    assert shape.problem(value, _Outer) == shape.Problem(where, what)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(value, _Outer, dec_hook=dec_hook)


@pytest.mark.parametrize(
    "value",
    [
        {"inner": {"maxAge": 0}},
        {"inner": {"maxAge": -(2**63), "label": None}, "ratio": 2, "tags": [], "extra": {"k": [1, {}]}},
        {"inner": {"maxAge": 2**64 - 1, "label": "x"}, "secret": "s", "mode": "b", "unknown": 1},
    ],
)
def test_what_is_accepted_converts(value: Any) -> None:
    """A value shape accepts is one msgspec converts: the two never disagree on these."""
    assert shape.problem(value, _Outer) is None
    msgspec.convert(value, _Outer, dec_hook=dec_hook)


def test_literal_values_are_quoted_only_when_asked() -> None:
    """A wrong value (perhaps a token in the wrong field) is quoted only with quote_values."""
    value = {"inner": {"maxAge": 1}, "mode": "tok-SECRET"}
    assert shape.problem(value, _Outer, quote_values=True) == shape.Problem(
        "$.mode", 'expected one of "a", "b", not "tok-SECRET"'
    )
    found = shape.problem(value, _Outer)
    assert found is not None
    assert "SECRET" not in found.what


def test_tagged_union_dispatches_on_the_tag() -> None:
    """A request union is judged by its op: a missing op, an unknown op, then the chosen Struct."""
    assert shape.problem({"server": "x"}, wire.Request) == shape.Problem("$", 'missing the required key "op"')
    unknown = shape.problem({"op": "nope"}, wire.Request)
    assert unknown is not None
    assert unknown.where == "$.op"
    assert unknown.what.startswith('expected one of "get_token", "hello", ')
    assert shape.problem({"op": "get_token", "server": "x", "min_ttl": 5}, wire.Request) is None
    assert shape.problem({"op": "get_token"}, wire.Request) == shape.Problem(
        "$", 'missing the required key "server"'
    )


def test_keys_that_are_not_identifiers_are_bracketed() -> None:
    """Dict keys are shown as JSON strings in brackets, as in $.mcpServers["my server"]."""
    found = shape.problem({"mcpServers": {"my server": {"url": 1}}}, config._TopLevel)
    assert found is None  # entries are Any at the top level; config checks them one by one
    assert shape.problem({"a b": 1}, dict[str, str]) == shape.Problem(
        '$["a b"]', "expected a string, not an integer"
    )


class _Constrained(msgspec.Struct):
    n: Annotated[int, msgspec.Meta(ge=0)]


class _Unmodelled(msgspec.Struct):
    when: bytes


@pytest.mark.parametrize("type_", [_Constrained, _Unmodelled])
def test_kinds_it_does_not_model_are_refused_loudly(type_: type) -> None:
    """A constraint or a kind of type shape does not check raises TypeError instead of passing anything."""
    with pytest.raises(TypeError, match=r"brokerd\.shape"):
        shape.problem({"n": 1, "when": "x"}, type_)
