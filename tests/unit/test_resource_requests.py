"""What a caller may name a token for (brokerd.resource_requests): one request at the server's origin."""

from __future__ import annotations

import pytest

from brokerd.resource_requests import ResourceRequest, check_request, resource_request
from brokerd.wire import WireError

SERVER = "https://mcp.example.com/api"


@pytest.mark.parametrize(
    "url",
    [
        "https://mcp.example.com/api",
        "https://MCP.example.com:443/other/path?q=1#f",
        "https://mcp.example.com/",
    ],
)
def test_requests_at_the_servers_origin_are_fine(url: str) -> None:
    """Scheme, host and port decide; the path, the query and the case of the host do not."""
    check_request(SERVER, method="POST", url=url, nonce=None, label="srv")
    check_request(SERVER, method=None, url=None, nonce=None, label="srv")


@pytest.mark.parametrize(
    "url",
    [
        "http://mcp.example.com/api",
        "https://mcp.example.com:8443/api",
        "https://evil.example/api",
        "https://user:pw@evil.example/api?token=sekrit",
        "not a url",
        "https://[::1",
    ],
)
def test_requests_elsewhere_are_refused(url: str) -> None:
    """Another scheme, port or host: bad_request, naming neither a user part nor a query."""
    with pytest.raises(WireError) as err:
        check_request(SERVER, method="GET", url=url, nonce=None, label="srv")
    assert err.value.code == "bad_request"
    assert "not at the server's origin" in err.value.message
    assert "pw" not in err.value.message
    assert "sekrit" not in err.value.message


@pytest.mark.parametrize(
    ("method", "url", "nonce", "message"),
    [
        ("POST", None, None, "both method and url"),
        (None, SERVER, None, "both method and url"),
        ("PO ST", SERVER, None, "not an HTTP method"),
        ("POST", SERVER, "", "not a DPoP nonce"),
        ("POST", SERVER, 'with"quote', "not a DPoP nonce"),
        ("POST", SERVER, "x" * 2000, "not a DPoP nonce"),
    ],
)
def test_malformed_requests_are_refused(
    method: str | None, url: str | None, nonce: str | None, message: str
) -> None:
    with pytest.raises(WireError, match=message) as err:
        check_request(SERVER, method=method, url=url, nonce=nonce, label="srv")
    assert err.value.code == "bad_request"


def test_a_request_is_named_by_method_url_and_nonce() -> None:
    """resource_request: None when nothing is named; the method upper-cased; a nonce needs its request."""
    assert resource_request(SERVER, method=None, url=None, nonce=None, label="srv") is None
    named = resource_request(SERVER, method="post", url=f"{SERVER}?x=1", nonce="n-1", label="srv")
    assert named == ResourceRequest("POST", f"{SERVER}?x=1", "n-1")
    with pytest.raises(WireError, match="needs the method and url") as err:
        resource_request(SERVER, method=None, url=None, nonce="n-1", label="srv")
    assert err.value.code == "bad_request"
