"""The real daemon on a real socket: lifecycle, modes, bad input, single instance, crash recovery."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import ncp_client
from tests.harness import Daemon, Env, start_daemon, wait_until

pytestmark = pytest.mark.integration

KEY = "key-4f1c9a7e-never-print-me"


def bearer(url: str = "https://mcp.example.com/mcp", token: str | None = None) -> dict[str, object]:
    auth: dict[str, object] = {"type": "bearer"}
    if token is not None:
        auth["token"] = token
    return {"url": url, "auth": auth}


def raw_exchange(sock: Path, data: bytes, *, read: bool = True, timeout: float = 5) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(sock))
        s.sendall(data)
        if not read:
            return b""
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf
    finally:
        s.close()


def test_start_status_stop_in_the_background(env: Env) -> None:
    """`start` backgrounds the daemon, `status` shows it, `stop` ends it and removes the socket."""
    env.write_config({"neus": bearer(token=KEY), "fs": {"command": "npx"}})
    started = env.run("ncp-broker", "start")
    assert started.returncode == 0, started.stderr
    assert "started" in started.stdout
    try:
        status = env.run("ncp-broker", "status")
        assert status.returncode == 0, status.stderr
        assert str(env.socket) in status.stdout
        assert "neus" in status.stdout
        assert "not_brokered" in status.stdout
        as_json = json.loads(env.run("ncp-broker", "status", "--json").stdout)
        assert as_json["running"] is True
        assert {s["name"]: s["state"] for s in as_json["servers"]} == {"neus": "valid", "fs": "not_brokered"}
        # headless Linux: no usable keyring, so "auto" falls back to files and says why
        assert as_json["daemon"]["store"].startswith("file (auto: ")
        again = env.run("ncp-broker", "start")
        assert again.returncode == 0
        assert "already running" in again.stdout
    finally:
        stopped = env.run("ncp-broker", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not env.socket.exists()
    assert env.run("ncp-broker", "status").returncode == 3
    log = (env.state / "broker.log").read_text()
    assert KEY not in log
    assert stat.S_IMODE((env.state / "broker.log").stat().st_mode) == 0o600


def test_socket_and_directory_modes(env: Env, daemon: Daemon) -> None:
    """The socket directory is 0700 and ours; the socket is 0600."""
    d = env.socket.parent.stat()
    assert stat.S_IMODE(d.st_mode) == 0o700
    assert d.st_uid == os.getuid()
    assert stat.S_ISSOCK(env.socket.stat().st_mode)
    assert stat.S_IMODE(env.socket.stat().st_mode) == 0o600


def test_loose_socket_directory_is_refused_not_chmodded(env: Env) -> None:
    """An existing socket directory open to others is refused with the chmod to run, and left alone."""
    env.write_config({})
    env.socket.parent.mkdir(mode=0o755)
    env.socket.parent.chmod(0o755)
    d = start_daemon(env)
    assert d.proc.wait(10) == 1
    assert f"run: chmod 700 {env.socket.parent}" in d.log_text()
    assert stat.S_IMODE(env.socket.parent.stat().st_mode) == 0o755


def test_symlinked_socket_directory_is_refused(env: Env, tmp_path: Path) -> None:
    """A socket directory that is a symlink is refused with a clear reason."""
    env.write_config({})
    real = env.root / "elsewhere"
    real.mkdir(mode=0o700)
    env.socket.parent.symlink_to(real)
    d = start_daemon(env)
    assert d.proc.wait(10) == 1
    assert "symbolic link" in d.log_text()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to create a directory owned by another user")
def test_socket_directory_of_another_user_is_refused(env: Env) -> None:
    """A socket directory owned by someone else is refused."""
    env.write_config({})
    env.socket.parent.mkdir(mode=0o700)
    os.chown(env.socket.parent, 65534, 65534)
    d = start_daemon(env)
    assert d.proc.wait(10) == 1
    assert "belongs to uid 65534" in d.log_text()


def test_ncp_token_outputs_and_exit_codes(env: Env, daemon: Daemon) -> None:
    """ncp-token prints the token, a header, or header JSON; each failure has its own exit status."""
    env.write_config(
        {
            "neus": bearer(token=KEY),
            "nokey": bearer("https://n.example/mcp"),
            "fs": {"command": "npx"},
            "oauthy": {"url": "https://o.example/mcp", "auth": {"type": "oauth", "oauth21": {}}},
        }
    )
    assert env.run("ncp-broker", "reload").returncode == 0
    out = env.run("ncp-token", "neus")
    assert (out.returncode, out.stdout) == (0, KEY + "\n")
    assert env.run("ncp-token", "neus", "--header").stdout == f"Authorization: Bearer {KEY}\n"
    assert json.loads(env.run("ncp-token", "neus", "--headers-json").stdout) == {
        "Authorization": f"Bearer {KEY}"
    }

    unknown = env.run("ncp-token", "nope")
    assert unknown.returncode == 4
    assert "ncp-broker add nope" in unknown.stderr
    needs = env.run("ncp-token", "nokey")
    assert needs.returncode == 5
    assert "ncp-broker add nokey https://n.example/mcp --access-key -" in needs.stderr
    assert env.run("ncp-token", "oauthy").returncode == 5
    assert env.run("ncp-token", "fs").returncode == 1
    assert env.run("ncp-token").returncode == 2
    assert env.run("ncp-token", "neus", "--min-ttl", "soon").returncode == 2
    for result in (unknown, needs):
        assert KEY not in result.stderr + result.stdout


def test_ncp_token_reads_server_from_claude_code_env(env: Env, daemon: Daemon) -> None:
    """Without an argument, ncp-token takes the server name, or its URL, from Claude Code's variables."""
    env.write_config({"neus": bearer("https://MCP.example.com/mcp", token=KEY)})
    env.run("ncp-broker", "reload")
    by_name = env.run("ncp-token", "--headers-json", extra_env={"CLAUDE_CODE_MCP_SERVER_NAME": "neus"})
    assert json.loads(by_name.stdout) == {"Authorization": f"Bearer {KEY}"}
    by_url = env.run(
        "ncp-token",
        "--headers-json",
        # the daemon's rule for "the same server": host case, the default port, a trailing slash
        extra_env={"CLAUDE_CODE_MCP_SERVER_URL": "https://mcp.example.com:443/mcp/"},
    )
    assert json.loads(by_url.stdout) == {"Authorization": f"Bearer {KEY}"}, by_url.stderr
    unmatched = env.run("ncp-token", extra_env={"CLAUDE_CODE_MCP_SERVER_URL": "https://other.example/mcp"})
    assert unmatched.returncode == 4


