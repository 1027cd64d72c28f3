"""``ncp-broker hosts`` through the real CLI, with HOME and the XDG directories in a temporary directory.

No test touches the real home: every host location variable (HOME, XDG_*, CODEX_HOME, GEMINI_CLI_HOME,
CLAUDE_CONFIG_DIR) points into the test's root.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env, start_daemon

pytestmark = pytest.mark.integration

SERVERS = {
    "neus": {"url": "https://mcp.example.com/mcp", "auth": {"type": "oauth", "oauth21": {}}},
    "keyed": {"url": "https://keyed.example.com/mcp?tenant=7", "auth": {"type": "bearer"}},
    "local-tool": {"command": "npx", "args": ["some-stdio-server"]},
}
PROXY = Path(__file__).parents[2] / "brokerd" / "cli" / "_proxy.py"


@pytest.fixture
def hosts_env(env: Env) -> Env:
    home = env.root / "home"
    home.mkdir()
    for var in ("CODEX_HOME", "GEMINI_CLI_HOME", "CLAUDE_CONFIG_DIR", "XDG_RUNTIME_DIR"):
        env.vars.pop(var, None)
    env.vars.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
    )
    env.write_config(SERVERS)
    return env


def home(env: Env) -> Path:
    return Path(env.vars["HOME"])


def ok(env: Env, *argv: str) -> str:
    done = env.run("ncp-broker", "hosts", *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_list_shows_every_host_and_what_is_installed(hosts_env: Env) -> None:
    """`hosts` lists ten hosts with this machine's paths; after an install it names the server."""
    out = ok(hosts_env)
    for host_id in ("claude-desktop", "claude-code", "cursor", "vscode", "windsurf", "codex", "gemini"):
        assert host_id in out
    assert "~/.cursor/mcp.json" in out
    assert "~/.config/goose/config.yaml" in out
    assert "missing" in out
    ok(hosts_env, "install", "cursor", "neus")
    out = ok(hosts_env, "list")
    assert "installed: neus" in out


def test_install_keeps_the_file_is_idempotent_and_uninstall_restores(hosts_env: Env) -> None:
    """A real VS Code mcp.json with comments: install, install again, uninstall; backups are 0600."""
    path = home(hosts_env) / ".config" / "Code" / "User" / "mcp.json"
    path.parent.mkdir(parents=True)
    original = (
        '{\n    // mine\n    "servers": {\n        "fs": {"type": "stdio", "command": "npx"},\n    },\n}\n'
    )
    path.write_text(original)
    path.chmod(0o600)

    out = ok(hosts_env, "install", "vscode", "neus")
    assert f"added neus in VS Code's {path}" in out
    assert "backup of the previous file" in out
    data = path.read_text()
    assert data.startswith(
        '{\n    // mine\n    "servers": {\n        "fs": {"type": "stdio", "command": "npx"},'
    )
    entry = json.loads(data.replace("// mine", "").replace("},\n    },\n}", "}\n    }\n}"))["servers"]["neus"]
    assert entry["type"] == "stdio"
    assert entry["args"] == ["proxy", "neus"]
    assert os.path.isabs(entry["command"])
    assert Path(entry["command"]).name == "ncp-broker"
    assert entry["env"]["NCP_BROKER_SOCK"] == str(hosts_env.socket)
    assert entry["env"]["NCP_BROKER_CONFIG"] == str(hosts_env.config)
    backups = sorted(path.parent.glob("mcp.json.*.ncp-broker.bak"))
    assert len(backups) == 1
    assert backups[0].read_text() == original
    assert stat.S_IMODE(backups[0].stat().st_mode) == 0o600

    again = ok(hosts_env, "install", "vscode", "neus")
    assert "nothing changed" in again
    assert path.read_text() == data
    assert len(list(path.parent.glob("mcp.json.*.ncp-broker.bak"))) == 1

    out = ok(hosts_env, "uninstall", "vscode", "neus")
    assert "removed neus" in out
    assert path.read_text() == original
    assert "nothing to remove" in ok(hosts_env, "uninstall", "vscode", "neus")


