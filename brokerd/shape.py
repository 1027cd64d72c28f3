"""Does a decoded JSON document have the shape a msgspec type describes? Said in our own words.

msgspec's ``ValidationError`` text is msgspec's: its releases reword it (0.23 did), and the config file and
the socket protocol promise messages of their own. :func:`problem` walks the type's description
(:mod:`msgspec.inspect`) beside the value and names the first mismatch in document order: a JSON path
(``$.mcpServers["a"].url``) and a sentence (``expected a string or null, not an integer``). A value it
accepts converts with ``msgspec.convert(value, type_, dec_hook=brokerd.secret.dec_hook)``.

Only the kinds of type our own Structs use are modelled: Structs (``forbid_unknown_fields`` honoured),
tagged unions of Structs, unions, literals, str, int, float, bool, None, lists, dicts with string keys,
``Any`` and :class:`~brokerd.secret.Secret`. Any other kind, or a constraint such as ``Meta(ge=0)``,
raises ``TypeError``: a Struct that grows one fails its tests instead of being checked loosely.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec.inspect as mi

from brokerd.secret import Secret

__all__ = ["Problem", "problem"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Problem:
    """What is wrong (``what``) and where: a JSON path from ``$``."""

    where: str
    what: str


def problem(value: Any, type_: Any, where: str = "$", *, quote_values: bool = False) -> Problem | None:
    """The first place where ``value`` (as ``json.loads`` returns it) does not fit ``type_``, or None.

    With ``quote_values`` a wrong value for a literal is quoted (``not "magic"``); leave it off where the
    value may be a secret sent in the wrong field. Key names are always quoted.

    Raises:
        TypeError: ``type_`` uses a kind of type or a constraint this module does not model.
    """
    return _Checker(quote_values).check(value, _info(type_), where)


@functools.cache
def _info(type_: Any) -> mi.Type:
    return mi.type_info(type_)


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if _IDENTIFIER.match(name) else f"{where}[{json.dumps(name)}]"


def _kind(value: Any) -> str:
    """The JSON kind of ``value``, as a noun phrase."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _unconstrained(t: mi.Type) -> mi.Type:
    if isinstance(t, mi.Metadata):
        t = t.type
    bounds = ("gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length", "pattern")
    if any(getattr(t, name, None) is not None for name in bounds):
        raise TypeError(f"brokerd.shape does not check constraints: {t!r}")
    return t


def _describe(t: mi.Type) -> str:
    """What ``t`` accepts, as a noun phrase."""
    match t:
        case mi.NoneType():
            return "null"
        case mi.BoolType():
            return "true or false"
        case mi.IntType():
            return "an integer"
        case mi.FloatType():
            return "a number"
        case mi.StrType():
            return "a string"
        case mi.CustomType(cls=cls) if cls is Secret:
            return "a string"
        case mi.LiteralType(values=values):
            return "one of " + ", ".join(json.dumps(v) for v in sorted(values, key=str))
        case mi.ListType():
            return "a list"
        case mi.DictType() | mi.StructType():
            return "an object"
        case mi.AnyType():
            return "anything"
        case mi.UnionType(types=members):
            return _either([_unconstrained(m) for m in members])
    raise TypeError(f"brokerd.shape does not model {t!r}")


def _either(members: Sequence[mi.Type]) -> str:
    phrases = list(dict.fromkeys(_describe(m) for m in members))
    return " or ".join(phrases)


def _kind_fits(value: Any, t: mi.Type) -> bool:
    """Whether ``value`` is of the JSON kind ``t`` takes (a literal: one of its values)."""
    match t:
        case mi.NoneType():
            return value is None
        case mi.BoolType():
            return isinstance(value, bool)
        case mi.IntType():
            return isinstance(value, int) and not isinstance(value, bool)
        case mi.FloatType():
            return isinstance(value, int | float) and not isinstance(value, bool)
        case mi.StrType():
            return isinstance(value, str)
        case mi.CustomType(cls=cls) if cls is Secret:
            return isinstance(value, str)
        case mi.LiteralType(values=values):
            return not isinstance(value, bool) and value in values
        case mi.ListType():
            return isinstance(value, list)
        case mi.DictType() | mi.StructType():
            return isinstance(value, dict)
        case mi.AnyType():
            return True
    raise TypeError(f"brokerd.shape does not model {t!r}")


@dataclass(frozen=True)
class _Checker:
    quote_values: bool

    def check(self, value: Any, t: mi.Type, where: str) -> Problem | None:
        t = _unconstrained(t)
        if isinstance(t, mi.UnionType):
            return self._union(value, [_unconstrained(m) for m in t.types], where)
        if not _kind_fits(value, t):
            return Problem(where, self._mismatch(value, t))
        match t:
            case mi.ListType(item_type=item):
                return self._first(self.check(v, item, f"{where}[{i}]") for i, v in enumerate(value))
            case mi.DictType(key_type=key, value_type=item):
                if not isinstance(_unconstrained(key), mi.StrType | mi.AnyType):
                    raise TypeError(f"brokerd.shape models dicts with string keys only: {t!r}")
                return self._first(self.check(v, item, f"{where}[{json.dumps(k)}]") for k, v in value.items())
            case mi.StructType():
                return self._struct(value, t, where)
        return None

    def _mismatch(self, value: Any, t: mi.Type) -> str:
        if isinstance(t, mi.LiteralType) and isinstance(value, str):
            # The right kind, the wrong value: say which, when the value may be shown.
            return f"expected {_describe(t)}" + (
                f", not {json.dumps(value[:60])}" if self.quote_values else ""
            )
        return f"expected {_describe(t)}, not {_kind(value)}"

    @staticmethod
    def _first(problems: Iterable[Problem | None]) -> Problem | None:
        return next((p for p in problems if p is not None), None)

    def _union(self, value: Any, members: list[mi.Type], where: str) -> Problem | None:
        structs = [m for m in members if isinstance(m, mi.StructType)]
        if isinstance(value, dict) and structs and structs[0].tag_field is not None:
            return self._tagged(value, structs, where)
        for member in members:
            if _kind_fits(value, member):
                return self.check(value, member, where)
        return Problem(where, f"expected {_either(members)}, not {_kind(value)}")

    def _tagged(self, value: dict[str, Any], structs: list[mi.StructType], where: str) -> Problem | None:
        field = structs[0].tag_field
        assert field is not None
        by_tag = {s.tag: s for s in structs}
        if field not in value:
            return Problem(where, f'missing the required key "{field}"')
        chosen = by_tag.get(value[field])
        if chosen is None:
            names = ", ".join(json.dumps(tag) for tag in sorted(by_tag, key=str))
            return Problem(_key(where, field), f"expected one of {names}")
        return self._struct(value, chosen, where)

    def _struct(self, value: dict[str, Any], t: mi.StructType, where: str) -> Problem | None:
        fields = {f.encode_name: f for f in t.fields}
        for name, item in value.items():
            if name in fields:
                found = self.check(item, fields[name].type, _key(where, name))
                if found is not None:
                    return found
            elif name == t.tag_field:
                if item != t.tag:
                    return Problem(_key(where, name), f"expected {json.dumps(t.tag)}")
            elif t.forbid_unknown_fields:
                known = ", ".join(fields)
                return Problem(where, f'unknown key "{name}" (known keys: {known})')
        for name, f in fields.items():
            if f.required and name not in value:
                return Problem(where, f'missing the required key "{name}"')
        return None
