"""The test harness: what integration tests stand up, wait for and read, in one place.

- ``waiting``: ``wait_until`` (the one bounded polling loop) and ``sleep_past``.
- ``installation``: ``Env`` (an isolated broker installation: paths, environment, ``run``/``spawn``/
  ``status``), ``Daemon`` and ``start_daemon`` (a real daemon by PID).
- ``stack``: ``Stack`` — authorization server + MCP servers + config + daemon + logged-in grant, and
  ``oauth_entry`` for a config entry.
- ``probes``: ``jwt_claims``, ``tool_names``, ``digest``.

The fixtures that make these per test (``env``, ``daemon``, ``stack``) are in tests/conftest.py; the
servers' own fixtures (``oidc_server``, ``mcp_server``, ``browser_env``) in tests/servers/fixtures.py; fakes
of the daemon's edges for trio tests in tests/fakes.py.
"""

from tests.harness.installation import START_DEADLINE, Daemon, Env, start_daemon
from tests.harness.probes import digest, jwt_claims, tool_names
from tests.harness.stack import LOGIN_TIMEOUT, NAME, Stack, StackFactory, oauth_entry
from tests.harness.waiting import WaitTimeout, sleep_past, wait_until

__all__ = [
    "LOGIN_TIMEOUT",
    "NAME",
    "START_DEADLINE",
    "Daemon",
    "Env",
    "Stack",
    "StackFactory",
    "WaitTimeout",
    "digest",
    "jwt_claims",
    "oauth_entry",
    "sleep_past",
    "start_daemon",
    "tool_names",
    "wait_until",
]
