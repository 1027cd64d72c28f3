"""The httpx + trio driver of the OAuth core, against canned transports (httpx.MockTransport)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator, Mapping

import httpx
import pytest
import trio
import trio.testing

from brokerd.oauth import (
    AwaitRedirect,
    Effect,
    Fetch,
    GrantEndedError,
    HttpRequest,
    HttpResponse,
    Registration,
    ShowDeviceCode,
    Sleep,
    TokenSet,
    TransportFailure,
    UrlPolicy,
    refresh,
)
from brokerd.oauth_driver import MAX_BODY, TOTAL_TIMEOUT, USER_AGENT, drive, make_http_client, redact_url
from brokerd.secret import Secret
from tests.fakes import no_device_code, no_redirect

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
TOKEN_URL = "https://as.example/token"


def _fetch_all(*requests: HttpRequest) -> Generator[Effect, object, list[object]]:
    answers = []
    for request in requests:
        answers.append((yield Fetch(request)))
    return answers


async def _run(
    handler: Handler, *requests: HttpRequest, clock: Callable[[], float] = lambda: 1234.5
) -> list[object]:
    async with make_http_client(transport=httpx.MockTransport(handler)) as http:
        return await drive(
            _fetch_all(*requests),
            http=http,
            on_redirect=no_redirect,
            on_device_code=no_device_code,
            clock=clock,
        )


def _only(answers: list[object]) -> HttpResponse:
    [answer] = answers
    assert isinstance(answer, HttpResponse), answer
    return answer


def _failure(answers: list[object]) -> TransportFailure:
    [answer] = answers
    assert isinstance(answer, TransportFailure), answer
    return answer


async def test_request_sent_exactly_as_given() -> None:
    """Method, URL, headers and body go out unchanged, with our User-Agent and no cookie."""
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    request = HttpRequest(
        "POST",
        TOKEN_URL + "?x=1",
        (("content-type", "application/x-www-form-urlencoded"), ("accept", "application/json")),
        b"grant_type=refresh_token&refresh_token=RT",
    )
    response = _only(await _run(handler, request))
    assert response.status == 200
    assert response.body == b'{"ok":true}'
    [sent] = seen
    assert sent.method == "POST"
    assert str(sent.url) == TOKEN_URL + "?x=1"
    assert sent.content == b"grant_type=refresh_token&refresh_token=RT"
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["user-agent"] == USER_AGENT
    assert "cookie" not in sent.headers


async def test_get_has_no_body() -> None:
    """A GET with an empty body is sent without one."""
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    await _run(handler, HttpRequest("GET", "https://as.example/.well-known/x"))
    assert seen[0].content == b""
    assert "content-length" not in seen[0].headers


async def test_redirects_are_not_followed() -> None:
    """A 302 goes back to the flow as it is; the Location is not fetched."""
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"location": "https://elsewhere.example/"})

    response = _only(await _run(handler, HttpRequest("GET", "https://as.example/a")))
    assert response.status == 302
    assert response.header("location") == "https://elsewhere.example/"
    assert seen == ["https://as.example/a"]


async def test_headers_lower_cased_with_repeats_and_received_at() -> None:
    """Header names come back lower-cased, repeated ones kept in order; received_at is clock()."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401,
            headers=[
                ("WWW-Authenticate", 'Bearer resource_metadata="https://r.example/prm"'),
                ("Content-Type", "text/plain"),
                ("WWW-Authenticate", 'Basic realm="x"'),
            ],
        )

    response = _only(await _run(handler, HttpRequest("GET", "https://r.example/mcp"), clock=lambda: 42.25))
    assert response.received_at == 42.25
    assert response.header_values("www-authenticate") == (
        'Bearer resource_metadata="https://r.example/prm"',
        'Basic realm="x"',
    )
    assert all(name == name.lower() for name, _ in response.headers)


async def test_connect_timeout_is_a_transport_failure() -> None:
    """An httpx timeout becomes a TransportFailure naming the origin, not the query or body."""

    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    failure = _failure(
        await _run(
            handler, HttpRequest("POST", "https://as.example:8443/token?code=SECRET", (), b"refresh=RT")
        )
    )
    assert "could not connect" in failure.reason
    assert "https://as.example:8443" in failure.reason
    assert "SECRET" not in failure.reason
    assert "RT" not in failure.reason


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (httpx.ConnectError, "could not connect to https://as.example: "),
        (httpx.ReadError, "the connection broke with https://as.example: "),
        (httpx.RemoteProtocolError, "no usable HTTP answer from https://as.example: "),
        (httpx.DecodingError, "the HTTP exchange failed with https://as.example: "),
    ],
)
async def test_connection_error_is_a_transport_failure(error: type[httpx.RequestError], verdict: str) -> None:
    """A failed exchange becomes a TransportFailure in our words, with the detail after them; the URL's
    query is redacted out of it."""
    url = "https://as.example/authorize?code=SECRET"

    async def handler(request: httpx.Request) -> httpx.Response:
        raise error(f"detail-from-the-transport for {url}", request=request)

    failure = _failure(await _run(handler, HttpRequest("GET", url)))
    assert failure.reason.startswith(verdict), failure.reason
    assert "detail-from-the-transport for https://as.example/authorize?code=<redacted>" in failure.reason
    assert "SECRET" not in failure.reason


