"""URL policy (S1, S2, A7), redirect URIs (A6), canonical resource (A3) and well-known URLs (D2, D4)."""

from __future__ import annotations

import pytest

from brokerd.oauth import PolicyError, UrlPolicy, canonical_resource, is_loopback_host, loopback_redirect_uri
from brokerd.oauth._urls import as_metadata_urls, check_redirect_uri, prm_urls

STRICT = UrlPolicy()
DEV = UrlPolicy(allow_insecure_loopback=True)
PRIVATE = UrlPolicy(allow_private_network=True)


@pytest.mark.parametrize(
    ("url", "policy", "allowed"),
    [
        ("https://auth.example.com/authorize", STRICT, True),
        ("HTTPS://Auth.Example.com/authorize", STRICT, True),
        ("https://auth.example.com:8443/t1?x=1", STRICT, True),
        ("https://127.0.0.1/authorize", STRICT, True),
        # S1: plain http only to loopback, only when allowed
        ("http://auth.example.com/authorize", STRICT, False),
        ("http://auth.example.com/authorize", DEV, False),
        ("http://127.0.0.1:9000/authorize", STRICT, False),
        ("http://127.0.0.1:9000/authorize", DEV, True),
        ("http://127.5.6.7/authorize", DEV, True),
        ("http://localhost:9000/authorize", DEV, True),
        ("http://LOCALHOST./authorize", DEV, True),
        ("http://[::1]:9000/authorize", DEV, True),
        ("http://[::ffff:127.0.0.1]/authorize", DEV, True),
        (
            "http://10.0.0.1/authorize",
            UrlPolicy(allow_insecure_loopback=True, allow_private_network=True),
            False,
        ),
        # A7: other schemes are refused
        ("javascript:alert(1)", DEV, False),
        ("JavaScript:alert(1)", DEV, False),
        ("data:text/html,<script>x</script>", DEV, False),
        ("file:///etc/passwd", DEV, False),
        ("ftp://auth.example.com/", DEV, False),
        ("//auth.example.com/authorize", DEV, False),
        ("/authorize", DEV, False),
        ("", DEV, False),
        # S2: literal private and link-local addresses
        ("https://10.1.2.3/token", STRICT, False),
        ("https://172.16.0.1/token", STRICT, False),
        ("https://172.31.255.255/token", STRICT, False),
        ("https://172.32.0.1/token", STRICT, True),
        ("https://192.168.1.1/token", STRICT, False),
        ("https://169.254.169.254/latest/meta-data", STRICT, False),
        ("https://[fe80::1]/token", STRICT, False),
        ("https://[fd00::1]/token", STRICT, False),
        ("https://[::ffff:10.0.0.1]/token", STRICT, False),
        ("https://0.0.0.0/token", STRICT, False),
        ("https://10.1.2.3/token", PRIVATE, True),
        ("https://169.254.169.254/x", PRIVATE, True),
        ("https://[fe80::1]/token", PRIVATE, True),
        # numeric spellings resolvers read as addresses
        ("https://2130706433/token", STRICT, False),
        ("https://0x7f.1/token", STRICT, False),
        ("https://010.0.0.1/token", STRICT, False),
        # malformed or smuggling
        ("https://user:pw@auth.example.com/", STRICT, False),
        ("https://good.example@evil.example/", STRICT, False),
        ("https://auth.example.com/a b", STRICT, False),
        ("https://auth.example.com/\nx", STRICT, False),
        ("https://auth.example.com:99999/", STRICT, False),
        ("https://[::1/", STRICT, False),
        ("https:///path", STRICT, False),
    ],
)
def test_url_policy_table(url: str, policy: UrlPolicy, allowed: bool) -> None:
    """S1, S2, A7: https only, loopback http when allowed; other schemes, private/link-local refused."""
    if allowed:
        assert policy.check(url, what="the URL") == url
    else:
        with pytest.raises(PolicyError):
            policy.check(url, what="the URL")


@pytest.mark.parametrize(
    ("url", "policy", "hint_word"),
    [
        ("http://127.0.0.1:9000/x", STRICT, "auth.allowInsecureLoopback"),
        ("https://192.168.0.10/x", STRICT, "auth.allowPrivateNetwork"),
        ("https://169.254.1.1/x", STRICT, "auth.allowPrivateNetwork"),
    ],
)
def test_policy_errors_name_the_setting(url: str, policy: UrlPolicy, hint_word: str) -> None:
    """S1, S2: the refusal's hint names the config key that would allow the URL."""
    with pytest.raises(PolicyError) as info:
        policy.check(url, what="the token endpoint")
    assert info.value.hint is not None
    assert hint_word in info.value.hint
    assert "the token endpoint" in info.value.message