def test_toml_and_yaml_hosts_through_the_cli(hosts_env: Env) -> None:
    """Codex's config.toml and Goose's config.yaml keep their comments; uninstall restores them."""
    codex = home(hosts_env) / ".codex" / "config.toml"
    codex.parent.mkdir()
    codex.write_text('model = "o3" # mine\n\n[mcp_servers.fs]\ncommand = "npx"\n')
    goose = home(hosts_env) / ".config" / "goose" / "config.yaml"
    goose.parent.mkdir(parents=True)
    goose.write_text(
        "GOOSE_MODE: auto # mine\nextensions:\n  developer:\n    enabled: true\n    type: builtin\n"
    )
    before = codex.read_text(), goose.read_text()
    ok(hosts_env, "install", "codex", "neus")
    ok(hosts_env, "install", "goose", "neus")
    assert "[mcp_servers.neus]\n" in codex.read_text()
    assert "# mine" in codex.read_text()
    assert "  neus:\n    enabled: true\n    type: stdio\n" in goose.read_text()
    assert "# mine" in goose.read_text()
    ok(hosts_env, "uninstall", "codex", "neus")
    ok(hosts_env, "uninstall", "goose", "neus")
    assert (codex.read_text(), goose.read_text()) == before


def test_missing_file_is_created_with_its_directory(hosts_env: Env) -> None:
    """Claude Desktop's file and directory do not exist: both are created, the file 0600."""
    path = home(hosts_env) / ".config" / "Claude" / "claude_desktop_config.json"
    out = ok(hosts_env, "install", "claude-desktop", "neus", "--name", "neus (broker)")
    assert f"created {path}" in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(json.loads(path.read_text())["mcpServers"]) == ["neus (broker)"]


def test_unparsable_file_is_refused_and_untouched(hosts_env: Env) -> None:
    """A Cursor file with a syntax error: exit 1, the file is byte-for-byte as it was, no backup."""
    path = home(hosts_env) / ".cursor" / "mcp.json"
    path.parent.mkdir()
    path.write_text('{"mcpServers": {"fs": {"command": "npx",}}}')
    done = hosts_env.run("ncp-broker", "hosts", "install", "cursor", "neus")
    assert done.returncode == 1
    assert f"ncp-broker: {path}: not valid JSON" in done.stderr
    assert "left untouched" in done.stderr
    assert path.read_text() == '{"mcpServers": {"fs": {"command": "npx",}}}'
    assert list(path.parent.iterdir()) == [path]


def test_unknown_or_unbrokered_server_names_the_fix(hosts_env: Env) -> None:
    """A name that is not configured, or a stdio entry, is refused with the configured names."""
    done = hosts_env.run("ncp-broker", "hosts", "install", "cursor", "nope")
    assert done.returncode == 4
    assert "no server named 'nope'" in done.stderr
    assert "configured: keyed, neus" in done.stderr
    assert "ncp-broker add NAME URL --oauth" in done.stderr
    done = hosts_env.run("ncp-broker", "hosts", "install", "cursor", "local-tool")
    assert done.returncode == 4
    assert "'local-tool' is not brokered" in done.stderr
    assert not (home(hosts_env) / ".cursor").exists()


def test_dry_run_writes_nothing(hosts_env: Env) -> None:
    """--dry-run prints the diff and leaves no file behind."""
    out = ok(hosts_env, "install", "gemini", "neus", "--dry-run")
    assert "would have added neus" in out
    assert '+    "neus": {' in out
    assert "nothing was written" in out
    assert not (home(hosts_env) / ".gemini").exists()