def test_ncp_token_when_broker_not_running(env: Env) -> None:
    """No daemon: exit 3 and the start command."""
    out = env.run("ncp-token", "neus")
    assert out.returncode == 3
    assert "ncp-broker start" in out.stderr


def test_ncp_token_protocol_error_from_a_lying_peer(env: Env) -> None:
    """Something on the socket that answers garbage is a protocol error (exit 7), not a crash."""
    env.socket.parent.mkdir(mode=0o700)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(env.socket))
    srv.listen(1)

    def answer_garbage() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(1000)
            conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n\n")

    t = threading.Thread(target=answer_garbage)
    t.start()
    try:
        out = env.run("ncp-token", "neus")
    finally:
        t.join(5)
        srv.close()
    assert out.returncode == 7
    assert "not JSON" in out.stderr


def test_add_reads_access_key_from_stdin_never_argv(env: Env, daemon: Daemon) -> None:
    """`add --access-key -` reads stdin; a key on the command line is refused; the key works at once."""
    refused = env.run("ncp-broker", "add", "neus", "https://mcp.neus.network/mcp", "--access-key", KEY)
    assert refused.returncode == 2
    assert "never taken from the command line" in refused.stderr
    assert KEY not in refused.stderr
    added = env.run(
        "ncp-broker", "add", "neus", "https://mcp.neus.network/mcp", "--access-key", "-", input=KEY + "\n"
    )
    assert added.returncode == 0, added.stderr
    assert env.run("ncp-token", "neus").stdout == KEY + "\n"
    assert KEY not in env.config.read_text()
    raw = json.loads(env.config.read_text())
    assert raw["mcpServers"]["neus"] == {"url": "https://mcp.neus.network/mcp", "auth": {"type": "bearer"}}
    # survives a restart: the key is in the store, not in the daemon's memory only
    daemon.stop()
    d2 = start_daemon(env)
    try:
        assert env.run("ncp-token", "neus").stdout == KEY + "\n"
        assert KEY not in d2.log_text()
    finally:
        d2.stop()


