"""serve() over real Unix sockets: the accept loop, the answer-at-once path, peer checks, the cap."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from brokerd import wire
from brokerd.server import serve

HELLO = b'{"op":"hello"}\n'


class Calls:
    """What the handler and the immediate hook were asked, in order."""

    def __init__(self) -> None:
        self.handled: list[str] = []
        self.immediate: list[str] = []
        self.release = trio.Event()


def _name(req: wire.Request) -> str:
    return req.server if isinstance(req, wire.GetToken) else type(req).__name__


def make_handler(calls: Calls) -> Callable[[wire.Request], Any]:
    async def handler(req: wire.Request) -> Any:
        calls.handled.append(_name(req))
        if isinstance(req, wire.GetToken):
            if req.server == "slow":
                await calls.release.wait()
            if req.server == "missing":
                raise wire.WireError("unknown_server", "no such server", "ncp-broker add missing URL")
            return {"token": f"tok-{req.server}", "by": "handler"}
        return {"op": type(req).__name__, "by": "handler"}

    return handler


def make_immediate(calls: Calls) -> Callable[[wire.Request], Any]:
    def immediate(req: wire.Request) -> Any:
        calls.immediate.append(_name(req))
        if isinstance(req, wire.GetToken):
            if req.server == "gone":
                raise wire.WireError("unknown_server", "gone at once", "ncp-broker add gone URL")
            if req.server == "bug":
                raise RuntimeError("a bug, with a secret inside: hunter2")
            if req.server.startswith("fast"):
                return {"token": f"tok-{req.server}", "by": "immediate"}
        return None  # not now: the handler answers

    return immediate


@pytest.fixture
def sock_path() -> Iterator[Path]:
    # Unix socket paths are limited to ~100 bytes: pytest's tmp_path can be longer.
    root = Path(tempfile.mkdtemp(prefix="ncpb-srv-", dir="/tmp"))
    try:
        yield root / "s.sock"
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _listener(path: Path) -> trio.SocketListener:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(64)
    return trio.SocketListener(sock)


class Served:
    def __init__(self, path: Path, calls: Calls, nursery: trio.Nursery) -> None:
        self.path = path
        self.calls = calls
        self.nursery = nursery
        self.clients: list[Client] = []

    async def connect(self) -> Client:
        client = await connect(self.path)
        self.clients.append(client)
        return client

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


@pytest.fixture
async def served(sock_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """serve() with the test handler; parametrize indirectly with serve()'s keyword arguments."""
    options: dict[str, Any] = dict(getattr(request, "param", {}))
    calls = Calls()
    if options.pop("with_immediate", True):
        options["immediate"] = make_immediate(calls)
    listener = await _listener(sock_path)
    async with listener, trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve, listener, make_handler(calls), **options))
        served = Served(sock_path, calls, nursery)
        try:
            yield served
        finally:
            await served.aclose()
            nursery.cancel_scope.cancel()


