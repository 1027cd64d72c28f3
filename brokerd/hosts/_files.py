"""Reading and replacing a host's config file: backup first, atomic write, never through a symlink.

A file that is a symbolic link (a dotfiles checkout) is edited where it points, so the link stays a link.
The backup is a copy of the previous bytes beside the target, mode 0600 whatever the original's mode (it
may hold the user's own secrets). Just before the replace, the file is read again: a host that rewrote it
meanwhile (Claude Code writes ~/.claude.json often) makes the edit stop instead of losing its change.
"""

from __future__ import annotations

import difflib
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from brokerd.fsutil import atomic_write
from brokerd.hosts._install import HostsError

__all__ = ["Current", "diff", "read", "replace"]


@dataclass(frozen=True)
class Current:
    path: Path  # the file to write: symlinks resolved
    data: bytes | None  # None: no such file
    text: str | None


def read(path: Path) -> Current:
    """Raises: HostsError: the file exists but cannot be read or is not UTF-8 text."""
    target = path.resolve() if path.is_symlink() else path
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        return Current(target, None, None)
    except OSError as exc:
        raise HostsError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return Current(target, data, data.decode("utf-8"))
    except UnicodeDecodeError:
        raise HostsError(f"{path} is not UTF-8 text; it was left untouched") from None


def replace(current: Current, text: str) -> Path | None:
    """Write ``text`` over ``current.path``; returns the backup of the previous content (None: new file).

    Raises:
        HostsError: the file changed since it was read, or the write failed (the file is then untouched).
    """
    path = current.path
    data = text.encode("utf-8")
    backup = None
    try:
        if current.data is None:
            mode = 0o600  # a file we create may later hold the user's own keys
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        else:
            mode = stat.S_IMODE(path.stat().st_mode)
            backup = _backup_path(path)
            atomic_write(backup, current.data, mode=0o600)
        if _now(path) != current.data:
            raise HostsError(f"{path} changed while it was being edited (is the host running?); run again")
        atomic_write(path, data, mode=mode)
    except OSError as exc:
        raise HostsError(f"cannot write {path}: {exc.strerror}; it was left untouched") from None
    return backup


def _now(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _backup_path(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        suffix = f".{n}" if n else ""
        candidate = path.with_name(f"{path.name}.{stamp}{suffix}.ncp-broker.bak")
        if not candidate.exists():
            return candidate
    raise HostsError(f"too many backups of {path} this second; run again")


def diff(current: Current, text: str) -> str:
    old = (current.text or "").splitlines(keepends=True)
    new = text.splitlines(keepends=True)
    name = str(current.path)
    return "".join(difflib.unified_diff(old, new, fromfile=name, tofile=name))