def test_add_without_daemon_stores_key_for_later(env: Env) -> None:
    """`add` works with no daemon running; the next daemon serves the key."""
    added = env.run(
        "ncp-broker",
        "add",
        "neus",
        "https://mcp.neus.network/mcp",
        "--access-key",
        "env:NEUS_KEY",
        extra_env={"NEUS_KEY": KEY},
    )
    assert added.returncode == 0, added.stderr
    d = start_daemon(env)
    try:
        assert env.run("ncp-token", "neus").stdout == KEY + "\n"
    finally:
        d.stop()


def test_remove_deletes_the_entry(env: Env, daemon: Daemon) -> None:
    """`remove` deletes the config entry and the daemon forgets the server."""
    env.write_config({"neus": bearer(token=KEY), "other": bearer("https://o.example/mcp", token="x")})
    env.run("ncp-broker", "reload")
    assert env.run("ncp-broker", "remove", "neus").returncode == 0
    assert env.run("ncp-token", "neus").returncode == 4
    assert env.run("ncp-broker", "remove", "neus").returncode == 4
    assert "other" in json.loads(env.config.read_text())["mcpServers"]


def test_bad_config_at_start_is_refused_with_path(env: Env) -> None:
    """A daemon started on a broken config exits 1 naming the file and the JSON path."""
    env.config.write_text('{"mcpServers": {"a": {"url": "gopher://x"}}}')
    started = env.run("ncp-broker", "start")
    assert started.returncode == 1
    assert str(env.config) in started.stderr
    assert '$.mcpServers["a"].url' in started.stderr


def test_bad_reload_keeps_config_sighup_reloads_good_one(env: Env, daemon: Daemon) -> None:
    """`reload` of a bad file is refused and the old config serves on; SIGHUP applies a good file."""
    env.write_config({"neus": bearer(token=KEY)})
    assert env.run("ncp-broker", "reload").returncode == 0
    env.config.write_text("{ not json")
    bad = env.run("ncp-broker", "reload")
    assert bad.returncode == 1
    assert "reload refused" in bad.stderr
    assert str(env.config) in bad.stderr
    assert env.run("ncp-token", "neus").stdout == KEY + "\n"
    env.write_config({"neus": bearer(token="second-key")})
    os.kill(daemon.pid, signal.SIGHUP)
    wait_until(
        lambda: env.run("ncp-token", "neus").stdout == "second-key\n",  # a bool: the key is not shown
        10,
        message=lambda: f"SIGHUP to apply the new key; daemon log:\n{daemon.log_text()}",
    )


def test_two_daemons_started_at_once_one_wins(env: Env) -> None:
    """Two foreground daemons racing: exactly one serves, the other says it is already running."""
    env.write_config({})
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "brokerd", "start", "--foreground"],
            env=env.vars,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        wait_until(
            lambda: any(p.poll() is not None for p in procs), 15, message="one of the two daemons to give way"
        )
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        _, err = loser.communicate(timeout=5)
        assert loser.returncode == 3
        assert b"already running" in err
        assert f"pid {winner.pid}".encode() in err
        assert env.run("ncp-broker", "status", "--json").returncode == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
            p.communicate(timeout=10)


def test_kill_9_then_start_again(env: Env) -> None:
    """After kill -9 the stale socket and lock do not block the next start."""
    env.write_config({"neus": bearer(token=KEY)})
    first = start_daemon(env)
    os.kill(first.pid, signal.SIGKILL)
    first.proc.wait(5)
    assert env.socket.exists()  # left behind
    second = start_daemon(env)
    try:
        assert second.proc.poll() is None, second.log_text()
        assert env.run("ncp-token", "neus").stdout == KEY + "\n"
        assert "stale socket" in second.log_text()
    finally:
        second.stop()


