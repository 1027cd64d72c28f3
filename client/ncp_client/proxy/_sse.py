"""Server-sent events from an httpx response, with a bound on the size of one event.

Parsing is httpx-sse's (its line and event decoders follow the WHATWG event-stream rules: CR, LF and CRLF
line ends, comments, ``id`` without NUL, ``retry`` as an integer). httpx-sse's own iterator keeps however
much a server sends before a blank line, so this module feeds its decoders itself and stops at ``limit``
characters within one event. (The decoders are httpx-sse's private modules: the dependency is pinned below
0.5, where their interface has been stable since 0.4.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from httpx_sse import ServerSentEvent
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

__all__ = ["EventTooLarge", "ServerSentEvent", "events", "is_event_stream"]


class EventTooLarge(Exception):
    """One event (or one line) grew past the limit; the stream is abandoned."""


def is_event_stream(response: httpx.Response) -> bool:
    kind = str(response.headers.get("content-type", "")).partition(";")[0].strip().lower()
    return kind == "text/event-stream"


async def events(response: httpx.Response, limit: int) -> AsyncIterator[ServerSentEvent]:
    """The events of ``response`` in order.

    Raises:
        EventTooLarge: an event is over ``limit`` characters.
        httpx.HTTPError: the stream broke (the caller decides whether to resume).
    """
    lines = SSELineDecoder()
    decoder = SSEDecoder()
    pending = 0  # characters since the last event boundary
    async for text in response.aiter_text():
        pending += len(text)
        if pending > limit:
            raise EventTooLarge(f"a server-sent event is over {limit} bytes")
        for line in lines.decode(text):
            event = decoder.decode(line)
            if not line:
                pending = 0
            if event is not None:
                yield event
    for line in lines.flush():
        if (event := decoder.decode(line)) is not None:
            yield event
