"""Surgical edits of JSON and JSONC documents: one member is added, replaced or removed, every other byte
is kept.

Python has no maintained round-trip JSONC library that does not need node (``jsonc-edit`` drives
Microsoft's parser in a node daemon; ``json-five``'s model wants whitespace nodes built by hand), and a
``json.loads``/``json.dumps`` round trip would re-indent the whole file and drop its comments. So this
module does what VS Code's ``jsonc-parser`` ``modify`` does: it finds the span of the member to change and
splices new text in, copying the file's own indentation and line endings.

Validation is not ours: comments (and, where the host allows them, trailing commas) are blanked out with
spaces, keeping every offset, and the result goes through :func:`json.loads`. Only a document it accepts
is edited, so the span walker below can rely on well-formed input.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["JsonDocument", "JsonEditError"]


class JsonEditError(Exception):
    """The document cannot be parsed, or the path to edit runs through something that is not an object."""


@dataclass
class _Node:
    start: int
    end: int  # one past the last character
    members: list[_Member] | None = None  # set for objects only


@dataclass
class _Member:
    key: str
    key_start: int
    value: _Node
    comma: int | None = field(default=None)  # offset of the comma that follows the value, if any


_WS = " \t\r\n"


def _blank(text: str, *, comments: bool, trailing_commas: bool) -> str:
    """``text`` with comments (and trailing commas) replaced by spaces; offsets and newlines unchanged.

    Raises:
        JsonEditError: a comment is found where none is allowed, or a block comment is not closed.
    """
    out = list(text)
    i, n = 0, len(text)
    last_comma: int | None = None  # a comma not yet followed by a value
    while i < n:
        c = text[i]
        if c == '"':
            i = _string_end(text, i)
            last_comma = None
            continue
        if c == "/" and i + 1 < n and text[i + 1] in "/*":
            if not comments:
                raise JsonEditError(f"a comment at {_where(text, i)}, and this host's file is plain JSON")
            if text[i + 1] == "/":
                j = text.find("\n", i)
                j = n if j < 0 else j
            else:
                j = text.find("*/", i + 2)
                if j < 0:
                    raise JsonEditError(f"a comment opened at {_where(text, i)} is never closed")
                j += 2
            for k in range(i, j):
                if out[k] not in "\r\n":
                    out[k] = " "
            i = j
            continue
        if c == ",":
            last_comma = i
        elif c in "}]":
            if last_comma is not None and trailing_commas:
                out[last_comma] = " "
            last_comma = None
        elif c not in _WS:
            last_comma = None
        i += 1
    return "".join(out)


def _string_end(text: str, i: int) -> int:
    """The offset after the string literal that opens at ``i`` (its closing quote included)."""
    j = i + 1
    n = len(text)
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == '"':
            return j + 1
        j += 1
    return n  # unterminated: json.loads has reported it already


def _where(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"line {line} column {col}"


class _Walker:
    """Spans of the values in a document that ``json.loads`` accepted (comments already blanked)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def skip(self) -> None:
        while self.i < len(self.text) and self.text[self.i] in _WS:
            self.i += 1

    def value(self) -> _Node:
        self.skip()
        start = self.i
        c = self.text[start]
        if c == "{":
            return self._object(start)
        if c == "[":
            self._array()
        elif c == '"':
            self.i = _string_end(self.text, start)
        else:
            match = re.compile(r"[^\s,\]}]+").match(self.text, start)
            assert match is not None
            self.i = match.end()
        return _Node(start, self.i)

    def _object(self, start: int) -> _Node:
        self.i += 1
        members: list[_Member] = []
        while True:
            self.skip()
            if self.text[self.i] == "}":
                self.i += 1
                return _Node(start, self.i, members)
            key_start = self.i
            self.i = _string_end(self.text, key_start)
            key = json.loads(self.text[key_start : self.i])
            self.skip()
            self.i += 1  # the colon
            member = _Member(key, key_start, self.value())
            members.append(member)
            self.skip()
            if self.text[self.i] == ",":
                member.comma = self.i
                self.i += 1

    def _array(self) -> None:
        self.i += 1
        while True:
            self.skip()
            if self.text[self.i] == "]":
                self.i += 1
                return
            self.value()
            self.skip()
            if self.text[self.i] == ",":
                self.i += 1


