"""ncp-token's start-up: what its path imports, in a fresh interpreter (as httpx's tests/test_api.py).

Each probe runs ``python -S`` with only client/ on the path, so the interpreter starts with nothing but
its own core modules (no site, no editable-install hook): every module the probe finds loaded afterwards
came from our code. The daemon's side of the socket is a canned answer from a thread here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_type

import pytest

import ncp_client
import ncp_client._async
import ncp_client._auth

CLIENT = Path(__file__).resolve().parents[2] / "client"

# What the issue names, and their usual companions: none of them on the ncp-token path.
FORBIDDEN = {
    "ncp_client._async",
    "ncp_client._auth",
    "httpx",
    "trio",
    "msgspec",
    "asyncio",
    "brokerd",
    "keyring",
    "platformdirs",
    "tempfile",
    "shutil",
    "random",
    "typing",
    "typing_extensions",
    "collections",
    "enum",
    "functools",
    "contextlib",
    "dataclasses",
    "inspect",
    "pathlib",
    "argparse",
    "re",
    "json",
    "socket",
    "selectors",
    "urllib",
    "urllib.parse",
    "webbrowser",
}
# Everything the path may add to a bare interpreter: our modules, the two C modules it talks through, and
# what `site` loads in every normal start anyway (it is not loaded under -S).
ALLOWED = {"__future__", "_socket", "_json"}
SITE_LOADS = {"os", "os.path", "posixpath", "genericpath", "stat", "_stat", "_collections_abc"}

PROBE = """
import sys
before = set(sys.modules)
from ncp_client._cli import main
status = {call}
sys.stdout.flush()
added = sorted(set(sys.modules) - before)
sys.stderr.write("\\nADDED " + " ".join(added) + " STATUS " + str(status) + "\\n")
"""

TOKEN_ANSWER = {"id": None, "ok": True, "result": {"token": "tok-123", "token_type": "Bearer"}}
NEEDS_LOGIN = {
    "id": None,
    "ok": False,
    "error": {"code": "needs_login", "message": "not logged in", "hint": "ncp-broker login s0"},
}


@pytest.fixture
def canned_daemon() -> Iterator[Callable[[dict[str, object]], Path]]:
    """A socket that answers every request line with one canned answer (the daemon's side, faked)."""
    root = Path(tempfile.mkdtemp(prefix="ncpb-imp-", dir="/tmp"))
    listeners: list[socket.socket] = []

    def start(answer: dict[str, object]) -> Path:
        path = root / f"{len(listeners)}.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(8)
        listener.settimeout(30)
        listeners.append(listener)

        def serve() -> None:
            try:
                while True:
                    conn, _ = listener.accept()
                    with conn, conn.makefile("rb") as lines:
                        if lines.readline():
                            conn.sendall(json.dumps(answer).encode() + b"\n")
            except OSError:
                return  # closed at the end of the test

        threading.Thread(target=serve, daemon=True).start()
        return path

    try:
        yield start
    finally:
        for listener in listeners:
            listener.close()
        for path in root.iterdir():
            path.unlink()
        root.rmdir()


def probe(call: str, sock: Path | None = None) -> tuple[list[str], str, str]:
    """(modules the ncp-token path added, the status it returned, its stdout) in a bare interpreter."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(CLIENT)}
    env["NCP_BROKER_SOCK"] = str(sock) if sock else "/nonexistent/ncp-broker.sock"
    out = subprocess.run(
        [sys.executable, "-S", "-c", PROBE.format(call=call)],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=True,
    )
    report = out.stderr.rsplit("\nADDED ", 1)[1].split()
    status = report[report.index("STATUS") + 1]
    return report[: report.index("STATUS")], status, out.stdout


def _assert_thin(added: list[str]) -> None:
    assert sorted(FORBIDDEN.intersection(added)) == []
    ours = {m for m in added if m == "ncp_client" or m.startswith("ncp_client.")}
    extra = [m for m in added if m not in ALLOWED | SITE_LOADS | ours]
    assert extra == []


def test_importing_the_entry_point_loads_only_the_thin_client() -> None:
    """`from ncp_client._cli import main` (what the console script runs) loads our small modules,
    _socket and _json, and nothing else — no typing, pathlib, tempfile, json, socket, re, argparse."""
    added, _, _ = probe("None")
    _assert_thin(added)
    assert "ncp_client._protocol" in added


@pytest.mark.parametrize(
    ("argv", "answer", "status", "stdout"),
    [
        (["s0"], TOKEN_ANSWER, "0", "tok-123\n"),
        (["s0", "--header"], TOKEN_ANSWER, "0", "Authorization: Bearer tok-123\n"),
        (["s0", "--headers-json"], TOKEN_ANSWER, "0", '{"Authorization": "Bearer tok-123"}\n'),
        (["s0"], NEEDS_LOGIN, "5", ""),
        (["--help"], TOKEN_ANSWER, "0", None),
        (["--min-ttl", "x"], TOKEN_ANSWER, "2", ""),
    ],
    ids=["token", "header", "headers-json", "needs-login", "help", "usage-error"],
)
def test_running_ncp_token_loads_only_the_thin_client(
    canned_daemon: Callable[[dict[str, object]], Path],
    argv: list[str],
    answer: dict[str, object],
    status: str,
    stdout: str | None,
) -> None:
    """Printing a token (or an error, or the help) loads nothing more than importing does."""
    added, got_status, got_stdout = probe(f"main({argv!r})", canned_daemon(answer))
    assert got_status == status
    if stdout is not None:
        assert got_stdout == stdout
    _assert_thin(added)


def test_broker_not_running_loads_only_the_thin_client() -> None:
    """The not-running error path (exit 3) stays thin too."""
    added, status, _ = probe("main(['s0'])")
    assert status == "3"
    _assert_thin(added)


def test_headers_json_is_json() -> None:
    """--headers-json output parses as JSON, whatever characters the token holds."""
    from ncp_client._protocol import json_text

    for token in ("plain", 'q"uo\\te', "ünï\u2028", "tab\there"):
        line = '{"Authorization": ' + json_text(f"Bearer {token}") + "}"
        assert json.loads(line) == {"Authorization": f"Bearer {token}"}
        assert line == json.dumps({"Authorization": f"Bearer {token}"})


def test_public_api_is_unchanged() -> None:
    """Every name in __all__ is there (the lazy ones load on first use) and in dir(); star-import works."""
    for name in ncp_client.__all__:
        assert getattr(ncp_client, name) is not None, name
    assert set(ncp_client.__all__) <= set(dir(ncp_client))
    namespace: dict[str, object] = {}
    exec("from ncp_client import *", namespace)  # noqa: S102 (a fixed statement: the star-import check)
    assert set(ncp_client.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = ncp_client.nonexistent


def test_lazy_names_are_the_real_objects_for_type_checkers() -> None:
    """acall and BrokerAuth resolve to the implementations; mypy checks these assert_type calls, so a
    name type checkers could no longer see (typed Any through __getattr__) fails `mypy`."""
    if TYPE_CHECKING:  # calling it here would make a coroutine nobody awaits
        call = ncp_client.acall({"op": "hello"})
        _ = assert_type(call, Coroutine[Any, Any, Any])
    assert ncp_client.acall is ncp_client._async.acall
    assert_type(ncp_client.BrokerAuth, type[ncp_client._auth.BrokerAuth])
    assert ncp_client.BrokerAuth is ncp_client._auth.BrokerAuth


def test_package_import_defers_the_async_helpers() -> None:
    """`import ncp_client` loads neither _async nor _auth; the first use of acall loads _async."""
    code = (
        "import sys, ncp_client; a = 'ncp_client._async' in sys.modules;"
        "ncp_client.aget_token; b = 'ncp_client._async' in sys.modules;"
        "ncp_client.acall; c = 'ncp_client._async' in sys.modules;"
        "print(a, b, c, 'ncp_client._auth' in sys.modules)"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(CLIENT)}
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    assert out.stdout.split() == ["False", "False", "True", "False"]
