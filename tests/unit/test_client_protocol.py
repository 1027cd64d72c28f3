"""The thin client's JSON on the C accelerators agrees with the json module, byte for byte."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ncp_client import _protocol
from ncp_client._errors import NeedsLogin, ProtocolError

CLIENT = Path(__file__).resolve().parents[2] / "client"

REQUESTS: list[dict[Any, Any]] = [
    {"op": "get_token", "server": "neus"},
    {"op": "get_token", "server": "neus", "min_ttl": 30.0},
    {"op": "get_token", "server": "ünïcødé \u2028 \U0001f511", "min_ttl": 0},
    {"op": "token_rejected", "server": "x", "token": 'q"uo\\te\n\t\x00\x7f', "www_authenticate": None},
    {"op": "scope_insufficient", "server": "x", "scopes": ["a", "b"], "token": None},
    {"op": "login", "server": "x", "open_browser": True, "will_open": False},
    {"op": "x", "nested": {"list": [1, -2, 3.5, 1e100, 1e-7, 12345678901234567890, (True, None)]}},
    {"op": "x", "floats": [math.inf, -math.inf, math.nan, -0.0, 0.1 + 0.2]},
    {7: "int key", 2.5: "float key", True: "bool key", None: "null key"},
    {},
]


@pytest.mark.parametrize("request_", REQUESTS)
def test_encode_is_json_dumps(request_: dict[Any, Any]) -> None:
    """A request frame is exactly json.dumps(request, separators=(",", ":")) and a newline."""
    assert _protocol.encode(request_) == json.dumps(request_, separators=(",", ":")).encode() + b"\n"


@pytest.mark.parametrize("value", [{1, 2}, b"bytes", object(), {("tuple", "key"): 1}])
def test_encode_refuses_what_json_refuses(value: object) -> None:
    """What json.dumps cannot encode is a TypeError here too."""
    with pytest.raises(TypeError):
        json.dumps(value)
    with pytest.raises(TypeError):
        _protocol.encode({"op": value})


ANSWERS = [
    '{"id":null,"ok":true,"result":{"token":"t","token_type":"Bearer","expires_at":1.7e9,"expires_in":59.5}}',
    '  {"ok" : true , "result" : [1, 2.0, -3e-2, "\\u00e9\\ud83d\\udd11", null, false]}\r\n\t',
    '{"ok":false,"error":{"code":"needs_login","message":"m","hint":"ncp-broker login x"}}',
    '{"big": 123456789012345678901234567890, "neg": -0, "f": 1E+2}',
    '{"c": [NaN, Infinity, -Infinity]}',
    '"just a string"',
    "[]",
    "1",
    '{"dup": 1, "dup": 2}',
    '{"s": "caf\u00e9 \U0001f511"}',
]
BAD_ANSWERS = [
    "",
    "   ",
    "{",
    '{"a": 1} trailing',
    '{"a": 1}{"b": 2}',
    "{'single': 1}",
    '{"a": 01}',
    '{"a": "tab\there"}',  # a control character inside a string (strict, as json.loads)
    '{"a": nul}',
    "\ufeff{}",
    '{"a": [1,]}',
]


@pytest.mark.parametrize("text", ANSWERS)
def test_decode_is_json_loads(text: str) -> None:
    """An answer decodes to what json.loads gives (NaN compared as NaN)."""
    assert repr(_protocol.decode(text)) == repr(json.loads(text))


@pytest.mark.parametrize("text", BAD_ANSWERS)
def test_decode_refuses_what_json_loads_refuses(text: str) -> None:
    """Text json.loads refuses is a ValueError here too."""
    with pytest.raises(ValueError):  # noqa: PT011 (json's own error is a ValueError)
        json.loads(text)
    with pytest.raises(ValueError):  # noqa: PT011
        _protocol.decode(text)


@pytest.mark.parametrize(
    "line",
    [b"not json", b"\xff\xfe{}", b"[1,2]", b'{"result": 1}', b"[" * 100_000],
    ids=["garbage", "bad-utf8", "not-object", "no-ok", "deep"],
)
def test_unwrap_turns_junk_into_protocol_error(line: bytes) -> None:
    """Whatever the peer sends, unwrap raises ProtocolError (never ValueError or RecursionError)."""
    with pytest.raises(ProtocolError):
        _protocol.unwrap(line)


def test_unwrap_error_answer_is_typed() -> None:
    """An error answer becomes its BrokerError subclass with the daemon's hint."""
    line = b'{"ok":false,"error":{"code":"needs_login","message":"m","hint":"ncp-broker login x"}}'
    with pytest.raises(NeedsLogin) as err:
        _protocol.unwrap(line)
    assert err.value.hint == "ncp-broker login x"


FALLBACK_PROBE = """
import sys
sys.modules["_json"] = None  # an interpreter without the C accelerator
import json
from math import inf, nan
from ncp_client import _protocol
assert hasattr(_protocol, "_stdlib_json"), "the json fallback is in use"
requests = {requests!r}
answers = {answers!r}
for r in requests:
    assert _protocol.encode(r) == json.dumps(r, separators=(",", ":")).encode() + b"\\n", r
for a in answers:
    assert repr(_protocol.decode(a)) == repr(json.loads(a)), a
print("fallback ok")
"""


def test_without_the_c_accelerator_json_is_used() -> None:
    """On an interpreter without _json, the client falls back to the json module with the same results."""
    requests = [r for r in REQUESTS if all(isinstance(k, str) for k in r)]
    code = FALLBACK_PROBE.format(requests=requests, answers=ANSWERS)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(CLIENT)}
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert out.stdout.strip() == "fallback ok", out.stderr


def test_error_codes_map_to_classes_and_exit_statuses() -> None:
    """Each error code of the daemon becomes the client's class for it, with ncp-token's exit status
    (docs/protocol.md's table): stopping is 3, like a daemon that is not running."""
    from ncp_client._errors import error_from_answer

    expected = {
        "unknown_server": ("UnknownServer", 4),
        "needs_login": ("NeedsLogin", 5),
        "login_in_progress": ("NeedsLogin", 5),
        "as_unreachable": ("AuthServerUnreachable", 6),
        "stopping": ("Stopping", 3),
        "config_conflict": ("ServerError", 1),
        "internal": ("ServerError", 1),
    }
    for code, (name, status) in expected.items():
        exc = error_from_answer({"code": code, "message": "m", "hint": "h"})
        assert (type(exc).__name__, exc.exit_status, exc.code) == (name, status, code)
