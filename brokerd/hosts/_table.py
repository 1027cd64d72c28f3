"""The MCP hosts ncp-broker knows: where each keeps its MCP servers, in which format, under which key,
and what an entry that runs the proxy looks like there. docs/hosts.md cites each host's documentation.

Everything host-specific is data in ``HOSTS``; the install logic (``_install``) is the same for all.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brokerd.hosts._launch import Launch, helper_server, proxy_server

__all__ = ["HOSTS", "Context", "Host", "Location"]


@dataclass(frozen=True)
class Context:
    """What decides a host's file: the home directory, the project directory, the platform, the env."""

    home: Path
    project: Path
    platform: str = sys.platform
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    ncp_profile: str = "all"

    def xdg_config(self) -> Path:
        value = self.env.get("XDG_CONFIG_HOME")
        return Path(value) if value else self.home / ".config"

    def app_data(self) -> Path:
        """Electron's ``appData``: where VS Code and Claude Desktop keep their user files."""
        if self.platform == "darwin":
            return self.home / "Library" / "Application Support"
        return self.xdg_config()


@dataclass(frozen=True)
class Location:
    path: Path
    container: tuple[str, ...]  # the keys that lead to the mapping of server entries


@dataclass(frozen=True)
class Host:
    id: str
    title: str
    #: ``json``, ``jsonc`` (comments), ``jsonc+commas`` (and trailing commas), ``toml`` or ``yaml``.
    fmt: str
    #: scope -> where its file is; the first scope is the default.
    scopes: Mapping[str, Callable[[Context], Location]]
    #: (launch, entry name) -> the entry; and the reverse, an entry -> the SERVER when we wrote it.
    entry: Callable[[Launch, str], dict[str, Any]]
    server_of: Callable[[Any], str | None]
    check: str
    docs: str
    key: Callable[[str], str] = str  # the entry's key for a name (goose derives one)
    #: the document a missing file starts as.
    new_document: Callable[[Context], dict[str, Any]] | None = None
    #: the key names this host's entries use for the command's parts (kept when we update an entry).
    owned: tuple[str, ...] = ("type", "command", "args", "env")