class JsonDocument:
    """A JSON or JSONC document that can have members set and removed at a path of object keys.

    ``comments`` allows ``//`` and ``/* */`` comments, ``trailing_commas`` a comma before ``}`` or ``]``,
    each as the host that owns the file does.
    """

    def __init__(self, text: str, *, comments: bool = False, trailing_commas: bool = False) -> None:
        self._comments = comments
        self._trailing = trailing_commas
        self._bom = "\ufeff" if text.startswith("\ufeff") else ""
        self.text = text[len(self._bom) :]
        self._parse()

    # ---- reading ------------------------------------------------------------------------------------

    def _parse(self) -> None:
        """Raises: JsonEditError: not valid JSON(C), or the top level is not an object."""
        if not self.text.strip():
            self.text = "{}\n"
        # The walker sees trailing commas as commas; json.loads sees them blanked (where allowed).
        blanked = _blank(self.text, comments=self._comments, trailing_commas=False)
        strict = _blank(blanked, comments=False, trailing_commas=True) if self._trailing else blanked
        try:
            self.data = json.loads(strict)
        except ValueError as exc:
            raise JsonEditError(f"not valid JSON: {exc}") from None
        except RecursionError:
            raise JsonEditError("nested too deeply") from None
        if not isinstance(self.data, dict):
            raise JsonEditError("the top level is not a JSON object")
        self._blanked = blanked
        self._root = _Walker(blanked).value()

    def get(self, path: tuple[str, ...]) -> Any:
        """The plain value at ``path``, or None when a key on the way is missing."""
        value: Any = self.data
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value

    def dump(self) -> str:
        return self._bom + self.text

    # ---- editing ------------------------------------------------------------------------------------

    def set(self, path: tuple[str, ...], value: Any) -> None:
        """Set the member at ``path`` (its last key) to ``value``, creating missing objects on the way.

        Raises:
            JsonEditError: a key on the way holds something that is not an object.
        """
        node, depth = self._root, 0
        while depth < len(path):
            assert node.members is not None
            member = _find(node.members, path[depth])
            if member is None:
                break
            if depth == len(path) - 1:
                if self.get(path) != value:  # an equal value keeps its own layout
                    self._replace(member, value)
                return
            if member.value.members is None:
                raise JsonEditError(f"{_json_path(path[: depth + 1])} is not an object")
            node, depth = member.value, depth + 1
        for key in reversed(path[depth + 1 :]):
            value = {key: value}
        self._insert(node, path[depth], value)

    def remove(self, path: tuple[str, ...]) -> bool:
        """Remove the member at ``path``; False when it is not there."""
        node = self._root
        for key in path[:-1]:
            assert node.members is not None
            member = _find(node.members, key)
            if member is None or member.value.members is None:
                return False
            node = member.value
        assert node.members is not None
        member = _find(node.members, path[-1])
        if member is None:
            return False
        self._delete(node, member)
        return True

    def _edit(self, *edits: tuple[int, int, str]) -> None:
        """Apply ``(start, end, new_text)`` edits (offsets into the current text), then parse again."""
        for start, end, new in sorted(edits, reverse=True):
            self.text = self.text[:start] + new + self.text[end:]
        self._parse()

    def _nl(self) -> str:
        return "\r\n" if "\r\n" in self.text else "\n"

    def _replace(self, member: _Member, value: Any) -> None:
        indent = self._line_indent(member.key_start)
        self._edit((member.value.start, member.value.end, self._render(value, indent)))

    def _insert(self, obj: _Node, key: str, value: Any) -> None:
        assert obj.members is not None
        nl = self._nl()
        if not obj.members:
            outer = self._line_indent(obj.start)
            indent = outer + self._unit()
            new = f"{nl}{indent}{self._member(key, value, indent)}"
            if "\n" not in self.text[obj.start + 1 : obj.end - 1]:
                new += nl + outer
            self._edit((obj.start + 1, obj.start + 1, new))
            return
        last = obj.members[-1]
        at = last.value.end
        if not self._starts_line(last.key_start):  # a one-line object stays on its line
            compact = json.dumps(value, ensure_ascii=False)
            self._edit((at, at, f", {json.dumps(key, ensure_ascii=False)}: {compact}"))
            return
        indent = self._line_indent(last.key_start)
        member = self._member(key, value, indent)
        if last.comma is None:
            eol = self._line_end(at)
            if eol < obj.end - 1 and self.text[at:eol].strip():
                # A comment ends the last member's line: it stays with that member, ours goes below.
                self._edit((at, at, ","), (eol, eol, f"{nl}{indent}{member}"))
                return
        # With a trailing comma, the file's comma now follows our member: removing it restores the file.
        self._edit((at, at, f",{nl}{indent}{member}"))

    def _delete(self, obj: _Node, member: _Member) -> None:
        assert obj.members is not None
        index = obj.members.index(member)
        prev = obj.members[index - 1] if index else None
        nxt = obj.members[index + 1] if index + 1 < len(obj.members) else None
        if prev is not None and self.text[prev.value.end : member.key_start].strip() == ",":
            # What _insert puts after a previous member, and nothing else: take exactly that out.
            self._edit((prev.value.end, member.value.end, ""))
            return
        if prev is None and nxt is None:
            inside = self.text[obj.start + 1 : obj.end - 1]  # comments included: they are kept
            before = inside[: member.key_start - obj.start - 1]
            after = inside[member.value.end - obj.start - 1 :]
            if not (before + after).strip(" \t\r\n,"):
                self._edit((obj.start + 1, obj.end - 1, ""))  # nothing but this member: leave {}
                return
        edits = [self._cut(member)]
        if nxt is None and prev is not None and prev.comma is not None:
            edits.append((prev.comma, prev.comma + 1, ""))  # no comma may dangle before the brace
        self._edit(*edits)

    def _cut(self, member: _Member) -> tuple[int, int, str]:
        """The edit that removes ``member`` with its comma, and its whole line when it has one."""
        start = member.key_start
        end = member.comma + 1 if member.comma is not None else member.value.end
        while end < len(self.text) and self.text[end] in " \t":
            end += 1
        if self._starts_line(start):
            start = self.text.rfind("\n", 0, start) + 1
            if self.text.startswith("\r\n", end):
                end += 2
            elif self.text.startswith("\n", end):
                end += 1
        return (start, end, "")

    def _line_end(self, offset: int) -> int:
        eol = self.text.find("\n", offset)
        eol = len(self.text) if eol < 0 else eol
        return eol - 1 if eol > offset and self.text[eol - 1] == "\r" else eol

    # ---- layout -------------------------------------------------------------------------------------

    def _starts_line(self, offset: int) -> bool:
        line_start = self.text.rfind("\n", 0, offset) + 1
        return not self.text[line_start:offset].strip()

    def _line_indent(self, offset: int) -> str:
        line_start = self.text.rfind("\n", 0, offset) + 1
        line = self.text[line_start:offset]
        return line[: len(line) - len(line.lstrip(" \t"))]

    def _unit(self) -> str:
        """One level of indentation as the file uses it: the first indented member's, else two spaces."""
        stack = [self._root]
        while stack:
            node = stack.pop(0)
            for member in node.members or []:
                if self._starts_line(member.key_start):
                    indent = self._line_indent(member.key_start)
                    outer = self._line_indent(node.start)
                    if indent.startswith(outer) and len(indent) > len(outer):
                        return indent[len(outer) :]
                if member.value.members is not None:
                    stack.append(member.value)
        return "  "

    def _render(self, value: Any, indent: str) -> str:
        return json.dumps(value, indent=self._unit(), ensure_ascii=False).replace("\n", self._nl() + indent)

    def _member(self, key: str, value: Any, indent: str) -> str:
        return f"{json.dumps(key, ensure_ascii=False)}: {self._render(value, indent)}"


def _find(members: list[_Member], key: str) -> _Member | None:
    # json.loads keeps the last of duplicate keys; so does every host that parses with it.
    for member in reversed(members):
        if member.key == key:
            return member
    return None


def _json_path(path: tuple[str, ...]) -> str:
    return "$" + "".join(f"[{json.dumps(k)}]" for k in path)