def test_foreign_entry_needs_replace(hosts_env: Env) -> None:
    """An mcp-remote entry with the same name is kept unless --replace; uninstall never removes it."""
    path = home(hosts_env) / ".codeium" / "windsurf" / "mcp_config.json"
    path.parent.mkdir(parents=True)
    remote = (
        '{"mcpServers": {"neus": {"command": "npx", "args": ["mcp-remote", "https://mcp.example.com/mcp"]}}}'
    )
    path.write_text(remote)
    done = hosts_env.run("ncp-broker", "hosts", "install", "windsurf", "neus")
    assert done.returncode == 1
    assert "did not write" in done.stderr
    assert "--replace" in done.stderr
    assert "left as it is" in ok(hosts_env, "uninstall", "windsurf", "neus")
    assert path.read_text() == remote
    assert "replaced (it was not ncp-broker's) neus" in ok(
        hosts_env, "install", "windsurf", "neus", "--replace"
    )
    assert json.loads(path.read_text())["mcpServers"]["neus"]["args"] == ["proxy", "neus"]


def test_claude_code_scopes_and_header_helper(hosts_env: Env) -> None:
    """Claude Code: user scope in ~/.claude.json, project in .mcp.json, and the headersHelper variant."""
    claude = home(hosts_env) / ".claude.json"
    claude.write_text('{\n  "numStartups": 3,\n  "projects": {}\n}\n')
    ok(hosts_env, "install", "claude-code", "neus", "--via", "headers")
    entry = json.loads(claude.read_text())["mcpServers"]["neus"]
    assert entry["type"] == "http"
    assert entry["url"] == "https://mcp.example.com/mcp"
    assert entry["headersHelper"].endswith("ncp-token neus --headers-json")
    assert f"NCP_BROKER_SOCK={hosts_env.socket}" in entry["headersHelper"]
    # the proxy variant replaces our own header-helper entry without --replace
    ok(hosts_env, "install", "claude-code", "neus")
    entry = json.loads(claude.read_text())["mcpServers"]["neus"]
    assert entry["type"] == "stdio"
    assert "url" not in entry
    assert "headersHelper" not in entry
    project = hosts_env.root / "proj"
    project.mkdir()
    ok(hosts_env, "install", "claude-code", "neus", "--scope", "project", "--project-dir", str(project))
    assert json.loads((project / ".mcp.json").read_text())["mcpServers"]["neus"]["args"] == ["proxy", "neus"]
    # a query string may carry a key: never copied into a host file
    done = hosts_env.run("ncp-broker", "hosts", "install", "claude-code", "keyed", "--via", "headers")
    assert done.returncode == 1
    assert "query string" in done.stderr
    assert "tenant=7" not in claude.read_text()
    done = hosts_env.run("ncp-broker", "hosts", "install", "cursor", "neus", "--via", "headers")
    assert done.returncode == 2
    assert "claude-code only" in done.stderr
    done = hosts_env.run("ncp-broker", "hosts", "install", "cursor", "neus", "--scope", "local")
    assert done.returncode == 2
    assert "cursor has no 'local' scope" in done.stderr


def test_show_prints_the_entry_and_writes_nothing(hosts_env: Env) -> None:
    """`hosts show` prints the exact entry; for Claude Code both variants and `claude mcp add-json`."""
    out = ok(hosts_env, "show", "zed", "neus")
    assert '"context_servers": {' in out
    assert '"proxy",' in out
    assert "Agent Panel" in out
    out = ok(hosts_env, "show", "claude-code", "neus")
    assert "# via proxy (the default)" in out
    assert "# via headers" in out
    assert "claude mcp add-json --scope user neus" in out
    out = ok(hosts_env, "show", "codex", "neus")
    assert "[mcp_servers.neus]" in out
    assert "codex mcp list" in out
    assert not any(home(hosts_env).iterdir())


