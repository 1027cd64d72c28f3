"""Every host in the table: the entry written, idempotency, foreign entries, uninstall of ours only."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from brokerd.hosts import HOSTS, Context, HostsError, Launch, Wanted, installed, plan_install, plan_uninstall
from brokerd.hosts._launch import helper_server, launch_for, proxy_server
from brokerd.hosts._table import Location

LAUNCH = Launch("/opt/venv/bin/ncp-broker", ("proxy", "neus"), {"NCP_BROKER_SOCK": "/tmp/b.sock"})

# A file as each host might have it: other entries, other keys, comments where the format allows them,
# indentation that is not ours.
EXISTING = {
    "claude-desktop": (
        '{\n    "mcpServers": {\n        "fs": {"command": "npx", "args": ["-y", "fs"]}\n    },\n'
        '    "globalShortcut": "Ctrl+Space"\n}\n'
    ),
    "claude-code": (
        '{\n  "numStartups": 34,\n  "mcpServers": {\n    "fs": {\n      "type": "stdio",\n'
        '      "command": "npx",\n      "args": []\n    }\n  },\n  "projects": {}\n}\n'
    ),
    "cursor": '{\n\t"mcpServers": {\n\t\t"fs": {\n\t\t\t"command": "npx"\n\t\t}\n\t}\n}\n',
    "vscode": (
        '{\n  // my servers\n  "servers": {\n    "fs": {"type": "stdio", "command": "npx"}, // fs\n  },\n'
        '  "inputs": [],\n}\n'
    ),
    "windsurf": '{"mcpServers": {"fs": {"command": "npx", "disabled": false}}}\n',
    "codex": (
        '# codex\nmodel = "o3" # keep\n\n[mcp_servers.fs]\ncommand = "npx"\n\n[tui]\nnotifications = true\n'
    ),
    "gemini": (
        '{\n  // theme first\n  "theme": "GitHub",\n  "mcpServers": {\n    "fs": {"command": "npx"}\n  }\n}\n'
    ),
    "goose": (
        "extensions:\n  developer:\n    enabled: true\n    name: developer\n    type: builtin  # built in\n"
        "GOOSE_MODE: auto\n"
    ),
    "zed": (
        '// Zed settings\n{\n  "theme": "One Dark",\n  "context_servers": {\n    "fs": {\n'
        '      "command": "npx",\n      "args": [],\n    },\n  },\n}\n'
    ),
    "ncp": (
        '{\n  "name": "all",\n  "description": "everything",\n  "mcpServers": {\n'
        '    "fs": {"command": "npx"}\n  },\n'
        '  "metadata": {"created": "2026-01-01", "modified": "2026-01-01"}\n}\n'
    ),
}


def ctx(tmp_path: Path) -> Context:
    return Context(home=tmp_path / "home", project=tmp_path / "proj", platform="linux", env={})


def wanted(host_id: str, name: str = "neus") -> list[Wanted]:
    return [Wanted("neus", name, HOSTS[host_id].entry(LAUNCH, name))]


def location(host_id: str, tmp_path: Path) -> Location:
    return next(iter(HOSTS[host_id].scopes.values()))(ctx(tmp_path))


def test_every_host_has_a_fixture() -> None:
    """The table and these tests cover the same ten hosts."""
    assert sorted(HOSTS) == sorted(EXISTING)
    assert len(HOSTS) == 10


@pytest.mark.parametrize("host_id", sorted(EXISTING))
def test_install_is_idempotent_and_uninstall_restores(host_id: str, tmp_path: Path) -> None:
    """Install adds the entry and keeps the rest; a second install changes nothing; uninstall restores."""
    host, where = HOSTS[host_id], location(host_id, tmp_path)
    before = EXISTING[host_id]
    text, outcomes = plan_install(before, host, where, wanted(host_id), replace=False, where="f")
    assert [o.action for o in outcomes] == ["added"]
    assert installed(text, host, where, "f") == {host.key("neus"): "neus"}
    assert installed(before, host, where, "f") == {}
    again, outcomes = plan_install(text, host, where, wanted(host_id), replace=False, where="f")
    assert again == text
    assert [o.action for o in outcomes] == ["unchanged"]
    restored, outcomes = plan_uninstall(text, host, where, ["neus"], name=None, where="f")
    assert [o.action for o in outcomes] == ["removed"]
    assert restored == before


def test_entries_have_each_hosts_shape() -> None:
    """The keys each host documents: type where it wants one, goose's cmd/envs, no secret anywhere."""
    shapes = {h: HOSTS[h].entry(LAUNCH, "neus") for h in HOSTS}
    base = {"command": LAUNCH.command, "args": ["proxy", "neus"], "env": {"NCP_BROKER_SOCK": "/tmp/b.sock"}}
    for plain in ("claude-desktop", "cursor", "windsurf", "codex", "gemini", "zed", "ncp"):
        assert shapes[plain] == base
    assert shapes["claude-code"] == {"type": "stdio", **base}
    assert shapes["vscode"] == {"type": "stdio", **base}
    goose = shapes["goose"]
    assert goose["type"] == "stdio"
    assert goose["cmd"] == LAUNCH.command
    assert goose["enabled"] is True
    assert goose["envs"] == base["env"]
    assert goose["name"] == "neus"
    assert goose["timeout"] == 300
    no_env = Launch("/x/ncp-broker", ("proxy", "neus"))
    assert "env" not in HOSTS["cursor"].entry(no_env, "neus")