class Client:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def answer(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        value: dict[str, Any] = json.loads(line)
        return value

    async def closed(self) -> bool:
        """Whether the server closed this connection (with nothing more sent)."""
        try:
            return self.buf == b"" and await self.stream.receive_some(1) == b""
        except trio.BrokenResourceError:
            return True

    async def aclose(self) -> None:
        await self.stream.aclose()


async def one_shot(path: Path, data: bytes) -> list[dict[str, Any]]:
    """What ncp_client does: connect, send, shut down the sending side, all before the daemon runs
    again; then every answer until the daemon closes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        sock.connect(str(path))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(False)
        received = b""
        while True:
            await trio.lowlevel.wait_readable(sock)
            chunk = sock.recv(65536)
            if not chunk:
                return [json.loads(line) for line in received.splitlines()]
            received += chunk


async def connect(path: Path) -> Client:
    return Client(await trio.open_unix_socket(str(path)))


def frame(server: str, **extra: Any) -> bytes:
    return json.dumps({"op": "get_token", "server": server, **extra}).encode() + b"\n"


# ---- the answer-at-once path ----------------------------------------------------------------------


async def test_half_closed_request_is_answered_at_once_and_closed(served: Served) -> None:
    """One request then SHUT_WR: the immediate hook answers it, the handler is not called, the
    connection is closed after the answer."""
    answers = await one_shot(served.path, frame("fast1", id=3))
    assert answers == [{"id": 3, "ok": True, "result": {"token": "tok-fast1", "by": "immediate"}}]
    assert served.calls.immediate == ["fast1"]
    assert served.calls.handled == []


class TaskCounter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.spawned = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1


async def test_answer_at_once_spawns_no_task(served: Served) -> None:
    """The whole exchange of a half-closed request the hook answers runs in the accept loop; one that
    goes to the handler gets a task."""
    counter = TaskCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        for name, tasks in (("fast1", 0), ("slow-path", 1)):
            counter.spawned = 0
            [answer] = await one_shot(served.path, frame(name))
            assert answer["result"]["token"] == f"tok-{name}"
            assert counter.spawned == tasks, name
    finally:
        trio.lowlevel.remove_instrument(counter)


async def test_immediate_answer_keeps_an_open_connection_serving(served: Served) -> None:
    """Answered at once without SHUT_WR: the same connection then carries more requests, in order."""
    client = await served.connect()
    await client.send(frame("fast1"))
    assert (await client.answer())["result"]["by"] == "immediate"
    await client.send(frame("other") + frame("fast2"))
    assert (await client.answer())["result"] == {"token": "tok-other", "by": "handler"}
    assert (await client.answer())["result"] == {"token": "tok-fast2", "by": "immediate"}
    await client.stream.send_eof()
    assert await client.closed()


async def test_not_now_goes_to_the_handler(served: Served) -> None:
    """A request the immediate hook cannot answer (None) is answered by the handler, half-closed or not."""
    for half_close in (True, False):
        client = await served.connect()
        await client.send(frame("needs-refresh"))
        if half_close:
            await client.stream.send_eof()
        assert (await client.answer())["result"] == {"token": "tok-needs-refresh", "by": "handler"}
        if half_close:
            assert await client.closed()
        await client.aclose()
    assert served.calls.handled == ["needs-refresh", "needs-refresh"]


async def test_immediate_errors_are_answered_per_request(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """A WireError from the hook is the answer; a bug is `internal` without its text; serving goes on."""
    client = await served.connect()
    await client.send(frame("gone"))
    assert (await client.answer())["error"] == {
        "code": "unknown_server",
        "message": "gone at once",
        "hint": "ncp-broker add gone URL",
    }
    await client.send(frame("bug"))
    err = await client.answer()
    assert err["error"]["code"] == "internal"
    assert "hunter2" not in json.dumps(err)
    assert "internal error while answering GetToken at once" in caplog.text
    second = await served.connect()
    await second.send(frame("fast2"))
    assert (await second.answer())["result"]["token"] == "tok-fast2"


async def test_half_closed_bad_frame_gets_bad_request(served: Served) -> None:
    """A malformed frame answered from the accept loop still gets bad_request naming the problem."""
    [err] = await one_shot(served.path, b'{"op":"get_token","server":7}\n')
    assert err["error"]["code"] == "bad_request"
    assert "expected a string" in err["error"]["message"]  # our words, not msgspec's


@pytest.mark.parametrize("served", [{"with_immediate": False}], indirect=True)
async def test_half_closed_request_without_hook_is_answered_by_the_handler(served: Served) -> None:
    """Without an immediate hook, a half-closed request goes to the handler and the connection closes."""
    client = await served.connect()
    await client.send(frame("fast1"))
    await client.stream.send_eof()
    assert (await client.answer())["result"] == {"token": "tok-fast1", "by": "handler"}
    assert await client.closed()


async def test_a_waiting_handler_does_not_hold_the_accept_loop(served: Served) -> None:
    """While one connection's handler waits, other connections are accepted and answered."""
    slow = await served.connect()
    await slow.send(frame("slow"))
    await slow.stream.send_eof()
    for name in ("fast1", "other"):
        client = await served.connect()
        await client.send(frame(name))
        assert (await client.answer())["result"]["token"] == f"tok-{name}"
    served.calls.release.set()
    assert (await slow.answer())["result"]["token"] == "tok-slow"


async def test_connect_and_leave_without_a_request(served: Served) -> None:
    """A client that connects and closes costs nothing; the next one is served."""
    for _ in range(3):
        quitter = await served.connect()
        await quitter.aclose()
    client = await served.connect()
    await client.send(HELLO)
    assert (await client.answer())["ok"] is True


# ---- framing over the socket path -----------------------------------------------------------------


async def test_pipelined_frames_in_the_first_read_are_answered_in_order(served: Served) -> None:
    """Several frames arriving with the connection are answered one by one, in order, ids kept."""
    client = await served.connect()
    await client.send(b"".join(frame(f"s{i}", id=i) for i in range(5)) + b"\n" + frame("fast9", id=9))
    answers = [await client.answer() for _ in range(6)]
    assert [a["id"] for a in answers] == [0, 1, 2, 3, 4, 9]
    assert answers[-1]["result"]["by"] == "immediate"


async def test_frame_split_across_writes_over_the_socket(served: Served) -> None:
    """A frame that arrives byte by byte is one request on the socket path too."""
    client = await served.connect()
    for b in frame("fast1"):
        await client.send(bytes([b]))
        await trio.lowlevel.checkpoint()
    assert (await client.answer())["result"]["token"] == "tok-fast1"


@pytest.mark.parametrize("served", [{"max_frame": 1024}], indirect=True)
async def test_oversized_and_endless_frames_over_the_socket(served: Served) -> None:
    """Over the cap, with or without a newline: frame_too_large, then the connection is closed."""
    for data in (frame("a" * 2000), b"x" * 3000):
        client = await served.connect()
        await client.send(data)
        assert (await client.answer())["error"]["code"] == "frame_too_large"
        assert await client.closed()


@pytest.mark.parametrize("served", [{"frame_deadline": 10, "idle_timeout": 300}], indirect=True)
async def test_socket_deadlines(served: Served, autojump_clock: trio.testing.MockClock) -> None:
    """A stalled half frame is dropped after the frame deadline, an idle connection after the idle one."""
    half = await served.connect()
    await half.send(b'{"op":"get_tok')
    start = trio.current_time()
    assert await half.closed()
    assert trio.current_time() - start == pytest.approx(10)
    idle = await served.connect()
    await trio.sleep(299)
    await idle.send(HELLO)
    assert (await idle.answer())["ok"] is True
    start = trio.current_time()
    assert await idle.closed()
    assert trio.current_time() - start == pytest.approx(300)


async def test_client_that_never_reads_is_dropped_over_the_socket(
    served: Served, autojump_clock: trio.testing.MockClock
) -> None:
    """A client that sends without reading its answers is cut off once the send deadline passes."""
    client = await served.connect()
    start = trio.current_time()
    with trio.move_on_after(60):  # the daemon closes long before
        try:
            while True:  # fill the daemon's send buffer: its answers are never read
                await client.send(HELLO * 512)
        except trio.BrokenResourceError:
            pass
    assert trio.current_time() - start == pytest.approx(10, abs=1)


async def test_a_busy_connection_yields_to_others(served: Served) -> None:
    """A connection with hundreds of requests already buffered does not hold the daemon until they are
    all answered: a second connection is served in between."""
    busy = await served.connect()
    await busy.send(frame("b") * 500)
    await busy.answer()
    other = await served.connect()
    await other.send(frame("other"))
    await other.answer()
    assert served.calls.handled.index("other") < 500
    for _ in range(499):
        await busy.answer()


# ---- who may connect, and how many ----------------------------------------------------------------


async def test_other_users_get_nothing(sock_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A peer the uid check refuses gets its connection closed with not one byte; the check was given
    the peer's real uid (SO_PEERCRED); the daemon goes on serving."""
    seen: list[int | None] = []

    def only_another_user(uid: int | None) -> bool:
        seen.append(uid)
        return len(seen) > 1  # refuse the first connection, as if it came from another user

    calls = Calls()
    listener = await _listener(sock_path)
    async with listener, trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(serve, listener, make_handler(calls), peer_ok=only_another_user)
        )
        refused = await connect(sock_path)
        with contextlib.suppress(trio.BrokenResourceError):  # it may be closed before this is sent
            await refused.send(frame("fast1"))
        assert await refused.closed()
        accepted = await connect(sock_path)
        await accepted.send(frame("fast1"))
        assert (await accepted.answer())["result"]["token"] == "tok-fast1"
        for client in (refused, accepted):
            await client.aclose()
        nursery.cancel_scope.cancel()
    assert seen == [os.getuid(), os.getuid()]
    assert calls.handled == ["fast1"]
    assert f"refused a connection from uid {os.getuid()}" in caplog.text


@pytest.mark.parametrize("served", [{"max_connections": 2}], indirect=True)
async def test_connections_past_the_cap_wait_in_the_backlog(
    served: Served, autojump_clock: trio.testing.MockClock
) -> None:
    """With the cap reached, a new connection is not served until one of the others ends."""
    first, second = await served.connect(), await served.connect()
    for client in (first, second):
        await client.send(HELLO)
        await client.answer()
    third = await served.connect()  # the kernel accepts it into the backlog
    await third.send(frame("fast3"))
    with trio.move_on_after(5) as waited:
        await third.answer()
    assert waited.cancelled_caught
    await first.aclose()
    with trio.fail_after(60):  # (virtual seconds) a slot that is never released would hang here
        assert (await third.answer())["result"]["token"] == "tok-fast3"


async def test_refused_connections_do_not_use_up_the_cap(sock_path: Path) -> None:
    """Refused peers release their connection slot at once."""
    calls = Calls()
    listener = await _listener(sock_path)
    refusing = [True] * 5
    async with listener, trio.open_nursery() as nursery:
        refuse_five = functools.partial(
            serve,
            listener,
            make_handler(calls),
            peer_ok=lambda _uid: not (refusing and refusing.pop()),
            max_connections=2,
        )
        await nursery.start(refuse_five)
        with trio.fail_after(10):  # a leaked slot would leave the last client waiting forever
            for _ in range(5):
                refused = await connect(sock_path)
                assert await refused.closed()
                await refused.aclose()
            client = await connect(sock_path)
            await client.send(HELLO)
            assert (await client.answer())["ok"] is True
            await client.aclose()
        nursery.cancel_scope.cancel()


async def test_the_daemon_log_names_no_token(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    """Answering at once logs nothing about the request at debug level or above (no token in a log)."""
    caplog.set_level(logging.DEBUG, logger="brokerd")
    await one_shot(served.path, frame("fast-secret"))
    assert "tok-fast-secret" not in caplog.text
