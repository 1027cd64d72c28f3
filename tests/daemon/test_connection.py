"""The socket handler over in-memory streams: framing, deadlines, errors per request (trio style)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from brokerd import wire
from brokerd.server import handle_connection


async def echo_handler(req: wire.Request) -> Any:
    if isinstance(req, wire.GetToken):
        if req.server == "boom":
            raise RuntimeError("a bug, with a secret inside: hunter2")
        if req.server == "missing":
            raise wire.WireError("unknown_server", "no such server", "ncp-broker add missing URL")
        return {"token": f"tok-{req.server}"}
    return {"op": type(req).__name__}


class Conn:
    """The client end of a memory stream pair, reading one answer per line."""

    def __init__(self, stream: trio.abc.Stream) -> None:
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
        try:
            return await self.stream.receive_some(1) == b""
        except trio.BrokenResourceError:
            return True


async def serving(nursery: trio.Nursery, **kwargs: Any) -> Conn:
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(lambda: handle_connection(server, echo_handler, **kwargs))
    return Conn(client)


async def test_answers_in_order_on_one_connection() -> None:
    """Pipelined requests get one answer each, in order, carrying their ids."""
    async with trio.open_nursery() as nursery:
        conn = await serving(nursery)
        frames = b"".join(
            json.dumps({"op": "get_token", "server": f"s{i}", "id": i}).encode() + b"\n" for i in range(5)
        )
        await conn.send(frames)
        answers = [await conn.answer() for _ in range(5)]
        assert [a["id"] for a in answers] == list(range(5))
        assert [a["result"]["token"] for a in answers] == [f"tok-s{i}" for i in range(5)]
        nursery.cancel_scope.cancel()


async def test_frame_split_across_writes_is_reassembled() -> None:
    """A frame that arrives byte by byte is one request."""
    async with trio.open_nursery() as nursery:
        conn = await serving(nursery)
        for b in b'{"op":"get_token","server":"x"}\n':
            await conn.send(bytes([b]))
        assert (await conn.answer())["result"] == {"token": "tok-x"}
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        (b"not json", "not a JSON object"),
        (b"[1,2]", "invalid request: expected an object, not a list"),
        (b'{"op":"launch_missiles"}', 'expected one of "get_token", "hello", "import_ncp", '),
        (b'{"op":"launch_missiles"}', '"token_rejected" (at $.op)'),
        (b'{"server":"x"}', 'invalid request: missing the required key "op"'),
        (b'{"op":"get_token"}', 'invalid request: missing the required key "server"'),
        (b'{"op":"get_token","server":"x","extra":1}', 'invalid request: unknown key "extra"'),
        (
            b'{"op":"get_token","server":7}',
            "invalid request: expected a string, not an integer (at $.server)",
        ),
        (
            b'{"op":"login","server":"x","mode":"SECRET"}',
            'expected one of "browser", "device", "paste" (at $.mode)',
        ),
        (b"\xff\xfe{}", "not a JSON object"),
        (b'{"op":"get_token","server":"\xff"}', "not a JSON object"),  # bad UTF-8 inside a string
        # A wrong type first, then broken JSON or bad UTF-8 further on: still our bad_request.
        (b'{"op":"get_token","server":7, bad', "invalid request: not a JSON object"),
        (b'{"op":"get_token","server":7,"x":"\xff"}', "invalid request: not a JSON object"),
        pytest.param(
            b'{"op":"hello","x":' + b"[" * 30000 + b"]" * 30000 + b"}",
            "invalid request: nested too deeply",
            id="deep-nesting-field",
        ),
        pytest.param(b'{"id":' + b"[" * 60000, "not a JSON object", id="deep-nesting-id"),
    ],
)
async def test_malformed_frame_gets_bad_request_and_connection_survives(frame: bytes, needle: str) -> None:
    """A malformed frame gets bad_request naming the problem; the next frame on the same connection works."""
    async with trio.open_nursery() as nursery:
        conn = await serving(nursery)
        await conn.send(frame + b"\n")
        err = await conn.answer()
        assert err["ok"] is False
        assert err["error"]["code"] == "bad_request"
        assert needle in err["error"]["message"]
        assert "SECRET" not in err["error"]["message"]  # values are never echoed back
        await conn.send(b'{"op":"get_token","server":"y"}\n')
        assert (await conn.answer())["result"] == {"token": "tok-y"}
        nursery.cancel_scope.cancel()


async def test_bad_request_keeps_the_id_when_it_can() -> None:
    """An invalid request that has a usable id gets its error under that id."""
    async with trio.open_nursery() as nursery:
        conn = await serving(nursery)
        await conn.send(b'{"op":"get_token","id":"abc"}\n')
        assert (await conn.answer())["id"] == "abc"
        nursery.cancel_scope.cancel()


async def test_bad_token_value_is_not_echoed() -> None:
    """A malformed request never echoes a secret-looking value it carried."""
    async with trio.open_nursery() as nursery:
        conn = await serving(nursery)
        await conn.send(b'{"op":"token_rejected","server":"x","token":["s3cr3t-value"]}\n')
        err = await conn.answer()
        assert err["error"]["code"] == "bad_request"
        assert "s3cr3t" not in json.dumps(err)
        nursery.cancel_scope.cancel()


async def test_oversized_frame_is_refused_and_closed() -> None:
    """A frame over the cap gets frame_too_large and the connection is closed."""
    async with trio.open_nursery() as nursery:
        conn = await serving(nursery, max_frame=1024)
        await conn.send(b'{"op":"get_token","server":"' + b"a" * 2000 + b'"}\n')
        err = await conn.answer()
        assert err["error"]["code"] == "frame_too_large"
        assert await conn.closed()


async def test_endless_frame_without_newline_is_cut_off() -> None:
    """Bytes without a newline past the cap are refused without waiting for the end."""
    async with trio.open_nursery() as nursery:
        conn = await serving(nursery, max_frame=1024)
        for _ in range(3):
            await conn.send(b"x" * 512)
        err = await conn.answer()
        assert err["error"]["code"] == "frame_too_large"
        assert await conn.closed()


async def test_stalled_partial_frame_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    """Half a frame followed by silence closes the connection after the frame deadline."""
    async with trio.open_nursery() as nursery:
        conn = await serving(nursery, frame_deadline=10, idle_timeout=1000)
        await conn.send(b'{"op":"get_tok')
        start = trio.current_time()
        assert await conn.closed()
        assert trio.current_time() - start == pytest.approx(10)


async def test_idle_connection_is_kept_until_idle_timeout(autojump_clock: trio.testing.MockClock) -> None:
    """A connection may stay open between requests, up to the idle timeout."""
    async with trio.open_nursery() as nursery:
        conn = await serving(nursery, frame_deadline=10, idle_timeout=300)
        await trio.sleep(299)
        await conn.send(b'{"op":"hello"}\n')
        assert (await conn.answer())["ok"] is True
        start = trio.current_time()
        assert await conn.closed()
        assert trio.current_time() - start == pytest.approx(300)


async def test_handler_bug_becomes_internal_error_without_details() -> None:
    """An exception in a handler answers `internal` (no exception text) and the connection stays usable."""
    async with trio.open_nursery() as nursery:
        conn = await serving(nursery)
        await conn.send(b'{"op":"get_token","server":"boom"}\n')
        err = await conn.answer()
        assert err["error"]["code"] == "internal"
        assert "hunter2" not in json.dumps(err)
        await conn.send(b'{"op":"get_token","server":"missing"}\n')
        err = await conn.answer()
        assert err["error"] == {
            "code": "unknown_server",
            "message": "no such server",
            "hint": "ncp-broker add missing URL",
        }
        nursery.cancel_scope.cancel()


async def test_blank_lines_are_ignored() -> None:
    """Empty lines between frames are tolerated (handy for humans with socat)."""
    async with trio.open_nursery() as nursery:
        conn = await serving(nursery)
        await conn.send(b'\n\r\n{"op":"hello"}\n')
        assert (await conn.answer())["ok"] is True
        nursery.cancel_scope.cancel()


async def test_client_vanishing_mid_answer_ends_only_that_connection() -> None:
    """A client that closes early ends its handler quietly."""
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: handle_connection(server, echo_handler))
        await client.send_all(b'{"op":"hello"}\n')
        await client.aclose()
    # the nursery exits: the handler returned instead of raising


async def test_client_that_never_reads_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    """A client that sends requests but never reads its answers is cut off after the send deadline."""
    client, server = trio.testing.lockstep_stream_pair()  # send_all blocks until the peer reads
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: handle_connection(server, echo_handler, idle_timeout=10_000))
        await client.send_all(b'{"op":"hello"}\n')
        start = trio.current_time()
    # the nursery exits: the handler gave up on the unread answer instead of waiting forever
    assert trio.current_time() - start == pytest.approx(10)