def test_containers_and_files_per_host(tmp_path: Path) -> None:
    """Each host's key and default file on Linux, macOS and with the hosts' own overrides."""
    home = tmp_path / "home"
    linux = Context(home=home, project=tmp_path / "p", platform="linux", env={})
    mac = Context(home=home, project=tmp_path / "p", platform="darwin", env={})
    want = {
        "claude-desktop": (".config/Claude/claude_desktop_config.json", ("mcpServers",)),
        "claude-code": (".claude.json", ("mcpServers",)),
        "cursor": (".cursor/mcp.json", ("mcpServers",)),
        "vscode": (".config/Code/User/mcp.json", ("servers",)),
        "windsurf": (".codeium/windsurf/mcp_config.json", ("mcpServers",)),
        "codex": (".codex/config.toml", ("mcp_servers",)),
        "gemini": (".gemini/settings.json", ("mcpServers",)),
        "goose": (".config/goose/config.yaml", ("extensions",)),
        "zed": (".config/zed/settings.json", ("context_servers",)),
        "ncp": (".ncp/profiles/all.json", ("mcpServers",)),
    }
    for host_id, (rel, container) in want.items():
        loc = HOSTS[host_id].scopes["user"](linux)
        assert (loc.path, loc.container) == (home / rel, container), host_id
    app = home / "Library" / "Application Support"
    assert HOSTS["claude-desktop"].scopes["user"](mac).path == app / "Claude" / "claude_desktop_config.json"
    assert HOSTS["vscode"].scopes["user"](mac).path == app / "Code" / "User" / "mcp.json"
    assert HOSTS["zed"].scopes["user"](mac).path == home / ".config" / "zed" / "settings.json"
    env = Context(
        home=home,
        project=tmp_path / "p",
        platform="linux",
        env={"CODEX_HOME": "/c", "XDG_CONFIG_HOME": "/x", "GEMINI_CLI_HOME": "/g", "CLAUDE_CONFIG_DIR": "/k"},
    )
    assert HOSTS["codex"].scopes["user"](env).path == Path("/c/config.toml")
    assert HOSTS["zed"].scopes["user"](env).path == Path("/x/zed/settings.json")
    assert HOSTS["gemini"].scopes["user"](env).path == Path("/g/.gemini/settings.json")
    assert HOSTS["claude-code"].scopes["user"](env).path == Path("/k/.claude.json")
    local = HOSTS["claude-code"].scopes["local"](linux)
    assert local.container == ("projects", str(tmp_path / "p"), "mcpServers")
    assert HOSTS["cursor"].scopes["project"](linux).path == tmp_path / "p" / ".cursor" / "mcp.json"
    profile = Context(home=home, project=tmp_path, platform="linux", env={}, ncp_profile="work")
    assert HOSTS["ncp"].scopes["user"](profile).path == home / ".ncp" / "profiles" / "work.json"


