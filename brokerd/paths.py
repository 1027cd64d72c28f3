"""Every filesystem location the broker uses, in one place.

Each location comes from platformdirs and can be overridden by an environment variable, so tests and
unusual setups (a socket forwarded over SSH, a config shared with NCP) never need code changes:

=====================  ============================================  ===================================
what                   default                                       override
=====================  ============================================  ===================================
config file            <user_config_dir>/ncp-broker/config.json      NCP_BROKER_CONFIG, ``--config``
socket                 see ``ncp_client._paths``                     NCP_BROKER_SOCK
token store            <user_data_dir>/ncp-broker/                   NCP_BROKER_DATA
log file (background)  <user_state_dir>/ncp-broker/broker.log        NCP_BROKER_STATE
=====================  ============================================  ===================================

The socket path has one rule, written with the standard library only in ``ncp_client._paths`` so that
the thin client can compute it without platformdirs; the daemon uses that same function. (platformdirs'
own runtime-dir fallback warns and differs between versions, so we do not let two copies drift.)
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from ncp_client._paths import default_socket_path

__all__ = ["config_path", "data_dir", "lock_path", "log_path", "socket_path", "state_dir"]

_APP = "ncp-broker"


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def config_path() -> Path:
    """The config file: NCP's ``mcpServers`` JSON format."""
    return _env_path("NCP_BROKER_CONFIG") or Path(platformdirs.user_config_dir(_APP)) / "config.json"


def socket_path() -> Path:
    """The daemon's Unix socket."""
    return default_socket_path()


def lock_path(sock: Path) -> Path:
    """The single-instance lock that guards ``sock``: one daemon per socket path."""
    return sock.with_name(sock.name + ".lock")


def data_dir() -> Path:
    """Where the file token store keeps one document per server."""
    return _env_path("NCP_BROKER_DATA") or Path(platformdirs.user_data_dir(_APP))


def state_dir() -> Path:
    """Logs of a backgrounded daemon."""
    return _env_path("NCP_BROKER_STATE") or Path(platformdirs.user_state_dir(_APP))


def log_path() -> Path:
    return state_dir() / "broker.log"
