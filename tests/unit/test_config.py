"""The config file: NCP's format accepted as is, every mistake named by file and JSON path."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from brokerd import config
from brokerd.secret import Secret

NCP_EXAMPLE = {
    "mcpServers": {
        "my-oauth-mcp": {
            "url": "https://mcp.example.com/api",
            "auth": {"type": "oauth", "oauth21": {"scopes": ["read", "write"], "callbackPort": 9876}},
        },
        "minimal": {"url": "https://m.example.com/mcp", "auth": {"type": "oauth", "oauth21": {}}},
        "canva": {"url": "https://mcp.canva.com/mcp", "auth": {"type": "bearer", "token": "tok"}},
        "filesystem": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-filesystem"],
            "env": {},
        },
        "legacy": {"url": "https://l.example.com/mcp", "auth": {"type": "oauth", "oauth": {"clientId": "x"}}},
        "basic": {
            "url": "https://b.example.com/mcp",
            "auth": {"type": "basic", "username": "u", "password": "p"},
        },
        "sse": {"url": "https://s.example.com/sse", "transport": "sse"},
    },
    "someNcpSetting": {"anything": True},
}


def test_ncp_config_loads_unchanged() -> None:
    """An NCP config with stdio, oauth, bearer, basic and legacy entries loads; each entry is classified."""
    cfg = config.parse(json.dumps(NCP_EXAMPLE).encode())
    kinds = {name: s.kind for name, s in cfg.servers.items()}
    assert kinds == {
        "my-oauth-mcp": "oauth",
        "minimal": "oauth",
        "canva": "bearer",
        "filesystem": "none",
        "legacy": "none",
        "basic": "none",
        "sse": "none",
    }
    oauth = cfg.servers["my-oauth-mcp"].oauth
    assert oauth is not None
    assert oauth.scopes == ("read", "write")
    assert oauth.callback_port == 9876
    assert cfg.servers["canva"].access_key == Secret("tok")
    assert "stdio" in cfg.servers["filesystem"].reason
    assert "oauth21" in cfg.servers["legacy"].reason


BAD: list[tuple[str, Any, str, str]] = [
    ("invalid json", b"{", "", "not valid JSON at line 1, column 2"),
    ("invalid json on a later line", b'{\n  "mcpServers": {,}\n}', "", "not valid JSON at line 2, column 18"),
    ("NaN", b'{"mcpServers": {}, "x": NaN}', "", "not valid JSON: NaN is not a JSON number"),
    ("huge number", b'{"x": ' + b"1" * 5000 + b"}", "", "not valid JSON: a number has too many digits"),
    ("not an object", [], "$", "expected an object, not a list"),
    ("servers not an object", {"mcpServers": []}, "$.mcpServers", "expected an object, not a list"),
    (
        "wrong type",
        {"mcpServers": {"a": {"url": 5}}},
        '$.mcpServers["a"].url',
        "expected a string or null, not an integer",
    ),
    (
        "typo inside auth",
        {
            "mcpServers": {
                "a": {"url": "https://x/", "auth": {"type": "oauth", "oauth21": {"clientSecrt": "x"}}}
            }
        },
        '$.mcpServers["a"].auth.oauth21',
        'unknown key "clientSecrt" (known keys: scopes, callbackPort, clientId, clientSecret, '
        "clientMetadataUrl, grant, tokenEndpointAuthMethod, privateKey, workloadToken, enterprise, dpop)",
    ),
    (
        "unknown auth key",
        {"mcpServers": {"a": {"url": "https://x/", "auth": {"type": "bearer", "tokn": "x"}}}},
        '$.mcpServers["a"].auth',
        'unknown key "tokn"',
    ),
    (
        "unknown auth type",
        {"mcpServers": {"a": {"url": "https://x/", "auth": {"type": "magic"}}}},
        '$.mcpServers["a"].auth.type',
        'expected one of "apiKey", "basic", "bearer", "oauth", not "magic"',
    ),
    (
        "non-http url",
        {"mcpServers": {"a": {"url": "ftp://x/"}}},
        '$.mcpServers["a"].url',
        "not an http(s) URL",
    ),
    (
        "javascript url",
        {"mcpServers": {"a": {"url": "javascript:alert(1)"}}},
        '$.mcpServers["a"].url',
        "not an http",
    ),
    (
        "http remote",
        {"mcpServers": {"a": {"url": "http://example.com/mcp"}}},
        '$.mcpServers["a"].url',
        "use https",
    ),
    (
        "http loopback without switch",
        {"mcpServers": {"a": {"url": "http://127.0.0.1:8000/mcp", "auth": {"type": "bearer"}}}},
        '$.mcpServers["a"].url',
        "allowInsecureLoopback",
    ),
    (
        "userinfo",
        {"mcpServers": {"a": {"url": "https://u:p@x/"}}},
        '$.mcpServers["a"].url',
        "credentials inside",
    ),
    (
        "bad port",
        {"mcpServers": {"a": {"url": "https://x:99999/"}}},
        '$.mcpServers["a"].url',
        "not a valid URL",
    ),
    (
        "oauth without oauth21",
        {"mcpServers": {"a": {"url": "https://x/", "auth": {"type": "oauth"}}}},
        '$.mcpServers["a"].auth',
        'needs an "oauth21" block',
    ),
    (
        "callback port range",
        {
            "mcpServers": {
                "a": {"url": "https://x/", "auth": {"type": "oauth", "oauth21": {"callbackPort": 70000}}}
            }
        },
        '$.mcpServers["a"].auth.oauth21.callbackPort',
        "port number",
    ),
    (
        "secret without id",
        {
            "mcpServers": {
                "a": {"url": "https://x/", "auth": {"type": "oauth", "oauth21": {"clientSecret": "s"}}}
            }
        },
        '$.mcpServers["a"].auth.oauth21',
        "without clientId",
    ),
    (
        "metadata url not https",
        {
            "mcpServers": {
                "a": {
                    "url": "https://x/",
                    "auth": {"type": "oauth", "oauth21": {"clientMetadataUrl": "http://c.example/c.json"}},
                }
            }
        },
        '$.mcpServers["a"].auth.oauth21.clientMetadataUrl',
        "https URL with a path",
    ),
    ("store choice", {"store": "vault"}, "$.store", 'expected one of "auto", "file", "keyring", not "vault"'),
    (
        "bool where a string belongs",
        {"mcpServers": {"a": {"url": "https://x/", "auth": {"type": "bearer", "token": True}}}},
        '$.mcpServers["a"].auth.token',
        "expected a string or null, not true or false",
    ),
    (
        "missing auth type",
        {"mcpServers": {"a": {"url": "https://x/", "auth": {}}}},
        '$.mcpServers["a"].auth',
        'missing the required key "type"',
    ),
    (
        "scope not a string",
        {
            "mcpServers": {
                "a": {"url": "https://x/", "auth": {"type": "oauth", "oauth21": {"scopes": ["a", 1]}}}
            }
        },
        '$.mcpServers["a"].auth.oauth21.scopes[1]',
        "expected a string, not an integer",
    ),
    (
        "port far out of range",
        {
            "mcpServers": {
                "a": {"url": "https://x/", "auth": {"type": "oauth", "oauth21": {"callbackPort": 2**70}}}
            }
        },
        '$.mcpServers["a"].auth.oauth21.callbackPort',
        "port number",
    ),
    (
        "bad utf-8 in a string",
        b'{"mcpServers": {"\xff": {}}}',
        "",
        "not valid UTF-8 (byte 0xff at offset 17)",
    ),
    ("lone surrogate escape", b'{"mcpServers": {"\\ud800": {}}}', "", "half of a UTF-16 surrogate pair"),
    ("deep nesting", b'{"x":' + b"[" * 50000 + b"]" * 50000 + b"}", "", "nested too deeply"),
    ("control char name", {"mcpServers": {"a\nb": {"url": "https://x/"}}}, "$.mcpServers[", "server names"),
]


@pytest.mark.parametrize(("label", "doc", "where", "problem"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_file_path_and_problem(
    tmp_path: Path, label: str, doc: Any, where: str, problem: str
) -> None:
    """Each kind of bad config is refused with the file, the JSON path and what is wrong."""
    path = tmp_path / "config.json"
    path.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert err.value.path == path
    assert err.value.where.startswith(where)
    assert problem in err.value.problem
    assert str(path) in str(err.value)


def test_secret_values_never_appear_in_config_errors(tmp_path: Path) -> None:
    """A config error next to a secret does not quote the secret."""
    path = tmp_path / "c.json"
    doc = {"mcpServers": {"a": {"url": "ftp://x/", "auth": {"type": "bearer", "token": "TOPSECRET"}}}}
    path.write_text(json.dumps(doc))
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert "TOPSECRET" not in str(err.value)
    assert "TOPSECRET" not in repr(
        config.parse(json.dumps(NCP_EXAMPLE).encode().replace(b'"tok"', b'"TOPSECRET"'))
    )


def test_missing_file_is_an_empty_config(tmp_path: Path) -> None:
    """No config file yet means no servers, not an error."""
    assert config.load(tmp_path / "nope.json").servers == {}


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    """A directory (or unreadable file) where the config should be is reported with its path."""
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(tmp_path)


def test_edit_keeps_unknown_keys_and_creates_0600(tmp_path: Path) -> None:
    """Editing keeps keys we do not understand and creates a new file 0600 whatever the umask."""
    path = tmp_path / "sub" / "config.json"
    old = os.umask(0)
    try:
        config.edit_raw(
            path, lambda raw: raw["mcpServers"].update({"a": {"url": "https://a/", "x-extra": 1}})
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text(json.dumps({**NCP_EXAMPLE, "mcpServers": {"a": {"url": "https://a/", "x-extra": 1}}}))
    config.edit_raw(path, lambda raw: raw["mcpServers"].update({"b": {"url": "https://b/"}}))
    raw = json.loads(path.read_text())
    assert raw["someNcpSetting"] == {"anything": True}
    assert raw["mcpServers"]["a"]["x-extra"] == 1
    assert set(raw["mcpServers"]) == {"a", "b"}


def test_edit_refuses_to_write_a_config_that_does_not_parse(tmp_path: Path) -> None:
    """An edit that would produce a bad config is refused and the file is untouched."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"mcpServers": {}}))
    before = path.read_bytes()
    with pytest.raises(config.ConfigError):
        config.edit_raw(path, lambda raw: raw["mcpServers"].update({"a": {"url": "ftp://a/"}}))
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("url", "found"),
    [
        ("https://MCP.example.com/api/", "my-oauth-mcp"),
        ("https://mcp.example.com/api", "my-oauth-mcp"),
        ("https://mcp.example.com:443/api#x", "my-oauth-mcp"),
        ("https://mcp.example.com/other", None),
        ("not a url", None),
    ],
)
def test_find_by_url_ignores_trailing_slash_and_host_case(url: str, found: str | None) -> None:
    """Header-helper hosts may pass the URL with another case, a trailing slash or the default port."""
    cfg = config.parse(json.dumps(NCP_EXAMPLE).encode())
    assert [s.name for s in cfg.find_by_url(url)] == ([found] if found else [])