def test_a_foreign_entry_is_refused_then_replaced_on_request(tmp_path: Path) -> None:
    """An entry of the same name that we did not write (mcp-remote) stays unless --replace."""
    host, where = HOSTS["cursor"], location("cursor", tmp_path)
    text = '{"mcpServers": {"neus": {"command": "npx", "args": ["mcp-remote", "https://x/mcp"]}}}'
    with pytest.raises(HostsError, match=r"(?s)did not write.*--name NAME.*--replace"):
        plan_install(text, host, where, wanted("cursor"), replace=False, where="f")
    new, outcomes = plan_install(text, host, where, wanted("cursor"), replace=True, where="f")
    assert [o.action for o in outcomes] == ["replaced"]
    assert json.loads(new)["mcpServers"]["neus"] == HOSTS["cursor"].entry(LAUNCH, "neus")
    # uninstall never removes what is not ours
    same, outcomes = plan_uninstall(text, host, where, ["neus"], name=None, where="f")
    assert same == text
    assert [o.action for o in outcomes] == ["foreign"]


def test_an_entry_of_ours_is_updated_and_keeps_the_users_keys(tmp_path: Path) -> None:
    """A moved executable updates our keys; a key the user added (Gemini's trust) is kept."""
    host, where = HOSTS["gemini"], location("gemini", tmp_path)
    old = {"command": "/old/bin/ncp-broker", "args": ["proxy", "neus"], "trust": True, "env": {"X": "1"}}
    text = json.dumps({"mcpServers": {"neus": old}}, indent=2)
    new, outcomes = plan_install(text, host, where, wanted("gemini"), replace=False, where="f")
    assert [o.action for o in outcomes] == ["updated"]
    entry = json.loads(new)["mcpServers"]["neus"]
    assert entry == {**HOSTS["gemini"].entry(LAUNCH, "neus"), "trust": True}


def test_uninstall_removes_only_our_entries_for_those_servers(tmp_path: Path) -> None:
    """Entries of ours for other servers, and entries under other names, follow the rules."""
    host, where = HOSTS["claude-desktop"], location("claude-desktop", tmp_path)
    servers = {
        "neus": {"command": "/a/ncp-broker", "args": ["proxy", "neus"]},
        "neus-2": {"command": "/usr/bin/python3", "args": ["-m", "brokerd", "proxy", "neus"]},
        "other": {"command": "/a/ncp-broker", "args": ["proxy", "other"]},
        "fs": {"command": "npx", "args": ["proxy", "neus"]},
    }
    text = json.dumps({"mcpServers": servers}, indent=2)
    out, outcomes = plan_uninstall(text, host, where, ["neus"], name=None, where="f")
    assert sorted(o.name for o in outcomes if o.action == "removed") == ["neus", "neus-2"]
    assert sorted(json.loads(out)["mcpServers"]) == ["fs", "other"]
    out, _ = plan_uninstall(text, host, where, ["neus"], name="neus-2", where="f")
    assert sorted(json.loads(out)["mcpServers"]) == ["fs", "neus", "other"]
    out, outcomes = plan_uninstall(text, host, where, ["nothing"], name=None, where="f")
    assert out == text
    assert [o.action for o in outcomes] == ["absent"]


def test_goose_keys_its_extensions_as_goose_does(tmp_path: Path) -> None:
    """goose looks an extension up by name_to_key(name): lower case, no spaces."""
    host, where = HOSTS["goose"], location("goose", tmp_path)
    assert host.key("My Neus.server") == "myneus_server"
    text, _ = plan_install("", host, where, wanted("goose", "My Neus"), replace=False, where="f")
    assert text.startswith("extensions:\n  myneus:\n    enabled: true\n")
    assert "    name: My Neus\n" in text


def test_unparsable_files_are_refused(tmp_path: Path) -> None:
    """Every format: a broken file is an error naming the file, and nothing is produced."""
    broken = {"json": "{", "jsonc": "{", "jsonc+commas": "{", "toml": "[x\n", "yaml": "a: [\n"}
    for host in HOSTS.values():
        with pytest.raises(HostsError, match=r"(?s)/f/config: .*left untouched"):
            plan_install(
                broken[host.fmt], host, location(host.id, tmp_path), [], replace=False, where="/f/config"
            )


