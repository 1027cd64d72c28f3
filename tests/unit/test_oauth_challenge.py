"""WWW-Authenticate parsing (D1): table-driven, header text in, challenges out."""

from __future__ import annotations

import itertools

import pytest

from brokerd.oauth import Challenge, HttpResponse, bearer_challenge, parse_www_authenticate

Row = tuple[str, list[tuple[str, dict[str, str], str | None]]]

CASES: list[Row] = [
    ("Bearer", [("Bearer", {}, None)]),
    ("bearer", [("bearer", {}, None)]),
    ('Bearer realm="mcp"', [("Bearer", {"realm": "mcp"}, None)]),
    (
        'Bearer realm="a, b", error="invalid_token", error_description="The token expired"',
        [
            (
                "Bearer",
                {"realm": "a, b", "error": "invalid_token", "error_description": "The token expired"},
                None,
            )
        ],
    ),
    (
        r'Bearer error_description="say \"hi\", then \\ go"',
        [("Bearer", {"error_description": 'say "hi", then \\ go'}, None)],
    ),
    ('Bearer scope="read write  admin"', [("Bearer", {"scope": "read write  admin"}, None)]),
    (
        'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"',
        [
            (
                "Bearer",
                {"resource_metadata": "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"},
                None,
            )
        ],
    ),
    (
        "Bearer resource_metadata=https://x.example/prm, scope=read",
        [("Bearer", {"resource_metadata": "https://x.example/prm", "scope": "read"}, None)],
    ),
    ('Bearer REALM="x", Error=invalid_token', [("Bearer", {"realm": "x", "error": "invalid_token"}, None)]),
    ('Bearer realm = "spaced" , error = x', [("Bearer", {"realm": "spaced", "error": "x"}, None)]),
    ('Bearer realm="first", realm="second"', [("Bearer", {"realm": "first"}, None)]),
    (
        'Basic realm="legacy", Bearer realm="mcp", scope="a b"',
        [("Basic", {"realm": "legacy"}, None), ("Bearer", {"realm": "mcp", "scope": "a b"}, None)],
    ),
    ('Bearer realm="x", Basic', [("Bearer", {"realm": "x"}, None), ("Basic", {}, None)]),
    ("Bearer, Basic", [("Bearer", {}, None), ("Basic", {}, None)]),
    ("Negotiate YIIB==, Bearer", [("Negotiate", {}, "YIIB=="), ("Bearer", {}, None)]),
    ("Basic abc=", [("Basic", {}, "abc=")]),
    ('Bearer realm="unterminated, error=x', [("Bearer", {"realm": "unterminated, error=x"}, None)]),
    (',,, Bearer ,, realm="x",,', [("Bearer", {"realm": "x"}, None)]),
    ('realm="orphan", Bearer', [("Bearer", {}, None)]),
    ("", []),
    ("   ", []),
    ('\x00\x01 ==,"', []),
]


@pytest.mark.parametrize(("header", "expected"), CASES)
def test_parse_www_authenticate_table(
    header: str, expected: list[tuple[str, dict[str, str], str | None]]
) -> None:
    """D1: each header parses into the expected schemes, parameters and token68 values."""
    got = [(c.scheme, dict(c.params), c.token68) for c in parse_www_authenticate(header)]
    assert got == expected


def test_several_headers_are_parsed_in_order() -> None:
    """D1: several WWW-Authenticate header lines give their challenges in order."""
    response = HttpResponse(
        401,
        (
            ("www-authenticate", 'Basic realm="a"'),
            ("content-type", "application/json"),
            ("www-authenticate", 'Bearer scope="x y", error="insufficient_scope"'),
        ),
    )
    challenges = parse_www_authenticate(response.header_values("WWW-Authenticate"))
    assert [c.scheme for c in challenges] == ["Basic", "Bearer"]
    bearer = bearer_challenge(response.header_values("www-authenticate"))
    assert bearer is not None
    assert bearer.scope == ("x", "y")
    assert bearer.error == "insufficient_scope"


@pytest.mark.parametrize(
    ("header", "scope", "error", "description", "metadata"),
    [
        ("Bearer", None, None, None, None),
        ('Bearer scope=""', (), None, None, None),
        ('Bearer scope="files:read  files:write"', ("files:read", "files:write"), None, None, None),
        ('Bearer error="invalid_token", error_description="expired"', None, "invalid_token", "expired", None),
        ('Bearer resource_metadata="https://m/prm"', None, None, None, "https://m/prm"),
    ],
)
def test_bearer_challenge_properties(
    header: str,
    scope: tuple[str, ...] | None,
    error: str | None,
    description: str | None,
    metadata: str | None,
) -> None:
    """D1: scope splits on spaces; error, error_description and resource_metadata are read as given."""
    challenge = bearer_challenge(header)
    assert challenge is not None
    assert (challenge.scope, challenge.error, challenge.error_description, challenge.resource_metadata) == (
        scope,
        error,
        description,
        metadata,
    )


def test_bearer_challenge_is_found_among_other_schemes_in_any_case() -> None:
    """D1: the Bearer challenge is found after other schemes, whatever its case."""
    challenge = bearer_challenge(['Basic realm="x"', 'DPoP algs="ES256", BEARER scope="s"'])
    assert challenge == Challenge("BEARER", (("scope", "s"),))
    assert bearer_challenge("Basic realm=x") is None


@pytest.mark.parametrize(
    "garbage",
    [
        '"',
        "\\",
        "=",
        '="',
        "Bearer =",
        'Bearer ="x"',
        "Bearer realm=",
        "Bearer realm=\\",
        "\u202e\u0000",
        "é" * 50,
    ],
)
def test_garbage_never_raises(garbage: str) -> None:
    """D1: malformed headers never raise; a result is always a tuple of challenges."""
    assert isinstance(parse_www_authenticate(garbage), tuple)


def test_exhaustive_short_inputs_never_raise() -> None:
    """D1: every string of up to four characters from a hostile alphabet parses without raising."""
    alphabet = ' ,="\\=aB\t'
    for length in range(5):
        for chars in itertools.product(alphabet, repeat=length):
            challenges = parse_www_authenticate("".join(chars))
            assert all(isinstance(c, Challenge) for c in challenges)


def test_non_string_values_are_skipped() -> None:
    """D1: values that are not strings (a confused driver) are ignored, not fatal."""
    assert parse_www_authenticate([b"Bearer", "Bearer"]) == (Challenge("Bearer"),)  # type: ignore[list-item]