def test_live_socket_is_never_stolen(env: Env, daemon: Daemon) -> None:
    """A second daemon on the same socket leaves the running one serving."""
    second = start_daemon(env, log_name="second.log")
    assert second.proc.wait(10) == 3
    assert raw_exchange(env.socket, b'{"op":"hello"}\n').startswith(b'{"id":null,"ok":true')


def test_non_socket_at_socket_path_is_not_removed(env: Env) -> None:
    """A regular file where the socket should be is reported, not deleted."""
    env.write_config({})
    env.socket.parent.mkdir(mode=0o700)
    env.socket.write_text("precious")
    d = start_daemon(env)
    assert d.proc.wait(10) == 1
    assert "is not a socket" in d.log_text()
    assert env.socket.read_text() == "precious"


def test_sigterm_stops_cleanly(env: Env, daemon: Daemon) -> None:
    """SIGTERM ends the daemon with status 0 and removes its socket."""
    assert daemon.stop() == 0
    assert not env.socket.exists()
    assert "stopped" in daemon.log_text()


def test_bad_frames_do_not_affect_other_clients(env: Env, daemon: Daemon) -> None:
    """Garbage, oversized, endless and half frames on some connections; a good client is unaffected."""
    env.write_config({"neus": bearer(token=KEY)})
    env.run("ncp-broker", "reload")
    assert b'"bad_request"' in raw_exchange(env.socket, b"\x00\x01garbage\n")
    assert b'"frame_too_large"' in raw_exchange(env.socket, b"x" * (70 * 1024) + b"\n")
    assert b'"frame_too_large"' in raw_exchange(env.socket, b"y" * (200 * 1024))
    half = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    half.connect(str(env.socket))
    half.sendall(b'{"op":"get_to')
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(str(env.socket))
    try:
        for _ in range(3):
            assert env.run("ncp-token", "neus").stdout == KEY + "\n"
    finally:
        half.close()
        idle.close()
    assert daemon.proc.poll() is None


def test_persistent_connection_serves_many_requests(env: Env, daemon: Daemon) -> None:
    """One connection may carry many requests, answered in order."""
    env.write_config({"neus": bearer(token=KEY)})
    env.run("ncp-broker", "reload")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(env.socket))
    with s, s.makefile("rwb") as f:
        for i in range(50):
            f.write(json.dumps({"op": "get_token", "server": "neus", "id": i}).encode() + b"\n")
        f.flush()
        answers = [json.loads(f.readline()) for _ in range(50)]
    assert [a["id"] for a in answers] == list(range(50))
    assert all(a["result"]["token"] == KEY for a in answers)


# Connects, asks for a token, prints what came back; a refused connection prints b''.
FOREIGN_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"op":"get_token","server":"neus"}\\n')
    print(repr(s.recv(65536)))
except (BrokenPipeError, ConnectionResetError):
    print(repr(b''))
