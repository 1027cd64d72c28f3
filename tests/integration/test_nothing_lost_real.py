"""Nothing loses a grant, against the real rotation-strict oidc-provider (issue 9, items 1-4 and 8).

The authorization server rotates refresh tokens strictly: presenting a spent one is a replay, and it revokes
the whole grant. Its token endpoint is broken on purpose in the ways that used to lose grants — answers that
arrive late (the token rotated at once, the answer in flight for a while), answers lost with the daemon,
503s, dropped connections, stalls — while the broker is stopped, reloaded and killed. Every test asks the
server itself, through its admin counters, whether it saw a replay, revoked a grant or served a login.

No test asserts a duration tighter than the machine allows: recovery figures are measured by
bench/bench_recovery.py and written in docs/troubleshooting.md. The bounds here only catch "much slower than
designed" (JOIN_WAIT is 2 s, ON_DEMAND_RETRY 1 s; the bounds are several times that).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import ncp_client
from tests.harness import Stack, StackFactory, oauth_entry, sleep_past, wait_until

pytestmark = pytest.mark.integration

TTL = 3  # access-token lifetime, seconds: a refresh every 2 s
LATE = 1.5  # how long a late answer is held: the rotated refresh token is in flight that long
# What a client may see while the daemon restarts under it; never needs_login (a lost grant).
RESTART_ERRORS = {"not_running", "stopping", "timeout", "connect_failed", "protocol_error", "as_unreachable"}


def assert_no_grant_lost(stack: Stack, *, authorizations: int = 1) -> None:
    """The server's own word: no replay, no revoked grant, and only the logins the test made."""
    stats = stack.oidc.stats()
    events = stack.oidc.events()[-30:]
    assert stats["replay_detected"] == 0, events
    assert stats["grants_revoked"] == 0, events
    assert stats["authorizations"] == authorizations, events


def token(stack: Stack, name: str | None = None, timeout: float = 5.0) -> str:
    return ncp_client.get_token(name or stack.name, socket_path=stack.env.socket, timeout=timeout)


@contextmanager
def callers(stack: Stack, names: tuple[str, ...], per_name: int = 2) -> Iterator[dict[str, Any]]:
    """Threads asking for tokens in a loop while the body runs; answers and error codes are counted."""
    stop = threading.Event()
    seen: dict[str, Any] = {"tokens": 0, "errors": {}}
    lock = threading.Lock()

    def ask(name: str) -> None:
        while not stop.is_set():
            try:
                token(stack, name)
                with lock:
                    seen["tokens"] += 1
            except ncp_client.BrokerError as exc:
                with lock:
                    seen["errors"][exc.code] = seen["errors"].get(exc.code, 0) + 1
                time.sleep(0.05)
            time.sleep(0.02)

    threads = [threading.Thread(target=ask, args=(n,), daemon=True) for n in names for _ in range(per_name)]
    for t in threads:
        t.start()
    try:
        yield seen
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)


def wait_refreshing(stack: Stack, timeout: float = 10.0) -> None:
    """Until a refresh is out (the token endpoint holds its answer)."""
    stack.wait_for_status("a refresh in flight", lambda s: s["state"] == "refreshing", timeout)


def stop_with_the_cli(stack: Stack) -> None:
    """``ncp-broker stop``: it returns once the daemon has exited, and says it stopped."""
    done = stack.env.run("ncp-broker", "stop", timeout=90)
    assert done.returncode == 0, done.stderr
    # Returned after the exit, not before (a moment for the kernel to make the exit visible to waitpid).
    assert stack.daemon.proc.wait(0.5) == 0
    assert "stopped" in done.stdout


def test_stops_during_late_answers_lose_nothing(stack: StackFactory) -> None:
    """Item 1: `ncp-broker stop` while a refresh's answer is held 1.5 s at the server (the refresh token
    already rotated there), and at other moments, with callers asking throughout: each stop waits for the
    answer and saves it, so the next daemon refreshes with the new token — no replay, no revoked grant, no
    second login."""
    s = stack(ttl=TTL, json_response=True)
    s.oidc.set_token_endpoint("late", seconds=LATE, grant_types=["refresh_token"])
    with callers(s, (s.name,)) as seen:
        for i in range(6):
            if i % 2 == 0:
                wait_refreshing(s)  # stop with an answer in flight
            else:
                time.sleep(0.7 * i)
            stop_with_the_cli(s)
            s.start()
    token(s)
    assert_no_grant_lost(s)
    assert s.oidc.stats()["token_late"] >= 3  # at least the three stops made while a refresh was out
    assert seen["tokens"] > 0
    assert set(seen["errors"]) <= RESTART_ERRORS, seen["errors"]


