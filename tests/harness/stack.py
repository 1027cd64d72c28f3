"""The whole thing standing: the real authorization server, MCP servers, the broker's config, its daemon
and a logged-in grant — in one call, as most integration tests need it.

``Stack.assemble`` starts the servers and writes the config; ``Stack.bring_up`` starts the daemon and logs
in through ``ncp-broker login`` with the fixtures' HTTP browser driver approving. The ``stack`` fixture
(tests/conftest.py) does both and stops the daemon at teardown::

    def test_something(stack: StackFactory) -> None:
        s = stack(ttl=3, json_response=True)  # logged in as "srv"
        token = ncp_client.get_token(s.name, socket_path=s.env.socket)
        assert s.oidc.stats()["replay_detected"] == 0
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ncp_client
from tests.harness.installation import Daemon, Env, start_daemon
from tests.harness.waiting import wait_until

if TYPE_CHECKING:
    # Only for annotations: tests.servers.fixtures is a pytest plugin, which must not be imported before
    # pytest registers it (docs/testing-servers.md).
    from tests.servers.fixtures import (
        BrowserEnvFactory,
        McpServer,
        McpServerFactory,
        OidcServer,
        OidcServerFactory,
    )

__all__ = ["LOGIN_TIMEOUT", "NAME", "Stack", "StackFactory", "oauth_entry"]

#: The config name of the first (or only) server.
NAME = "srv"
LOGIN_TIMEOUT = 120.0
#: How long a status read over the socket may take: it is a millisecond when the daemon is well.
STATUS_TIMEOUT = 5.0


def oauth_entry(url: str, **oauth21: Any) -> dict[str, Any]:
    """A config entry for an OAuth server on loopback: ``oauth21`` as given (``{}``: discover everything and
    register dynamically), plain http allowed because every test server is on 127.0.0.1."""
    return {"url": url, "auth": {"type": "oauth", "oauth21": dict(oauth21), "allowInsecureLoopback": True}}


@dataclass
class Stack:
    """An authorization server, the MCP servers by config name, the broker's config and its daemon.

    ``servers`` maps each config name to its MCP server; aliases map to the same ``McpServer`` object.
    """

    env: Env
    oidc: OidcServer
    servers: dict[str, McpServer]
    browser_env: BrowserEnvFactory
    #: The config's top-level ``store`` (None: not written, the daemon's default).
    store: str | None = None
    #: Wall clock when the first login began (0.0 before): every token of the grant arrived after it.
    logged_in_at: float = 0.0
    _daemon: Daemon | None = field(default=None, repr=False)

    @classmethod
    def assemble(
        cls,
        env: Env,
        oidc_server: OidcServerFactory,
        mcp_server: McpServerFactory,
        browser_env: BrowserEnvFactory,
        *,
        ttl: int = 3600,
        rotate: bool = True,
        names: Sequence[str] = (NAME,),
        aliases: Mapping[str, str] | None = None,
        store: str | None = None,
        json_response: bool = False,
        daemon_browser: bool = False,
        oidc_options: Mapping[str, Any] | None = None,
        mcp_options: Mapping[str, Any] | None = None,
    ) -> Stack:
        """Start one authorization server and one MCP server per name in ``names``, and write the config.

        ``ttl``: access-token lifetime in seconds; ``rotate``: strict refresh-token rotation (a spent one
        presented again revokes the grant); ``aliases``: more config names, each for the URL of the named
        server (``{"b": "srv"}``); ``store``: the config's ``store`` (``file``, ``keyring``, ``auto``);
        ``json_response``: MCP answers as JSON instead of SSE; ``daemon_browser``: the daemon's ``$BROWSER``
        is the approving driver, so it can log in by itself (step-up, first use from a host);
        ``oidc_options``/``mcp_options``: more options for the server fixtures (docs/testing-servers.md).

        Raises:
            ValueError: an alias names a server that is not in ``names``.
        """
        oidc = oidc_server(access_token_ttl=ttl, rotate_refresh_token=rotate, **(oidc_options or {}))
        servers = {
            name: mcp_server(oidc, json_response=json_response, **(mcp_options or {})) for name in names
        }
        for alias, name in (aliases or {}).items():
            if name not in servers:
                raise ValueError(f"alias {alias!r} names {name!r}, which is not one of {list(servers)}")
            servers[alias] = servers[name]
        if daemon_browser:
            env.vars.update(browser_env())
        stack = cls(env, oidc, servers, browser_env, store=store)
        stack.write_config()
        return stack

    def bring_up(self, *, start: bool = True, login: bool = True) -> Stack:
        """Start the daemon (``start``) and log in every server that is not an alias (``login``).

        Raises:
            AssertionError: the daemon did not start, or a login failed (with its output).
        """
        if start:
            self.start()
            if login:
                for name in self.logins():
                    self.log_in(name)
        return self

    # ---- the parts ---------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The first config name."""
        return next(iter(self.servers))

    @property
    def mcp(self) -> McpServer:
        """The first MCP server."""
        return self.servers[self.name]

    @property
    def daemon(self) -> Daemon:
        """The daemon started last (replaced by ``restart``).

        Raises:
            AssertionError: no daemon was started.
        """
        assert self._daemon is not None, "no daemon was started: call start() or bring_up()"
        return self._daemon

    def logins(self) -> list[str]:
        """The config names that are not aliases, in order: one grant each."""
        seen: set[int] = set()
        names = []
        for name, server in self.servers.items():
            if id(server) not in seen:
                seen.add(id(server))
                names.append(name)
        return names

    def write_config(self) -> None:
        """(Re)write the config from ``servers`` and ``store``; a running daemon needs ``reload()``."""
        top = {"store": self.store} if self.store is not None else {}
        self.env.write_config({name: oauth_entry(mcp.url) for name, mcp in self.servers.items()}, **top)

    # ---- the daemon --------------------------------------------------------------------------------------

    def start(self) -> Daemon:
        """Start a daemon on this config and check that it is running.

        Raises:
            AssertionError: a daemon of this stack is still running; or the new one exited at once (its
                log is the message) or did not answer in time.
        """
        assert self._daemon is None or not self._daemon.running, (
            f"a daemon is running (pid {self._daemon.pid})"
        )
        daemon = start_daemon(self.env)
        self._daemon = daemon
        assert daemon.running, daemon.log_text()
        return daemon

    def stop(self) -> int | None:
        """SIGTERM the daemon (SIGKILL after a deadline); its exit status, or None if none was started."""
        return None if self._daemon is None else self._daemon.stop()

    def kill(self) -> None:
        """SIGKILL the daemon: no clean-up, no last save."""
        self.daemon.kill()

    def restart(self) -> Daemon:
        """Stop the daemon if it runs, and start a new one on the same store."""
        self.stop()
        return self.start()

    def reload(self) -> None:
        """``ncp-broker reload``: the running daemon reads the config again."""
        done = self.env.run("ncp-broker", "reload")
        assert done.returncode == 0, done.stderr

    # ---- what a user does --------------------------------------------------------------------------------

    def log_in(
        self, name: str | None = None, *, timeout: float = LOGIN_TIMEOUT, **browser_options: Any
    ) -> subprocess.CompletedProcess[str]:
        """``ncp-broker login NAME`` with the fixtures' HTTP browser driver approving (``browser_options``:
        of the ``browser_env`` fixture); returns the finished command.

        Raises:
            AssertionError: the login failed (its stderr and the daemon's log are the message).
        """
        if not self.logged_in_at:
            self.logged_in_at = time.time()
        name = name or self.name
        browser = dict(self.browser_env(**browser_options))
        done = self.env.run("ncp-broker", "login", name, extra_env=browser, timeout=timeout)
        assert done.returncode == 0, f"login {name} failed:\n{done.stderr}\n{self._log_tail()}"
        return done

    def status(self, name: str | None = None) -> dict[str, Any]:
        """This server's entry in ``ncp-broker status --json NAME`` (never contains a token)."""
        entry: dict[str, Any] = self.env.status(name or self.name)["servers"][0]
        return entry

    def quick_status(self, name: str | None = None) -> dict[str, Any]:
        """The same entry straight over the socket: a millisecond, not a Python start-up."""
        answer = ncp_client.call(
            {"op": "status", "server": name or self.name}, socket_path=self.env.socket, timeout=STATUS_TIMEOUT
        )
        entry: dict[str, Any] = answer["servers"][0]
        return entry

    def wait_for_status(
        self, what: str, ok: Callable[[dict[str, Any]], bool], timeout: float, name: str | None = None
    ) -> dict[str, Any]:
        """Poll ``quick_status`` until ``ok(entry)``; returns that entry.

        Raises:
            WaitTimeout: not within ``timeout`` seconds; the message has ``what`` and the last entry.
        """
        last: list[dict[str, Any]] = []

        def check() -> dict[str, Any] | None:
            entry = self.quick_status(name)
            last[:] = [entry]
            return entry if ok(entry) else None

        return wait_until(check, timeout, interval=0.02, message=lambda: f"{what} (last status: {last})")

    def _log_tail(self, size: int = 4000) -> str:
        if self._daemon is None:
            return "(no daemon)"
        return f"daemon log (tail):\n{self._daemon.log_text()[-size:]}"


StackFactory = Callable[..., Stack]