def test_insecure_config_with_secrets_is_warned_about(tmp_path: Path) -> None:
    """A world-readable config that holds a secret produces a warning with the chmod command."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(NCP_EXAMPLE))
    path.chmod(0o644)
    warning = config.insecure_file_warning(path)
    assert warning is not None
    assert f"chmod 600 {path}" in warning
    path.chmod(0o600)
    assert config.insecure_file_warning(path) is None


def test_alias_differences_name_every_setting_by_its_config_key() -> None:
    """Two entries for one server are compared on every setting, each named by its key in the file, and a
    differing secret is named without its value (rule 11)."""
    entry = {
        "url": "https://mcp.example.com/api",
        "auth": {
            "type": "oauth",
            "oauth21": {"scopes": ["a"], "clientId": "c", "clientSecret": "s1", "dpop": "off"},
        },
    }
    other = json.loads(json.dumps(entry))
    other["url"] = "https://MCP.example.com:443/api/"
    other["auth"]["oauth21"].update({"clientSecret": "s2", "dpop": "required", "callbackPort": 9000})
    cfg = config.parse(json.dumps({"mcpServers": {"a": entry, "b": other}}).encode())
    (grant,) = cfg.grants()
    assert grant.names == ("a", "b")
    assert grant.conflicts == (
        "auth.oauth21.callbackPort",
        "auth.oauth21.clientSecret",
        "auth.oauth21.dpop",
    )
    same = config.parse(
        json.dumps({"mcpServers": {"a": entry, "b": {**entry, "url": other["url"]}}}).encode()
    )
    assert [g.conflicts for g in same.grants()] == [()]