def test_sigterm_and_reloads_during_late_answers_lose_nothing(stack: StackFactory) -> None:
    """Item 1: SIGTERM (a service manager's stop) and reloads that change the server's settings, each
    while a late answer is in flight: the reload keeps the one actor (its refresh lands in the grant the
    next refresh uses), the SIGTERM waits for it."""
    s = stack(ttl=TTL, json_response=True)
    s.oidc.set_token_endpoint("late", seconds=LATE, grant_types=["refresh_token"])
    scopes: list[list[str]] = [["mcp:read"], ["mcp:read", "mcp:write"]]
    with callers(s, (s.name,)) as seen:
        for i in range(6):
            wait_refreshing(s)
            if i % 3 == 2:
                s.daemon.proc.send_signal(signal.SIGTERM)
                assert s.daemon.proc.wait(60) == 0, s.daemon.log_text()[-3000:]
                s.start()
            else:
                s.env.write_config({s.name: oauth_entry(s.mcp.url, scopes=scopes[i % 2])})
                os.kill(s.daemon.pid, signal.SIGHUP)
    token(s)
    assert_no_grant_lost(s)
    assert set(seen["errors"]) <= RESTART_ERRORS, seen["errors"]


def test_two_names_for_one_server_share_one_chain(stack: StackFactory) -> None:
    """Item 2: `a` and `b` name one server (one URL with a trailing slash, as NCP profiles do): callers
    of both across many expiries ride one refresh chain — about one refresh per refresh point, no replay,
    one login for both."""
    s = stack(ttl=TTL, json_response=True, start=False)
    url = s.mcp.url
    s.env.write_config({"a": oauth_entry(url), "b": oauth_entry(url + "/")})
    s.start()
    login = s.env.run("ncp-broker", "login", "b", extra_env=dict(s.browser_env()), timeout=120)
    assert login.returncode == 0, login.stderr
    assert "one grant with a" in login.stdout
    started = time.monotonic()
    s.oidc.reset_stats()
    with callers(s, ("a", "b"), per_name=3) as seen:
        time.sleep(15)
    elapsed = time.monotonic() - started
    stats = s.oidc.stats()
    assert stats["replay_detected"] == 0
    assert stats["grants_revoked"] == 0
    assert stats["authorizations"] == 0  # no login after the first
    refreshes = stats["token_success"].get("refresh_token", 0)
    assert refreshes <= elapsed / (TTL * 2 / 3) + 2  # one chain; two would be twice this
    assert not seen["errors"], seen["errors"]
    listing = s.env.run("ncp-broker", "list").stdout
    assert "same grant as b" in listing
    assert "same grant as a" in listing
    status = s.env.status()["servers"]
    assert {e["name"]: e["aliases"] for e in status} == {"a": ["b"], "b": ["a"]}