def test_recognising_our_entries() -> None:
    """Our command lines, and nothing that merely looks like them."""
    assert proxy_server("/x/ncp-broker", ["proxy", "neus"]) == "neus"
    assert proxy_server("/x/ncp-broker", ["proxy", "neus", "--transport", "sse"]) == "neus"
    assert proxy_server("/usr/bin/python3.11", ["-m", "brokerd", "proxy", "neus"]) == "neus"
    assert proxy_server("npx", ["ncp-broker", "proxy", "neus"]) is None
    assert proxy_server("/x/ncp-broker", ["start"]) is None
    assert proxy_server("/x/ncp-broker", ["proxy", "--transport", "sse"]) is None
    assert proxy_server(None, ["proxy", "neus"]) is None
    assert helper_server("/x/ncp-token neus --headers-json") == "neus"
    assert helper_server("NCP_BROKER_SOCK=/s '/my dir/ncp-token' neus --headers-json") == "neus"
    assert helper_server("/opt/get-token.sh neus") is None
    assert helper_server("ncp-token 'unclosed") is None


def test_launch_uses_this_installation_and_only_non_default_locations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The absolute script beside sys.executable; env only for locations the proxy would not find."""
    for var in ("NCP_BROKER_SOCK", "NCP_BROKER_CONFIG", "NCP_BROKER_DATA", "NCP_BROKER_STATE"):
        monkeypatch.delenv(var, raising=False)
    for var in ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(var, raising=False)
    from brokerd import paths

    default = launch_for("neus", socket=paths.socket_path(), config=paths.config_path())
    script = Path(sys.executable).parent / "ncp-broker"
    assert default.command == str(script)
    assert os.path.isabs(default.command)
    assert default.args == ("proxy", "neus")
    assert dict(default.env) == {}
    monkeypatch.setenv("NCP_BROKER_DATA", str(tmp_path / "data"))
    custom = launch_for("neus", socket=tmp_path / "s.sock", config=tmp_path / "c.json")
    assert dict(custom.env) == {
        "NCP_BROKER_SOCK": str(tmp_path / "s.sock"),
        "NCP_BROKER_CONFIG": str(tmp_path / "c.json"),
        "NCP_BROKER_DATA": str(tmp_path / "data"),
    }
    # The computation must not leave the process environment changed.
    assert os.environ["NCP_BROKER_DATA"] == str(tmp_path / "data")


def test_claude_code_local_scope_lives_in_the_project_entry(tmp_path: Path) -> None:
    """--scope local writes projects[<dir>].mcpServers in ~/.claude.json, keeping that project's keys."""
    host = HOSTS["claude-code"]
    where = host.scopes["local"](ctx(tmp_path))
    project = str(tmp_path / "proj")
    text = json.dumps({"projects": {project: {"allowedTools": [], "history": []}}}, indent=2)
    out, _ = plan_install(text, host, where, wanted("claude-code"), replace=False, where="f")
    data: Any = json.loads(out)
    assert data["projects"][project]["allowedTools"] == []
    assert data["projects"][project]["mcpServers"]["neus"]["args"] == ["proxy", "neus"]


def test_round_trip_libraries_load_only_for_the_hosts_that_need_them(tmp_path: Path) -> None:
    """Building the CLI and editing a JSON host import neither tomlkit nor ruamel.yaml."""
    import subprocess

    code = (
        "import sys\n"
        "from brokerd.cli import _parser\n"
        "from brokerd.hosts import HOSTS, plan_install, Wanted, Launch\n"
        "from brokerd.hosts._table import Context\n"
        "from pathlib import Path\n"
        "_parser()\n"
        "h = HOSTS['cursor']\n"
        "loc = h.scopes['user'](Context(home=Path('/h'), project=Path('/p'), env={}))\n"
        "plan_install('', h, loc, [Wanted('n', 'n', h.entry(Launch('/x/ncp-broker', ('proxy', 'n')), 'n'))],"
        " replace=False, where='f')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('tomlkit', 'ruamel'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == "[]"
