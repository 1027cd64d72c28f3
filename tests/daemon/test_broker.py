"""Broker.handle: the daemon's answers, independent of sockets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import msgspec
import pytest

from brokerd import config, wire
from brokerd.broker import Broker
from brokerd.secret import Secret, enc_hook
from brokerd.store import FileStore

SERVERS = {
    "inline": {"url": "https://a.example/mcp", "auth": {"type": "bearer", "token": "inline-key-123"}},
    "stored": {"url": "https://b.example/mcp", "auth": {"type": "bearer"}},
    "oauthy": {"url": "https://c.example/mcp", "auth": {"type": "oauth", "oauth21": {}}},
    "stdio": {"command": "npx", "args": ["x"]},
}

_R = TypeVar("_R")


async def ask(broker: Broker, request: wire.Request, kind: type[_R]) -> _R:
    """``broker.handle(request)``, checked to be the answer type ``kind``."""
    result = await broker.handle(request)
    assert isinstance(result, kind), result
    return result


def make_broker(tmp_path: Path, servers: dict[str, object] = SERVERS) -> tuple[Broker, FileStore, Path]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    keys = FileStore(tmp_path / "data")
    broker = Broker(config.load(path), keys, socket_path=tmp_path / "s.sock", clock=lambda: 1000.0)
    return broker, keys, path


def dumps(value: object) -> str:
    return msgspec.json.encode(value, enc_hook=enc_hook).decode()


async def test_inline_key_is_served(tmp_path: Path) -> None:
    """A bearer entry with NCP's inline auth.token serves that key."""
    broker, _, _ = make_broker(tmp_path)
    result = await ask(broker, wire.GetToken(server="inline"), wire.TokenResult)
    assert result.token == Secret("inline-key-123")
    assert result.expires_at is None


async def test_stored_key_missing_needs_login_with_add_command(tmp_path: Path) -> None:
    """A bearer entry without a stored key says so and names the add command."""
    broker, keys, _ = make_broker(tmp_path)
    with pytest.raises(wire.WireError) as err:
        await broker.handle(wire.GetToken(server="stored"))
    assert err.value.code == "needs_login"
    assert err.value.hint == "ncp-broker add stored https://b.example/mcp --access-key -"
    await broker.handle(wire.SetAccessKey(server="stored", key=Secret("k-456")))
    assert await keys.load_access_key("https://b.example/mcp") == Secret("k-456")
    assert (await ask(broker, wire.GetToken(server="stored"), wire.TokenResult)).token == Secret("k-456")


async def test_unknown_server_lists_known_ones(tmp_path: Path) -> None:
    """An unknown name is unknown_server, with the configured names and the add command."""
    broker, _, _ = make_broker(tmp_path)
    with pytest.raises(wire.WireError) as err:
        await broker.handle(wire.GetToken(server="nope"))
    assert err.value.code == "unknown_server"
    assert "inline, oauthy, stdio, stored" in err.value.message
    assert err.value.hint.startswith("ncp-broker add nope URL")


@pytest.mark.parametrize(("name", "code"), [("oauthy", "login_unavailable"), ("stdio", "not_brokered")])
async def test_unservable_entries_answer_clearly(tmp_path: Path, name: str, code: str) -> None:
    """OAuth entries (before login exists) and stdio entries give a stable code, not a crash."""
    broker, _, _ = make_broker(tmp_path)
    with pytest.raises(wire.WireError) as err:
        await broker.handle(wire.GetToken(server=name))
    assert err.value.code == code


async def test_token_rejected_records_rejection_in_status(tmp_path: Path) -> None:
    """A 401 for the current static key is visible in status, with the command to replace the key."""
    broker, _, _ = make_broker(tmp_path)
    await broker.handle(wire.TokenRejected(server="inline", token=Secret("inline-key-123")))
    status = await ask(broker, wire.Status(server="inline"), wire.StatusResult)
    (entry,) = status.servers
    assert entry.state == "rejected"
    assert entry.hint is not None
    assert "--access-key -" in entry.hint


async def test_status_and_list_never_contain_a_key(tmp_path: Path) -> None:
    """Neither status nor list carries any key."""
    broker, _, _ = make_broker(tmp_path)
    await broker.handle(wire.SetAccessKey(server="stored", key=Secret("stored-key-789")))
    text = dumps(await ask(broker, wire.Status(), wire.StatusResult)) + dumps(
        await ask(broker, wire.ListServers(), wire.ListResult)
    )
    assert "inline-key-123" not in text
    assert "stored-key-789" not in text
    assert '"state":"not_brokered"' in text


async def test_bad_reload_keeps_running_config(tmp_path: Path) -> None:
    """A reload of a broken file is refused with its path, and the old servers keep answering."""
    broker, _, path = make_broker(tmp_path)
    path.write_text('{"mcpServers": {"inline": {"url": "ftp://nope"}}}')
    with pytest.raises(wire.WireError) as err:
        await broker.handle(wire.Reload())
    assert err.value.code == "config_error"
    assert str(path) in err.value.message
    assert '$.mcpServers["inline"].url' in err.value.message
    assert (await ask(broker, wire.GetToken(server="inline"), wire.TokenResult)).token == Secret(
        "inline-key-123"
    )


async def test_reload_reports_changes_and_keeps_unchanged_actors(tmp_path: Path) -> None:
    """Reload adds, removes and changes entries and keeps the state of untouched ones."""
    broker, _, path = make_broker(tmp_path)
    kept = broker.actors["stored"]
    servers = dict(SERVERS)
    del servers["stdio"]
    servers["inline"] = {"url": "https://a.example/mcp", "auth": {"type": "bearer", "token": "new"}}
    servers["fresh"] = {"url": "https://d.example/mcp", "auth": {"type": "bearer", "token": "d"}}
    path.write_text(json.dumps({"mcpServers": servers}))
    summary = await ask(broker, wire.Reload(), wire.ReloadResult)
    assert summary == wire.ReloadResult(added=["fresh"], removed=["stdio"], changed=["inline"])
    assert broker.actors["stored"] is kept


async def test_hello_rejects_other_protocol_versions(tmp_path: Path) -> None:
    """A client that speaks another protocol version is told so."""
    broker, _, _ = make_broker(tmp_path)
    with pytest.raises(wire.WireError) as err:
        await broker.handle(wire.Hello(protocol=99))
    assert err.value.code == "unsupported_protocol"
    hello = await ask(broker, wire.Hello(), wire.HelloResult)
    assert hello.protocol == wire.PROTOCOL_VERSION


async def test_set_access_key_refused_for_oauth_servers(tmp_path: Path) -> None:
    """Access keys only go to bearer servers."""
    broker, _, _ = make_broker(tmp_path)
    with pytest.raises(wire.WireError) as err:
        await broker.handle(wire.SetAccessKey(server="oauthy", key=Secret("x")))
    assert err.value.code == "bad_request"


async def test_shutdown_sets_the_event(tmp_path: Path) -> None:
    """The shutdown request asks the daemon to stop."""
    broker, _, _ = make_broker(tmp_path)
    assert (await ask(broker, wire.Shutdown(), wire.ShutdownResult)).stopping is True
    assert broker.shutdown_requested.is_set()