def _command_entry(launch: Launch, _name: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {**extra, "command": launch.command, "args": list(launch.args)}
    if launch.env:
        entry["env"] = dict(launch.env)
    return entry


def _plain_entry(launch: Launch, name: str) -> dict[str, Any]:
    return _command_entry(launch, name)


def _stdio_entry(launch: Launch, name: str) -> dict[str, Any]:
    return _command_entry(launch, name, type="stdio")


def _command_server(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return None
    return proxy_server(entry.get("command"), entry.get("args"))


def _claude_code_server(entry: Any) -> str | None:
    if isinstance(entry, dict) and "headersHelper" in entry:
        return helper_server(entry.get("headersHelper"))
    return _command_server(entry)


def _goose_key(name: str) -> str:
    # goose's name_to_key (crates/goose/src/config/extensions.rs): the key it looks an extension up by.
    out = []
    for c in name:
        if c.isascii() and (c.isalnum() or c in "_-"):
            out.append(c)
        elif not c.isspace():
            out.append("_")
    return "".join(out).lower()


def _goose_entry(launch: Launch, name: str) -> dict[str, Any]:
    return {
        "enabled": True,
        "type": "stdio",
        "name": name,
        "description": f"{launch.args[-1]} through ncp-broker (one shared OAuth grant)",
        "cmd": launch.command,
        "args": list(launch.args),
        "envs": dict(launch.env),
        "env_keys": [],
        "timeout": 300,
    }


def _goose_server(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return None
    return proxy_server(entry.get("cmd"), entry.get("args"))


def _ncp_profile(ctx: Context) -> dict[str, Any]:
    # NCP's ProfileManager reads {name, description, mcpServers, metadata} (src/profiles/profile-manager.ts).
    return {"name": ctx.ncp_profile, "description": f"NCP profile {ctx.ncp_profile}", "mcpServers": {}}


def _at(path: Callable[[Context], Path], *container: str) -> Callable[[Context], Location]:
    return lambda ctx: Location(path(ctx), container)


def _claude_code_local(ctx: Context) -> Location:
    # `claude mcp add --scope local` keeps servers per project inside ~/.claude.json.
    return Location(_claude_json(ctx), ("projects", str(ctx.project), "mcpServers"))


def _claude_json(ctx: Context) -> Path:
    custom = ctx.env.get("CLAUDE_CONFIG_DIR")
    return Path(custom) / ".claude.json" if custom else ctx.home / ".claude.json"


def _codex_home(ctx: Context) -> Path:
    custom = ctx.env.get("CODEX_HOME")
    return Path(custom) if custom else ctx.home / ".codex"


def _gemini_home(ctx: Context) -> Path:
    custom = ctx.env.get("GEMINI_CLI_HOME")
    return Path(custom) if custom else ctx.home


def _zed_dir(ctx: Context) -> Path:
    return ctx.xdg_config() / "zed" if ctx.platform != "darwin" else ctx.home / ".config" / "zed"


def _goose_dir(ctx: Context) -> Path:
    return (ctx.xdg_config() if ctx.platform != "darwin" else ctx.home / ".config") / "goose"


_MCP = ("mcpServers",)

HOSTS: dict[str, Host] = {
    host.id: host
    for host in (
        Host(
            id="claude-desktop",
            title="Claude Desktop",
            fmt="json",
            scopes={"user": _at(lambda c: c.app_data() / "Claude" / "claude_desktop_config.json", *_MCP)},
            entry=_plain_entry,
            server_of=_command_server,
            check="restart Claude Desktop; Settings > Developer lists the server and its state",
            docs="https://modelcontextprotocol.io/quickstart/user",
        ),
        Host(
            id="claude-code",
            title="Claude Code",
            fmt="json",
            scopes={
                "user": _at(_claude_json, "mcpServers"),
                "project": _at(lambda c: c.project / ".mcp.json", "mcpServers"),
                "local": _claude_code_local,
            },
            entry=_stdio_entry,
            server_of=_claude_code_server,
            check="claude mcp list   (and /mcp inside a session)",
            docs="https://code.claude.com/docs/en/mcp",
            owned=("type", "command", "args", "env", "url", "headersHelper", "headers"),
        ),
        Host(
            id="cursor",
            title="Cursor",
            fmt="json",
            scopes={
                "user": _at(lambda c: c.home / ".cursor" / "mcp.json", "mcpServers"),
                "project": _at(lambda c: c.project / ".cursor" / "mcp.json", "mcpServers"),
            },
            entry=_plain_entry,
            server_of=_command_server,
            check="Cursor Settings > MCP (Tools & Integrations) shows the server with a green dot",
            docs="https://cursor.com/docs/context/mcp",
        ),
        Host(
            id="vscode",
            title="VS Code",
            fmt="jsonc+commas",
            scopes={
                "user": _at(lambda c: c.app_data() / "Code" / "User" / "mcp.json", "servers"),
                "project": _at(lambda c: c.project / ".vscode" / "mcp.json", "servers"),
            },
            entry=_stdio_entry,
            server_of=_command_server,
            check="Command Palette > MCP: List Servers (Start / Show Output)",
            docs="https://code.visualstudio.com/docs/copilot/reference/mcp-configuration",
        ),
        Host(
            id="windsurf",
            title="Windsurf",
            fmt="json",
            scopes={"user": _at(lambda c: c.home / ".codeium" / "windsurf" / "mcp_config.json", *_MCP)},
            entry=_plain_entry,
            server_of=_command_server,
            check="Windsurf Settings > Cascade > MCP servers: refresh, the server lists its tools",
            docs="https://docs.windsurf.com/windsurf/cascade/mcp",
        ),
        Host(
            id="codex",
            title="Codex CLI",
            fmt="toml",
            scopes={
                "user": _at(lambda c: _codex_home(c) / "config.toml", "mcp_servers"),
                "project": _at(lambda c: c.project / ".codex" / "config.toml", "mcp_servers"),
            },
            entry=_plain_entry,
            server_of=_command_server,
            check="codex mcp list   (and /mcp inside a session)",
            docs="https://developers.openai.com/codex/mcp",
        ),
        Host(
            id="gemini",
            title="Gemini CLI",
            fmt="jsonc",
            scopes={
                "user": _at(lambda c: _gemini_home(c) / ".gemini" / "settings.json", "mcpServers"),
                "project": _at(lambda c: c.project / ".gemini" / "settings.json", "mcpServers"),
            },
            entry=_plain_entry,
            server_of=_command_server,
            check="gemini mcp list   (stdio servers show Connected only in a trusted folder)",
            docs="https://github.com/google-gemini/gemini-cli/blob/main/docs/tools/mcp-server.md",
        ),
        Host(
            id="goose",
            title="Goose",
            fmt="yaml",
            scopes={"user": _at(lambda c: _goose_dir(c) / "config.yaml", "extensions")},
            entry=_goose_entry,
            server_of=_goose_server,
            check="goose info -v lists the extension; goose session starts it (and says if it cannot)",
            docs="https://block.github.io/goose/docs/guides/config-files",
            key=_goose_key,
            owned=("type", "cmd", "args", "envs", "env_keys"),
        ),
        Host(
            id="zed",
            title="Zed",
            fmt="jsonc+commas",
            scopes={
                "user": _at(lambda c: _zed_dir(c) / "settings.json", "context_servers"),
                "project": _at(lambda c: c.project / ".zed" / "settings.json", "context_servers"),
            },
            entry=_plain_entry,
            server_of=_command_server,
            check="Agent Panel > Settings: the server has a green dot",
            docs="https://zed.dev/docs/ai/mcp",
        ),
        Host(
            id="ncp",
            title="NCP",
            fmt="json",
            scopes={
                "user": lambda c: Location(
                    c.home / ".ncp" / "profiles" / f"{c.ncp_profile}.json", ("mcpServers",)
                ),
                "project": lambda c: Location(
                    c.project / ".ncp" / "profiles" / f"{c.ncp_profile}.json", ("mcpServers",)
                ),
            },
            entry=_plain_entry,
            server_of=_command_server,
            check="ncp list   (ncp --profile NAME list for another profile)",
            docs="https://github.com/portel-dev/ncp",
            new_document=_ncp_profile,
        ),
    )
}