"""


def _setpriv(*caps: str) -> list[str]:
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if caps:
        joined = ",".join(f"+{c}" for c in caps)
        cmd += [f"--inh-caps={joined}", f"--ambient-caps={joined}"]
    return cmd


@pytest.mark.skipif(os.getuid() != 0, reason="running a client as another user needs root (setpriv)")
def test_foreign_uid_gets_nothing(env: Env, daemon: Daemon) -> None:
    """Another user cannot reach the socket; one that can (CAP_DAC_OVERRIDE) is refused by SO_PEERCRED."""
    env.write_config({"neus": bearer(token=KEY)})
    env.run("ncp-broker", "reload")
    client = [sys.executable, "-c", FOREIGN_CLIENT, str(env.socket)]
    blocked = subprocess.run(
        [*_setpriv(), *client], capture_output=True, text=True, env=env.vars, timeout=30, check=False
    )
    assert blocked.returncode != 0
    assert "PermissionError" in blocked.stderr  # EACCES on connect, whatever the C library's wording
    through = subprocess.run(
        [*_setpriv("dac_override", "dac_read_search"), *client],
        capture_output=True,
        text=True,
        env=env.vars,
        timeout=30,
        check=False,
    )
    assert through.returncode == 0, through.stderr
    assert through.stdout.strip() == "b''"  # connection closed, nothing sent
    assert KEY not in through.stdout
    assert "refused a connection from uid 65534" in daemon.log_text()


def test_systemd_socket_activation_and_notify(env: Env) -> None:
    """Under systemd the daemon serves the socket passed as fd 3 and reports READY=1 to NOTIFY_SOCKET."""
    env.write_config({"neus": bearer(token=KEY)})
    env.socket.parent.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(env.socket))
    listener.listen(8)
    notify_path = env.root / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(15)
    # as systemd does: the listening socket is fd 3, LISTEN_PID is the daemon's own pid
    script = 'exec 3<&0 0</dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -m brokerd start --foreground'
    proc = subprocess.Popen(
        ["sh", "-c", script, sys.executable],
        stdin=listener.fileno(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**env.vars, "NOTIFY_SOCKET": str(notify_path)},
    )
    listener.close()
    try:
        assert notify.recv(100) == b"READY=1"
        assert env.run("ncp-token", "neus").stdout == KEY + "\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        notify.close()
    assert proc.returncode == 0, err
    assert env.socket.exists()  # systemd owns the socket file; the daemon leaves it alone


def test_no_secret_in_debug_log_status_or_errors(env: Env, daemon: Daemon) -> None:
    """With debug logging, keys sent and served in every way never reach the log, status or an error."""
    env.write_config({"neus": bearer(token=KEY), "other": bearer("https://o.example/mcp")})
    env.run("ncp-broker", "reload")
    second = "second-key-7d9e-never-print-me"
    seen = [
        env.run("ncp-broker", "add", "other", "https://o.example/mcp", "--access-key", "-", input=second),
        env.run("ncp-token", "neus"),
        env.run("ncp-token", "other"),
        env.run("ncp-broker", "status"),
        env.run("ncp-broker", "status", "--json"),
    ]
    answers = [
        raw_exchange(
            env.socket, json.dumps({"op": "token_rejected", "server": "neus", "token": KEY}).encode() + b"\n"
        ),
        raw_exchange(
            env.socket, json.dumps({"op": "token_rejected", "server": "nope", "token": KEY}).encode() + b"\n"
        ),
        raw_exchange(
            env.socket, json.dumps({"op": "get_token", "server": "neus", "x": KEY}).encode() + b"\n"
        ),
        raw_exchange(
            env.socket,
            json.dumps({"op": "set_access_key", "server": "neus", "key": [second]}).encode() + b"\n",
        ),
        raw_exchange(env.socket, ('{"op":"get_token","server":"' + KEY).encode() + b"\n"),
    ]
    assert seen[1].stdout == KEY + "\n"
    assert seen[2].stdout == second + "\n"
    assert json.loads(answers[0])["result"]["token"] == KEY  # a token answer is the one place it belongs
    errors = b"".join(answers[1:]).decode()
    assert errors.count('"ok":false') == 4
    text = daemon.log_text() + "".join(r.stdout + r.stderr for r in seen[3:]) + errors
    assert " DEBUG " in daemon.log_text()  # the daemon really logged at debug level
    assert KEY not in text
    assert second not in text


def test_the_daemon_answers_what_it_can_from_the_accept_loop(env: Env, daemon: Daemon) -> None:
    """The daemon passes its answer-at-once hook to the socket server (the fast path of docs/benchmarks.md),
    and what comes that way is the same answer: a cached access key, hello."""
    env.write_config({"neus": bearer(token=KEY)})
    env.run("ncp-broker", "reload")
    assert "requests answered from the accept loop: on" in daemon.log_text()
    assert env.run("ncp-token", "neus").stdout == KEY + "\n"
    assert ncp_client.call({"op": "hello"}, socket_path=env.socket)["pid"] == daemon.pid