def test_ncp_profile_never_becomes_a_proxy_of_the_broker(hosts_env: Env) -> None:
    """The broker reading NCP's profile: refused with the way out; with its own config, NCP gets the proxy."""
    profile = home(hosts_env) / ".ncp" / "profiles" / "all.json"
    profile.parent.mkdir(parents=True)
    profile.write_text(json.dumps({"name": "all", "description": "d", "mcpServers": SERVERS}, indent=2))
    before = profile.read_text()
    done = hosts_env.run(
        "ncp-broker",
        "hosts",
        "install",
        "ncp",
        "neus",
        "--replace",
        extra_env={"NCP_BROKER_CONFIG": str(profile)},
    )
    assert done.returncode == 1
    assert "is the broker's own config" in done.stderr
    assert "give the broker its own config" in done.stderr
    assert profile.read_text() == before
    # With the broker on its own config, NCP's URL entry is swapped for the proxy (NCP stops its own OAuth).
    out = ok(hosts_env, "install", "ncp", "neus", "--replace")
    assert "replaced" in out
    data = json.loads(profile.read_text())
    assert data["mcpServers"]["neus"]["args"] == ["proxy", "neus"]
    assert data["name"] == "all"
    # A new profile file starts as NCP's own profile document.
    ok(hosts_env, "install", "ncp", "neus", "--profile", "work")
    work = json.loads((profile.parent / "work.json").read_text())
    assert work["name"] == "work"
    assert list(work["mcpServers"]) == ["neus"]


def test_missing_round_trip_library_names_the_extra(hosts_env: Env) -> None:
    """Without tomlkit, Codex's file is refused with the pip command, and nothing is written."""
    code = (
        "import sys; sys.modules['tomlkit'] = None; from brokerd.cli import main; "
        "sys.exit(main(['hosts', 'install', 'codex', 'neus']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=hosts_env.vars,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'ncp-broker[hosts]'" in done.stderr
    assert not (home(hosts_env) / ".codex").exists()


def _entry_from(path: Path) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(path.read_text())["mcpServers"]["neus"]
    return entry


def test_installed_entry_starts_as_a_host_would_start_it(hosts_env: Env) -> None:
    """Read the entry back from the host file and run its command, args and env with a minimal env."""
    ok(hosts_env, "install", "claude-desktop", "neus")
    entry = _entry_from(home(hosts_env) / ".config" / "Claude" / "claude_desktop_config.json")
    command = entry["command"]
    assert os.path.isabs(command)
    assert os.access(command, os.X_OK)
    # What the MCP SDKs' stdio clients pass on (HOME, PATH, …) plus the entry's own env; nothing else.
    host_env = {"HOME": hosts_env.vars["HOME"], "PATH": "/usr/bin:/bin", **entry["env"]}
    done = subprocess.run(
        [command, "--help"], capture_output=True, text=True, env=host_env, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "hosts" in done.stdout
    if not PROXY.exists():
        pytest.skip("brokerd/cli/_proxy.py is not merged into this branch yet: the entry resolves and runs")
    help_done = subprocess.run(
        [command, *entry["args"][:-1], "--help"],
        capture_output=True,
        text=True,
        env=host_env,
        timeout=30,
        check=False,
    )
    assert help_done.returncode == 0, help_done.stderr
    daemon = start_daemon(hosts_env)
    try:
        # A host that starts the proxy and closes stdin at once: it must exit 0, printing only JSON lines.
        proc = subprocess.run(
            [command, *entry["args"]],
            input="",
            capture_output=True,
            text=True,
            env=host_env,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert all(line.startswith("{") for line in proc.stdout.splitlines())
    finally:
        daemon.stop()


def test_nothing_is_written_outside_the_test_home(hosts_env: Env) -> None:
    """Every install of every host lands under the temporary HOME."""
    before = set(hosts_env.root.rglob("*"))
    for host_id in (
        "claude-desktop",
        "claude-code",
        "cursor",
        "vscode",
        "windsurf",
        "codex",
        "gemini",
        "goose",
        "zed",
        "ncp",
    ):
        ok(hosts_env, "install", host_id, "neus")
    written = {p for p in hosts_env.root.rglob("*") if p.is_file()} - before
    assert written
    assert all(home(hosts_env) in p.parents for p in written)


def test_show_all_prints_every_host(hosts_env: Env) -> None:
    """`hosts show all SERVER`: one entry per host; hosts without the scope asked for say so."""
    out = ok(hosts_env, "show", "all", "neus")
    assert out.count("# check:") == 10
    out = ok(hosts_env, "show", "all", "neus", "--scope", "project")
    assert "# windsurf: windsurf has no 'project' scope" in out
    assert out.count("# check:") == 7
