"""Shared fixtures: an isolated per-test environment, a real daemon started by PID, and the whole stack
(authorization server, MCP servers, config, daemon, logged-in grant). What they build lives in
tests/harness/; the servers' fixtures in tests/servers/fixtures.py.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Before the import below, so that the harness's asserts are rewritten (they then show their values).
pytest.register_assert_rewrite("tests.harness", "tests.fakes")

from tests import secret_scan  # noqa: E402
from tests.harness import Daemon, Env, Stack, StackFactory, start_daemon  # noqa: E402

if TYPE_CHECKING:
    from tests.servers.fixtures import BrowserEnvFactory, McpServerFactory, OidcServerFactory

# Real authorization server, MCP server and browser drivers for integration tests (tests/servers/).
pytest_plugins = ["tests.servers.fixtures"]

# Test files written before tests/harness/ import these names from here.
__all__ = ["Daemon", "Env", "start_daemon"]


@pytest.fixture(scope="session", autouse=True)
def secret_hygiene() -> Iterator[None]:
    """Issue 5: no secret issued or configured during the run appears in a daemon log or a CLI output.

    $NCP_TEST_SECRETS_DIR is where oidc_server.mjs and the tests record secrets and where Env keeps its
    outputs (tests/secret_scan.py); at the end, the outputs are searched for the secrets. The directory is
    kept when a leak is found.
    """
    directory = Path(tempfile.mkdtemp(prefix="ncpb-secrets-"))
    os.environ[secret_scan.SECRETS_DIR_VAR] = str(directory)
    try:
        yield
    finally:
        del os.environ[secret_scan.SECRETS_DIR_VAR]
    if leaks := secret_scan.scan_session(directory):
        where = directory / secret_scan.OUTPUTS
        pytest.fail(
            f"whole-session scan: {secret_scan.report(leaks)}\n(outputs kept in {where})", pytrace=False
        )
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    """A fresh, private broker installation (config, socket, data and state directories) for this test."""
    # Unix socket paths are limited to ~107 bytes, and pytest's tmp_path is long: use a short root.
    root = Path(tempfile.mkdtemp(prefix="ncpb-"))
    e = Env(
        root=root,
        config=root / "config.json",
        socket=root / "run" / "broker.sock",
        data=root / "data",
        state=root / "state",
    )
    e.vars = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NCP_", "CLAUDE_CODE_"))},
        "NCP_BROKER_CONFIG": str(e.config),
        "NCP_BROKER_SOCK": str(e.socket),
        "NCP_BROKER_DATA": str(e.data),
        "NCP_BROKER_STATE": str(e.state),
        "NCP_BROKER_LOG_LEVEL": "debug",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if (secrets := secret_scan.secrets_dir()) is not None:
        e.outputs = secrets / secret_scan.OUTPUTS / re.sub(r"[^\w.-]+", "_", request.node.nodeid)
    try:
        yield e
    finally:
        e.keep_for_secret_scan()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def daemon(env: Env) -> Iterator[Daemon]:
    """A real daemon on a private socket; the test writes the config first (or gets an empty one)."""
    if not env.config.exists():
        env.write_config({})
    d = start_daemon(env)
    assert d.proc.poll() is None, d.log_text()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def stack(
    env: Env,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
) -> Iterator[StackFactory]:
    """Factory: ``stack(*, start=True, login=True, **options) -> Stack`` (options of ``Stack.assemble``):
    the servers, the config, a daemon and a logged-in grant, in this test's ``env``; every daemon it
    started is stopped at teardown (the servers by their own fixtures)."""
    made: list[Stack] = []

    def make(*, start: bool = True, login: bool = True, **options: Any) -> Stack:
        built = Stack.assemble(env, oidc_server, mcp_server, browser_env, **options)
        made.append(built)  # before bring_up: a failed login still stops the daemon
        return built.bring_up(start=start, login=login)

    yield make
    for built in reversed(made):
        built.stop()
