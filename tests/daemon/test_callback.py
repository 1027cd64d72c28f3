"""The login's user-facing edges: the loopback callback listener (a real socket on 127.0.0.1, requests
made with httpx; A4, A6) and the browser opener (A7)."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from brokerd.browser import open_browser
from brokerd.callback import (
    LOGIN_TIMEOUT,
    CallbackHub,
    CallbackListener,
    CallbackListenerError,
    LoginTimeoutError,
    PortInUseError,
    open_callback_listener,
)
from brokerd.oauth import PolicyError, UrlPolicy

ISSUER = "http://127.0.0.1:1"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
        yield client


class Waiter:
    """A login waiting on the listener in the background; ``result`` or ``error`` once it is done."""

    def __init__(self) -> None:
        self.result: Mapping[str, str] | None = None
        self.error: Exception | None = None
        self.done = trio.Event()

    async def run(self, listener: CallbackListener, state: str, issuer: str | None) -> None:
        try:
            self.result = await listener.expect(state, issuer=issuer)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            self.error = exc
        finally:
            self.done.set()


async def _expect(
    nursery: trio.Nursery, listener: CallbackListener, state: str, issuer: str | None = None
) -> Waiter:
    waiter = Waiter()
    before = listener.pending
    nursery.start_soon(waiter.run, listener, state, issuer)
    await trio.testing.wait_all_tasks_blocked()
    assert listener.pending == before + 1
    return waiter


def _assert_safe_page(response: httpx.Response) -> None:
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == "default-src 'none'"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "<script" not in response.text.lower()


async def test_success_page_and_delivery(http: httpx.AsyncClient, nursery: trio.Nursery) -> None:
    """The callback for a pending state is delivered once; the browser sees a plain success page."""
    async with open_callback_listener() as listener:
        assert listener.redirect_uri == f"http://127.0.0.1:{listener.port}/callback"
        waiter = await _expect(nursery, listener, "state-abc")
        response = await http.get(
            listener.redirect_uri, params={"code": "C0DE", "state": "state-abc", "iss": ISSUER}
        )
        await waiter.done.wait()
    assert response.status_code == 200
    _assert_safe_page(response)
    assert "received the authorization" in response.text
    assert "C0DE" not in response.text
    assert waiter.result == {"code": "C0DE", "state": "state-abc", "iss": ISSUER}


async def test_unknown_missing_and_replayed_state(http: httpx.AsyncClient, nursery: trio.Nursery) -> None:
    """Unknown, missing or already-used state: a 400 'stale or unknown' page, delivered to no one."""
    async with open_callback_listener() as listener:
        waiter = await _expect(nursery, listener, "right")
        wrong = await http.get(listener.redirect_uri, params={"code": "C", "state": "wrong"})
        missing = await http.get(listener.redirect_uri, params={"code": "C"})
        assert not waiter.done.is_set()
        assert listener.pending == 1
        ok = await http.get(listener.redirect_uri, params={"code": "C", "state": "right"})
        replayed = await http.get(listener.redirect_uri, params={"code": "C", "state": "right"})
        await waiter.done.wait()
    for response in (wrong, missing, replayed):
        assert response.status_code == 400
        _assert_safe_page(response)
        assert "stale or unknown" in response.text
    assert ok.status_code == 200
    assert waiter.result == {"code": "C", "state": "right"}


async def test_two_pending_logins_on_one_listener(http: httpx.AsyncClient, nursery: trio.Nursery) -> None:
    """One listener serves two logins; each gets the callback with its own state."""
    async with open_callback_listener() as listener:
        first = await _expect(nursery, listener, "state-one")
        second = await _expect(nursery, listener, "state-two")
        assert listener.pending == 2
        await http.get(listener.redirect_uri, params={"code": "c2", "state": "state-two"})
        await second.done.wait()
        assert not first.done.is_set()
        await http.get(listener.redirect_uri, params={"code": "c1", "state": "state-one"})
        await first.done.wait()
    assert first.result == {"code": "c1", "state": "state-one"}
    assert second.result == {"code": "c2", "state": "state-two"}


async def test_same_state_twice_is_refused(nursery: trio.Nursery) -> None:
    """Two logins cannot wait for the same state."""
    async with open_callback_listener() as listener:
        await _expect(nursery, listener, "dup")
        with pytest.raises(ValueError, match="already waiting"):
            await listener.expect("dup")
        with pytest.raises(ValueError, match="empty"):
            await listener.expect("")


async def test_busy_port_names_port_and_config_key() -> None:
    """A busy port is a PortInUseError naming the port and auth.oauth21.callbackPort."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortInUseError) as refused:
            async with open_callback_listener(port):
                raise AssertionError("should not listen")
    assert refused.value.port == port
    assert str(refused.value).startswith(f"cannot listen for the login callback on 127.0.0.1 port {port}: ")
    assert refused.value.hint is not None
    assert f"stop the program using port {port}" in refused.value.hint
    assert "auth.oauth21.callbackPort" in refused.value.hint
    assert str(port) in refused.value.hint


