"""A string that will not print itself.

Every token, refresh token, client secret, access key, authorization code and PKCE verifier the daemon
holds is a :class:`Secret`. Its ``repr`` and ``str`` are redacted, so a secret that reaches a log line, an
exception message or a ``status`` answer by accident shows up as ``<redacted>`` instead of leaking
(DESIGN.md rule 8). Code that must use the value calls :meth:`Secret.reveal`, which makes every place
that touches the plaintext easy to find with grep.
"""

from __future__ import annotations

import hmac
from typing import Any

__all__ = ["Secret", "dec_hook", "enc_hook"]


class Secret:
    """An immutable secret string with a redacted representation."""

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """The plaintext. Call it only where the value goes on the wire or into the store."""
        return self._value

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return "Secret('<redacted>')"

    def __str__(self) -> str:
        return "<redacted>"

    def __format__(self, spec: str) -> str:
        return "<redacted>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("Secret refuses to be pickled")


def dec_hook(type_: type, obj: Any) -> Any:
    """msgspec decode hook: JSON strings become :class:`Secret` where a Struct field says so."""
    if type_ is Secret:
        if not isinstance(obj, str):
            raise TypeError(f"expected a string, got {type(obj).__name__}")
        return Secret(obj)
    raise NotImplementedError(f"cannot decode {type_!r}")


def enc_hook(obj: Any) -> Any:
    """msgspec encode hook for the store and the wire: the only places a secret is written out."""
    if isinstance(obj, Secret):
        return obj.reveal()
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")
