"""Private directories and crash-safe file writes.

``atomic_write`` is the one way the broker writes a file that holds state: a temporary file created with
mode 0600 (whatever the umask), written, fsynced, renamed over the target, and the directory fsynced, so a
crash leaves either the old document or the new one, never a torn one (DESIGN.md rule 3).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

__all__ = ["UnsafePathError", "atomic_write", "ensure_private_dir"]


class UnsafePathError(Exception):
    """A directory the broker must keep private is a symlink, owned by someone else, or not a directory."""


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed; make sure it is ours, a real directory, mode 0700.

    Parents are created with the usual umask; the leaf is created 0700. An existing leaf must already be
    private: it is never chmod-ed, because it may be a directory the user shares for other reasons.

    Raises:
        UnsafePathError: the leaf is a symlink, not a directory, owned by another user, or open to others.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
        path.chmod(0o700)  # mkdir's mode is filtered by the umask
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(f"{path} is a symbolic link; refusing to keep private files there")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"{path} is not a directory")
    if st.st_uid != os.getuid():
        raise UnsafePathError(
            f"{path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}); remove it or choose "
            "another location"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        # Never loosen or tighten a directory we did not create (it may be $HOME): say what to run.
        raise UnsafePathError(
            f"{path} is accessible to other users (mode {stat.S_IMODE(st.st_mode):o}); run: chmod 700 {path}"
        )
    return path


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content, never a mix.

    Raises:
        OSError: the write failed (full disk, read-only file system, …); ``path`` is untouched.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have cleared bits we want, or O_CREAT hit an old file
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