def test_policy_error_does_not_echo_unbounded_text() -> None:
    """S1: a refused URL is shown shortened and without control characters."""
    url = "javascript:" + "\x1b[31m" + "A" * 5000
    with pytest.raises(PolicyError) as info:
        STRICT.check(url, what="the authorization URL")
    assert "\x1b" not in str(info.value)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LocalHost", True),
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost.example.com", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    """S1: loopback means localhost, 127.0.0.0/8 or ::1."""
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (
            "https://mcp.example.com/mcp",
            [
                (
                    "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
                    "https://mcp.example.com/mcp",
                ),
                ("https://mcp.example.com/.well-known/oauth-protected-resource", "https://mcp.example.com"),
            ],
        ),
        (
            "https://mcp.example.com/api/v1/",
            [
                (
                    "https://mcp.example.com/.well-known/oauth-protected-resource/api/v1",
                    "https://mcp.example.com/api/v1",
                ),
                ("https://mcp.example.com/.well-known/oauth-protected-resource", "https://mcp.example.com"),
            ],
        ),
        (
            "https://mcp.example.com",
            [("https://mcp.example.com/.well-known/oauth-protected-resource", "https://mcp.example.com")],
        ),
        (
            "https://mcp.example.com/",
            [("https://mcp.example.com/.well-known/oauth-protected-resource", "https://mcp.example.com")],
        ),
        (
            "http://127.0.0.1:8000/mcp",
            [
                (
                    "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp",
                    "http://127.0.0.1:8000/mcp",
                ),
                ("http://127.0.0.1:8000/.well-known/oauth-protected-resource", "http://127.0.0.1:8000"),
            ],
        ),
    ],
)
def test_prm_url_order(server: str, expected: list[tuple[str, str]]) -> None:
    """D2: path form first, then root; only root for a server at the root; trailing slash dropped."""
    assert prm_urls(server) == expected


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [
        (
            "https://auth.example.com/t1",
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/t1",
                "https://auth.example.com/.well-known/openid-configuration/t1",
                "https://auth.example.com/t1/.well-known/openid-configuration",
            ],
        ),
        (
            "https://auth.example.com/t1/",
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/t1",
                "https://auth.example.com/.well-known/openid-configuration/t1",
                "https://auth.example.com/t1/.well-known/openid-configuration",
            ],
        ),
        (
            "https://auth.example.com",
            [
                "https://auth.example.com/.well-known/oauth-authorization-server",
                "https://auth.example.com/.well-known/openid-configuration",
            ],
        ),
        (
            "https://auth.example.com/",
            [
                "https://auth.example.com/.well-known/oauth-authorization-server",
                "https://auth.example.com/.well-known/openid-configuration",
            ],
        ),
    ],
)
def test_as_metadata_url_order(issuer: str, expected: list[str]) -> None:
    """D4: path issuers use the three path forms in order and never the root forms; others the two roots."""
    assert as_metadata_urls(issuer) == expected


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("HTTPS://MCP.Example.COM/MCP/", "https://mcp.example.com/MCP"),
        ("https://mcp.example.com/mcp#frag", "https://mcp.example.com/mcp"),
        ("https://mcp.example.com/", "https://mcp.example.com"),
        ("https://mcp.example.com:8443/a/b?x=1", "https://mcp.example.com:8443/a/b?x=1"),
    ],
)
def test_canonical_resource(url: str, canonical: str) -> None:
    """A3: lower-case scheme and host, no fragment, no trailing slash; the path keeps its case."""
    assert canonical_resource(url) == canonical


def test_loopback_redirect_uri() -> None:
    """A6: the redirect URI is http://127.0.0.1:<port>/callback and passes the loopback check."""
    uri = loopback_redirect_uri(9876)
    assert uri == "http://127.0.0.1:9876/callback"
    assert check_redirect_uri(uri) == uri
    with pytest.raises(ValueError, match="port"):
        loopback_redirect_uri(0)


@pytest.mark.parametrize(
    "uri",
    [
        "https://127.0.0.1:9876/callback",
        "http://localhost:9876/callback",
        "http://0.0.0.0:9876/callback",
        "http://192.168.1.2:9876/callback",
        "http://127.0.0.1/callback",
        "http://127.0.0.1:9876/callback#f",
        "http://u@127.0.0.1:9876/callback",
        "http://127.0.0.1:bad/callback",
        "urn:ietf:wg:oauth:2.0:oob",
    ],
)
def test_redirect_uri_must_be_loopback_with_port(uri: str) -> None:
    """A6: redirect URIs off the loopback interface, without a port or with a fragment are refused."""
    with pytest.raises(PolicyError):
        check_redirect_uri(uri)


@pytest.mark.parametrize(
    "url",
    [
        "http://mcp.example.com/mcp?key=sk-live-0123456789",  # plain http, a key in the query
        "https://user:sk-live-0123456789@mcp.example.com/mcp",  # credentials in the URL
        "https://10.0.0.5/mcp?api_key=sk-live-0123456789#frag",  # a private address
    ],
)
def test_policy_error_never_shows_a_key_in_the_url(url: str) -> None:
    """S1/S2 refusals name the URL without its user info, query or fragment: a key may sit there."""
    with pytest.raises(PolicyError) as refused:
        UrlPolicy().check(url, what="the MCP server URL")
    assert "sk-live-0123456789" not in str(refused.value)
    assert "mcp" in str(refused.value)  # still says which URL
