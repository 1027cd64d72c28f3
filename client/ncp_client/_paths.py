"""Where the daemon's socket is, computed with the standard library only.

The daemon (``brokerd.paths``) imports this function, so there is exactly one rule and the thin client
never needs platformdirs:

1. ``$NCP_BROKER_SOCK`` when set (for example a socket forwarded over SSH, as with ``ssh-agent``);
2. ``$XDG_RUNTIME_DIR/ncp-broker/broker.sock`` (what platformdirs' ``user_runtime_dir`` gives on Linux);
3. on Linux, ``/run/user/<uid>/ncp-broker/broker.sock`` when that directory exists;
4. on macOS, ``~/Library/Caches/TemporaryItems/ncp-broker/broker.sock`` (platformdirs' choice);
5. otherwise ``<tmp>/ncp-broker-<uid>/broker.sock`` — a per-user name, and the daemon refuses the
   directory unless it owns it with mode 0700, so another user cannot pre-create it.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (ncp-token's start-up)
if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["default_socket_path", "socket_path"]

_APP = "ncp-broker"
_SOCK = "broker.sock"


def default_socket_path() -> Path:
    from pathlib import Path

    return Path(socket_path())


def socket_path() -> str:
    """:func:`default_socket_path` as a string, without loading ``pathlib`` or ``tempfile``."""
    explicit = os.environ.get("NCP_BROKER_SOCK")
    if explicit:
        return os.path.expanduser(explicit)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, _APP, _SOCK)
    uid = os.getuid()
    if sys.platform == "darwin":
        return os.path.join(os.path.expanduser("~"), "Library", "Caches", "TemporaryItems", _APP, _SOCK)
    run_user = f"/run/user/{uid}"
    if os.path.isdir(run_user):
        return os.path.join(run_user, _APP, _SOCK)
    import tempfile  # the last resort only: it loads shutil, random and more

    return os.path.join(tempfile.gettempdir(), f"{_APP}-{uid}", _SOCK)
