"""What a host runs to reach a server through the broker, and how an entry we wrote is recognised.

A host starts ``<absolute ncp-broker> proxy SERVER`` with at most the broker's location variables in its
environment. Hosts such as Claude Desktop start commands with a minimal ``PATH`` and environment (the MCP
SDKs' stdio clients pass on little more than ``HOME``, ``PATH``, ``SHELL``, ``USER``), so the command is an
absolute path and every location that differs from what the proxy would compute in such an environment is
passed explicitly. Never a token: the proxy asks the daemon for those.

An entry is *ours* when its command is an ``ncp-broker`` executable (or a Python running ``-m brokerd``)
and its arguments are ``proxy SERVER …``; for Claude Code's header helper, when the helper command runs
``ncp-token SERVER --headers-json``. Only such entries are updated or removed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from brokerd import paths

__all__ = ["Launch", "helper_server", "launch_for", "ncp_token_command", "proxy_server"]

# The broker's own locations, each with the variables that decide its default.
_LOCATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("NCP_BROKER_SOCK", ("XDG_RUNTIME_DIR",)),
    ("NCP_BROKER_CONFIG", ("XDG_CONFIG_HOME",)),
    ("NCP_BROKER_DATA", ("XDG_DATA_HOME",)),
    ("NCP_BROKER_STATE", ("XDG_STATE_HOME",)),
)


@dataclass(frozen=True)
class Launch:
    """A command line and the environment variables a host must set for it."""

    command: str
    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


def _executable(name: str) -> list[str] | None:
    """The absolute path of console script ``name`` of *this* installation, else one on PATH.

    The script beside ``sys.executable`` comes first: it is the installation that is running now (a venv,
    pipx), where a ``PATH`` search could find another version. ``sys.executable`` is not resolved, or a
    venv's interpreter would turn into the base interpreter.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside.absolute())]
    found = shutil.which(name)
    if found:
        return [str(Path(found).absolute())]
    return None


@contextlib.contextmanager
def _environ_without(names: tuple[str, ...]) -> Iterator[None]:
    """Compute a default as a host with a minimal environment would: without ``names``."""
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _location_env(current: Mapping[str, Path]) -> dict[str, str]:
    """The location variables whose value the proxy would not find by itself."""
    compute = {
        "NCP_BROKER_SOCK": paths.socket_path,
        "NCP_BROKER_CONFIG": paths.config_path,
        "NCP_BROKER_DATA": paths.data_dir,
        "NCP_BROKER_STATE": paths.state_dir,
    }
    env: dict[str, str] = {}
    for var, decided_by in _LOCATIONS:
        here = current.get(var) or compute[var]()
        with _environ_without((var, *decided_by)):
            default = compute[var]()
        if here.expanduser().absolute() != default.absolute():
            env[var] = str(here.expanduser().absolute())
    return env


def launch_for(server: str, *, socket: Path, config: Path) -> Launch:
    """How a host starts the proxy for ``server`` on this machine.

    ``socket`` and ``config`` are the ones this command uses (``--socket``/``--config`` or their defaults),
    so the host's proxy finds the same daemon and config.
    """
    command = _executable("ncp-broker") or [sys.executable, "-m", "brokerd"]
    env = _location_env({"NCP_BROKER_SOCK": socket, "NCP_BROKER_CONFIG": config})
    return Launch(command[0], (*command[1:], "proxy", server), env)


def ncp_token_command(server: str, *, socket: Path, config: Path) -> str:
    """The shell command Claude Code's ``headersHelper`` runs: ``ncp-token SERVER --headers-json``."""
    exe = _executable("ncp-token") or [sys.executable, "-m", "ncp_client._cli"]
    env = _location_env({"NCP_BROKER_SOCK": socket, "NCP_BROKER_CONFIG": config})
    words = [f"{k}={shlex.quote(v)}" for k, v in env.items() if k == "NCP_BROKER_SOCK"]
    words += [shlex.quote(w) for w in (*exe, server, "--headers-json")]
    return " ".join(words)


def _is_python(command: str) -> bool:
    return PurePath(command).name.startswith("python")


def proxy_server(command: object, args: object) -> str | None:
    """The SERVER of an entry that runs ``ncp-broker proxy SERVER``, else None (the entry is not ours)."""
    if not isinstance(command, str) or not isinstance(args, list | tuple):
        return None
    words = [str(a) for a in args]
    if _is_python(command) and words[:2] == ["-m", "brokerd"]:
        words = words[2:]
    elif PurePath(command).name != "ncp-broker":
        return None
    if len(words) >= 2 and words[0] == "proxy" and not words[1].startswith("-"):
        return words[1]
    return None


def helper_server(helper: object) -> str | None:
    """The SERVER of a ``headersHelper`` command that runs ``ncp-token SERVER …``, else None."""
    if not isinstance(helper, str):
        return None
    try:
        words = shlex.split(helper)
    except ValueError:
        return None
    while words and "=" in words[0] and not words[0].startswith(("/", ".")):
        words = words[1:]  # VAR=value prefixes
    if words and _is_python(words[0]) and words[1:3] == ["-m", "ncp_client._cli"]:
        words = words[2:]
    if not words or PurePath(words[0]).name not in ("ncp-token", "ncp_client._cli"):
        return None
    rest = [w for w in words[1:] if not w.startswith("-")]
    return rest[0] if rest else None
