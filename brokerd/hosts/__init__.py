"""Host setup: write the entry that runs ``ncp-broker proxy SERVER`` into each MCP host's own config.

* ``_table``: the hosts, as data (file per scope and OS, format, key, entry shape, how to check);
* ``_launch``: the command a host runs, and how an entry ncp-broker wrote is recognised;
* ``_formats``: JSON(C) / TOML / YAML documents edited without losing the rest of the file;
* ``_install``: add, update and remove entries in a document (pure);
* ``_files``: backup, atomic replace, diff.

The ``ncp-broker hosts`` command (``brokerd/cli/_hosts.py``) puts them together; docs/hosts.md cites
each host's documentation.
"""

from brokerd.hosts._files import Current, diff, read, replace
from brokerd.hosts._formats import FormatError, MissingLibrary
from brokerd.hosts._install import (
    HostsError,
    Outcome,
    Wanted,
    installed,
    plan_install,
    plan_uninstall,
    start_text,
)
from brokerd.hosts._launch import Launch, launch_for, ncp_token_command
from brokerd.hosts._table import HOSTS, Context, Host, Location

__all__ = [
    "HOSTS",
    "Context",
    "Current",
    "FormatError",
    "Host",
    "HostsError",
    "Launch",
    "Location",
    "MissingLibrary",
    "Outcome",
    "Wanted",
    "diff",
    "installed",
    "launch_for",
    "ncp_token_command",
    "plan_install",
    "plan_uninstall",
    "read",
    "replace",
    "start_text",
]