async def test_timeout(autojump_clock: trio.testing.MockClock) -> None:
    """With no callback, expect gives up after the 5-minute login timeout."""
    async with open_callback_listener() as listener:
        start = trio.current_time()
        with pytest.raises(LoginTimeoutError, match="within 5 minutes") as timed_out:
            await listener.expect("never")
        assert trio.current_time() - start == pytest.approx(LOGIN_TIMEOUT)
        assert listener.pending == 0
        with pytest.raises(LoginTimeoutError, match="within 2 seconds"):
            await listener.expect("short", timeout=2)
    assert timed_out.value.hint == "start the login again and finish it in the browser"


async def test_error_description_is_escaped(http: httpx.AsyncClient, nursery: trio.Nursery) -> None:
    """An attacker-controlled error_description is shown as text, escaped, never as markup."""
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>\x1b[31m'
    async with open_callback_listener() as listener:
        waiter = await _expect(nursery, listener, "s1")
        response = await http.get(
            listener.redirect_uri,
            params={"error": "access_denied", "error_description": evil, "state": "s1", "iss": ISSUER},
        )
        await waiter.done.wait()
    assert response.status_code == 200
    _assert_safe_page(response)
    assert "Login failed" in response.text
    assert "access_denied" in response.text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img" in response.text
    assert "<img" not in response.text
    assert "\x1b" not in response.text
    assert waiter.result is not None
    assert waiter.result["error_description"] == evil  # the flow gets the raw value and cleans it itself


async def test_mismatched_issuer_shows_no_error_text(http: httpx.AsyncClient, nursery: trio.Nursery) -> None:
    """A callback whose iss is not the expected issuer gets a neutral page (A5), and is still delivered."""
    async with open_callback_listener() as listener:
        waiter = await _expect(nursery, listener, "s2", issuer=ISSUER)
        response = await http.get(
            listener.redirect_uri,
            params={
                "error": "access_denied",
                "error_description": "call 555-EVIL",
                "state": "s2",
                "iss": "https://evil.example",
            },
        )
        await waiter.done.wait()
    assert response.status_code == 400
    assert "EVIL" not in response.text
    assert "another authorization server" in response.text
    assert waiter.result is not None
    assert waiter.result["iss"] == "https://evil.example"


async def test_only_get_callback_is_served(http: httpx.AsyncClient, nursery: trio.Nursery) -> None:
    """Other paths and methods are 404 and deliver nothing; repeated parameters are refused."""
    async with open_callback_listener() as listener:
        waiter = await _expect(nursery, listener, "s3")
        base = f"http://127.0.0.1:{listener.port}"
        other = await http.get(f"{base}/favicon.ico")
        posted = await http.post(listener.redirect_uri, params={"code": "c", "state": "s3"})
        head = await http.head(listener.redirect_uri, params={"code": "c", "state": "s3"})
        repeated = await http.get(f"{listener.redirect_uri}?code=a&code=b&state=s3")
        assert not waiter.done.is_set()
    for response in (other, posted):
        assert response.status_code == 404
        _assert_safe_page(response)
    assert head.status_code == 404
    assert repeated.status_code == 400
    assert "malformed" in repeated.text
    await waiter.done.wait()
    assert isinstance(waiter.error, CallbackListenerError)  # the listener closed under it


async def test_oversized_and_garbage_requests(http: httpx.AsyncClient, nursery: trio.Nursery) -> None:
    """A request head over the limit or not HTTP gets a 400 and the listener keeps serving."""
    async with open_callback_listener() as listener:
        stream = await trio.open_tcp_stream("127.0.0.1", listener.port)
        await stream.send_all(b"GET /callback?state=" + b"x" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        answer = await _read_all(stream)
        assert answer.startswith(b"HTTP/1.1 400 ")
        stream = await trio.open_tcp_stream("127.0.0.1", listener.port)
        await stream.send_all(b"\x16\x03\x01 not http\r\n\r\n")
        assert (await _read_all(stream)).startswith(b"HTTP/1.1 400 ")
        waiter = await _expect(nursery, listener, "s4")
        ok = await http.get(listener.redirect_uri, params={"code": "c", "state": "s4"})
        await waiter.done.wait()
    assert ok.status_code == 200


async def test_idle_connection_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    """A connection that never completes its request is closed after the per-connection deadline."""
    async with open_callback_listener() as listener:
        stream = await trio.open_tcp_stream("127.0.0.1", listener.port)
        await stream.send_all(b"GET /callback?state=s HTTP/1.1\r\n")
        start = trio.current_time()
        assert await _read_all(stream) == b""
        assert trio.current_time() - start == pytest.approx(10.0)


async def _read_all(stream: trio.SocketStream) -> bytes:
    data = b""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()
    return data


async def test_hub_shares_and_closes_when_nothing_pending(http: httpx.AsyncClient) -> None:
    """The hub opens one listener per port on demand, shares it, and closes it with its last login."""
    async with trio.open_nursery() as nursery:
        hub = CallbackHub(nursery)
        assert not hub.open_ports
        async with hub.listener() as first:
            async with hub.listener() as second:
                assert second is first
                assert hub.open_ports == (first.port,)
                waiter = await _expect(nursery, second, "hub-state")
                await http.get(first.redirect_uri, params={"code": "c", "state": "hub-state"})
                await waiter.done.wait()
                assert waiter.result == {"code": "c", "state": "hub-state"}
            # still held by the first login
            answer = await http.get(first.redirect_uri, params={"state": "x"})
            assert answer.status_code == 400
        assert list(hub.open_ports) == []
        with pytest.raises(httpx.ConnectError):
            await http.get(first.redirect_uri, params={"state": "x"})
        async with hub.listener() as again:
            assert again is not first
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            with pytest.raises(PortInUseError):
                async with hub.listener(busy.getsockname()[1]):
                    raise AssertionError("should not listen")
        assert list(hub.open_ports) == []


async def test_listener_closed_after_the_block(http: httpx.AsyncClient) -> None:
    """Nothing listens on the port once the login's block has ended; expect on it then fails."""
    async with open_callback_listener() as listener:
        pass
    with pytest.raises(httpx.ConnectError):
        await http.get(listener.redirect_uri)
    with pytest.raises(CallbackListenerError, match="closed"):
        await listener.expect("late")


# ---- the browser opener (brokerd.browser), the other half of the login's user-facing edge -----------


def _fake_browser(tmp_path: Path, body: str = "") -> tuple[Path, Path]:
    record = tmp_path / "argv.txt"
    program = tmp_path / "fake-browser"
    program.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\n{body}')
    program.chmod(0o755)
    return program, record


async def test_browser_opens_with_the_url_as_one_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$BROWSER (read at call time) gets the URL as one argument; no shell ever sees it."""
    program, record = _fake_browser(tmp_path)
    monkeypatch.setenv("BROWSER", str(program))
    url = "https://as.example/authorize?a=1&b=$(touch%20x);echo`id`"
    assert await open_browser(url, policy=UrlPolicy()) is True
    assert record.read_text() == url + "\n"


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "http://as.example/authorize",
        "http://127.0.0.1:1/authorize",  # loopback http needs the policy's consent
        "https://10.0.0.1/authorize",
    ],
)
async def test_browser_refuses_urls_the_policy_refuses(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """javascript:, data:, file:, plain http and private addresses are refused before anything runs."""
    program, record = _fake_browser(tmp_path)
    monkeypatch.setenv("BROWSER", str(program))
    with pytest.raises(PolicyError):
        await open_browser(url, policy=UrlPolicy())
    assert not record.exists()


async def test_browser_loopback_http_when_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """http to a loopback host is opened when the policy allows insecure loopback."""
    program, record = _fake_browser(tmp_path)
    monkeypatch.setenv("BROWSER", str(program))
    assert await open_browser("http://127.0.0.1:1/authorize", policy=UrlPolicy(allow_insecure_loopback=True))
    assert record.exists()


async def test_browser_headless_failing_or_slow_is_false(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No display and no $BROWSER, a failing program, or one that does not return: False (print the URL)."""
    url = "https://as.example/authorize"
    for name in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    if sys.platform.startswith("linux"):
        assert await open_browser(url, policy=UrlPolicy()) is False
    failing, _ = _fake_browser(tmp_path, "exit 3\n")
    monkeypatch.setenv("BROWSER", str(failing))
    assert await open_browser(url, policy=UrlPolicy()) is False
    monkeypatch.setenv("BROWSER", str(tmp_path / "does-not-exist"))
    assert await open_browser(url, policy=UrlPolicy()) is False
    slow = tmp_path / "slow"
    slow.mkdir()
    sleeper, _ = _fake_browser(slow, "sleep 1\n")
    monkeypatch.setenv("BROWSER", str(sleeper))
    assert await open_browser(url, policy=UrlPolicy(), timeout=0.1) is False
