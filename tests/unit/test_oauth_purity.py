"""DESIGN rules 1 and 13: the OAuth core, the renewal machine and the schedule are pure: no I/O libraries,
no clock, no randomness."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import brokerd.oauth

FORBIDDEN_LOADED = ("trio", "httpx", "keyring", "socket", "ssl", "asyncio")
FORBIDDEN_IMPORTS = frozenset(
    {
        "trio",
        "httpx",
        "keyring",
        "socket",
        "ssl",
        "asyncio",
        "time",
        "random",
        "secrets",
        "os",
        "logging",
        "urllib.request",
        "http",
        "email",
        "threading",
        "subprocess",
        "selectors",
    }
)
# Calls that read a clock or draw randomness, whatever module they come from.
FORBIDDEN_CALLS = frozenset(
    {"now", "utcnow", "today", "time", "time_ns", "monotonic", "urandom", "token_bytes"}
)
PACKAGE = Path(brokerd.oauth.__file__).parent
PURE_MODULES = [*sorted(PACKAGE.glob("*.py")), PACKAGE.parent / "renewal.py", PACKAGE.parent / "schedule.py"]


def test_import_loads_no_io_modules() -> None:
    """Rules 1 and 13: importing brokerd.oauth (and .testing), brokerd.renewal and brokerd.schedule loads no
    trio, httpx, keyring, socket, ssl, asyncio."""
    code = (
        "import sys, brokerd.oauth, brokerd.oauth.testing, brokerd.renewal, brokerd.schedule\n"
        f"loaded = [m for m in {FORBIDDEN_LOADED!r} if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("module", PURE_MODULES, ids=lambda p: p.name)
def test_modules_import_nothing_impure(module: Path) -> None:
    """Rule 1: no module of the core imports a clock, randomness, logging or an I/O library."""
    tree = ast.parse(module.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    impure = {n for n in names if n in FORBIDDEN_IMPORTS or n.split(".")[0] in FORBIDDEN_IMPORTS}
    assert impure == set()
    calls = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in FORBIDDEN_CALLS
    }
    assert calls == set()


def test_public_api_is_declared() -> None:
    """Every name in brokerd.oauth.__all__ exists; every public class and function has its own docstring."""
    for name in brokerd.oauth.__all__:
        obj = getattr(brokerd.oauth, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, name