def test_two_names_that_disagree_are_refused_and_say_why(stack: StackFactory) -> None:
    """Item 2: entries for one server with different scopes are both refused — ncp-token and status name
    both entries and the differing key — and a third server keeps working."""
    s = stack(ttl=3600, json_response=True, start=False)
    url = s.mcp.url
    key_server = {
        "url": "http://127.0.0.1:9/other",
        "auth": {"type": "bearer", "token": "key-of-c", "allowInsecureLoopback": True},
    }
    s.env.write_config(
        {"a": oauth_entry(url, scopes=["mcp:read"]), "b": oauth_entry(url + "/"), "c": key_server}
    )
    s.start()
    for name in ("a", "b"):
        done = s.env.run("ncp-token", name)
        assert done.returncode == 1
        assert "a and b name the same server" in done.stderr
        assert "auth.oauth21.scopes" in done.stderr
        assert "ncp-broker reload" in done.stderr
    assert s.env.run("ncp-token", "c").stdout == "key-of-c\n"
    (entry,) = s.env.status("a")["servers"]
    assert entry["state"] == "config_conflict"


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("503", {"retry_after": 1}),
        ("drop", {}),
        ("stall", {"seconds": 60, "then": "drop"}),
    ],
)
def test_recovery_as_soon_as_the_server_answers_again(
    stack: StackFactory, mode: str, options: dict[str, Any]
) -> None:
    """Item 3: the token endpoint fails (503s, dropped connections, a stall) until the token has
    expired; callers get as_unreachable. From the moment it answers again, a caller polling every 100 ms
    gets a token within a few seconds (designed: about 1 s; figures in bench/bench_recovery.py), with no
    login and no replay."""
    s = stack(ttl=TTL, json_response=True)
    s.oidc.set_token_endpoint(mode, grant_types=["refresh_token"], **options)
    expires_at = float(s.quick_status()["expires_at"])
    sleep_past(expires_at, margin=1.0)
    with pytest.raises(ncp_client.AuthServerUnreachable):
        token(s)
    back = time.monotonic()
    s.oidc.set_token_endpoint("ok")

    def recovered() -> bool:
        try:
            token(s)
        except ncp_client.AuthServerUnreachable:
            return False
        return True

    wait_until(recovered, 10.0, interval=0.1, message="a token after the outage")
    recovery = time.monotonic() - back
    print(f"recovery after {mode}: {recovery:.2f} s")
    assert recovery < 6.0
    assert_no_grant_lost(s)


def test_kill_9_during_a_late_answer_is_named_and_says_what_to_run(stack: StackFactory) -> None:
    """Item 4: `kill -9` after the server rotated the refresh token and before its answer arrived loses
    the grant, as for any client of a strict-rotation server. The next daemon presents the token once;
    the server ends the grant; needs_login and status say the daemon was stopped during a refresh after
    the server had rotated the token, and name the login command."""
    s = stack(ttl=TTL, json_response=True)
    s.oidc.set_token_endpoint("late", seconds=10, grant_types=["refresh_token"])
    wait_refreshing(s)
    wait_until(lambda: s.oidc.stats()["token_late"] >= 1, 10, message="the server held a rotated answer")
    s.kill()
    s.oidc.set_token_endpoint("ok")
    record = json.loads(next(s.env.data.glob("*.json")).read_text())
    assert record["refresh_sent"] is not None  # the mark written before the refresh left
    s.start()

    def refused() -> subprocess.CompletedProcess[str] | None:
        done = s.env.run("ncp-token", s.name)
        return done if done.returncode == 5 else None

    done = wait_until(refused, 20, message="needs_login after the presented token was refused")
    assert "the daemon was stopped during a refresh" in done.stderr
    assert f"ncp-broker login {s.name}" in done.stderr
    assert s.oidc.stats()["replay_detected"] == 1  # presented once, no more
    status = s.status()
    assert status["state"] == "needs_login"
    assert "stopped during a refresh" in status["last_error"]
    s.log_in()  # and a login is all it takes
    assert token(s)


def test_a_start_while_stopping_waits_and_says_so(stack: StackFactory) -> None:
    """Item 1: `ncp-broker start` while the previous daemon is finishing a late refresh waits for it
    (saying so) instead of failing; the new daemon serves the refreshed grant without a login."""
    s = stack(ttl=TTL, json_response=True)
    s.oidc.set_token_endpoint("late", seconds=4, grant_types=["refresh_token"])
    wait_refreshing(s)
    s.daemon.proc.send_signal(signal.SIGTERM)
    wait_until(
        lambda: ncp_client.call({"op": "hello"}, socket_path=s.env.socket).get("stopping"),
        5,
        message="the daemon says it is stopping",
    )
    started = s.env.run("ncp-broker", "start", timeout=120)
    new_pid = None
    try:
        assert started.returncode == 0, started.stderr
        assert "waiting for the previous daemon" in started.stdout
        assert "started" in started.stdout
        assert s.daemon.proc.wait(30) == 0
        hello = ncp_client.call({"op": "hello"}, socket_path=s.env.socket)
        new_pid = int(hello["pid"])
        assert new_pid != s.daemon.pid
        s.oidc.set_token_endpoint("ok")
        assert token(s)
        assert_no_grant_lost(s)
    finally:
        if new_pid is not None:
            os.kill(new_pid, signal.SIGTERM)
            wait_until(lambda: not _alive(new_pid), 60, message="the second daemon to stop")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