async def test_total_deadline(autojump_clock: trio.testing.MockClock) -> None:
    """A server that never finishes answering is a TransportFailure after TOTAL_TIMEOUT seconds."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    start = trio.current_time()
    failure = _failure(await _run(handler, HttpRequest("GET", "https://slow.example/x")))
    assert trio.current_time() - start == pytest.approx(TOTAL_TIMEOUT)
    assert failure.reason == "no answer from https://slow.example within 15 s"


async def test_body_over_the_cap_is_a_transport_failure() -> None:
    """A body larger than MAX_BODY is refused as a TransportFailure, never truncated."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * (MAX_BODY + 1))

    async def exact(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * MAX_BODY)

    assert (
        "larger than 1 MiB"
        in _failure(await _run(handler, HttpRequest("GET", "https://big.example/"))).reason
    )
    assert len(_only(await _run(exact, HttpRequest("GET", "https://big.example/"))).body) == MAX_BODY


async def test_cookies_are_neither_kept_nor_sent() -> None:
    """A Set-Cookie from one answer is not sent with the next request."""
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"set-cookie": "session=abc; Path=/"})

    await _run(
        handler, HttpRequest("GET", "https://as.example/a"), HttpRequest("GET", "https://as.example/b")
    )
    assert "cookie" not in seen[1].headers


async def test_sleep_redirect_and_device_code(autojump_clock: trio.testing.MockClock) -> None:
    """Sleep sleeps on trio's clock and answers clock(); the other effects go to their handlers."""
    redirect = AwaitRedirect("https://as.example/authorize?x", "state-1", "http://127.0.0.1:1/callback")
    device = ShowDeviceCode("https://as.example/device", None, "ABCD-EFGH", 2000.0)
    shown: list[ShowDeviceCode] = []

    def flow() -> Generator[Effect, object, tuple[object, object, object]]:
        params = yield redirect
        shown_answer = yield device
        now = yield Sleep(7.5)
        return params, shown_answer, now

    async def on_redirect(effect: AwaitRedirect) -> Mapping[str, str]:
        assert effect is redirect
        return {"code": "c", "state": effect.state}

    async def on_device_code(effect: ShowDeviceCode) -> None:
        shown.append(effect)

    async def no_http(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    start = trio.current_time()
    async with make_http_client(transport=httpx.MockTransport(no_http)) as http:
        result = await drive(
            flow(),
            http=http,
            on_redirect=on_redirect,
            on_device_code=on_device_code,
            clock=lambda: 1000.0 + trio.current_time() - start,
        )
    assert result == ({"code": "c", "state": "state-1"}, None, pytest.approx(1007.5))
    assert shown == [device]


async def test_flow_closed_when_a_handler_raises() -> None:
    """An exception from on_redirect propagates unchanged and the flow is closed."""
    closed = []

    def flow() -> Generator[Effect, object, None]:
        try:
            yield AwaitRedirect("https://as.example/a", "s", "http://127.0.0.1:1/callback")
        finally:
            closed.append(True)

    async def on_redirect(effect: AwaitRedirect) -> Mapping[str, str]:
        raise LookupError("listener gone")

    async def no_http(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    async with make_http_client(transport=httpx.MockTransport(no_http)) as http:
        with pytest.raises(LookupError, match="listener gone"):
            await drive(flow(), http=http, on_redirect=on_redirect, on_device_code=no_device_code)
    assert closed == [True]


def _tokens() -> tuple[TokenSet, Registration]:
    registration = Registration(issuer="https://as.example", client_id="cid")
    tokens = TokenSet(
        access_token=Secret("AT-1"),
        refresh_token=Secret("RT-1"),
        issuer="https://as.example",
        client_id="cid",
        token_endpoint=TOKEN_URL,
        resource="https://mcp.example/mcp",
    )
    return tokens, registration


async def test_core_refresh_flow_through_the_driver() -> None:
    """The core's refresh flow runs on the driver: rotation is parsed, expiry counted from received_at."""
    seen: list[dict[str, str]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == TOKEN_URL
        seen.append(dict(httpx.QueryParams(request.content.decode())))
        return httpx.Response(
            200,
            json={"access_token": "AT-2", "token_type": "Bearer", "expires_in": 60, "refresh_token": "RT-2"},
        )

    tokens, registration = _tokens()
    async with make_http_client(transport=httpx.MockTransport(handler)) as http:
        new = await drive(
            refresh(tokens, registration, policy=UrlPolicy()),
            http=http,
            on_redirect=no_redirect,
            on_device_code=no_device_code,
            clock=lambda: 5000.0,
        )
    assert new.access_token == Secret("AT-2")
    assert new.refresh_token == Secret("RT-2")
    assert new.expires_at == 5060.0
    assert seen[0]["grant_type"] == "refresh_token"
    assert seen[0]["resource"] == "https://mcp.example/mcp"


async def test_core_refresh_invalid_grant_raises() -> None:
    """The flow's own error (invalid_grant → GrantEndedError) comes out of drive unchanged."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "invalid_grant"})

    tokens, registration = _tokens()
    async with make_http_client(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(GrantEndedError) as ended:
            await drive(
                refresh(tokens, registration, policy=UrlPolicy()),
                http=http,
                on_redirect=no_redirect,
                on_device_code=no_device_code,
            )
    assert ended.value.error == "invalid_grant"


def test_redact_url() -> None:
    """Credential-like query values and fragments are blanked in log lines; the rest stays."""
    shown = redact_url("https://as.example/cb?code=C1&state=s&access_token=T&client_secret=X&scope=a#frag")
    assert "C1" not in shown
    assert "=T" not in shown
    assert "=X" not in shown
    assert "frag" not in shown
    assert "state=s" in shown
    assert "scope=a" in shown
