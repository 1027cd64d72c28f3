"""``import-ncp``'s pure part: NCP's ``~/.ncp/auth/<key>.json`` files read into an import plan.

The files are written the way NCP writes them (``portel-dev/ncp`` ``src/auth/mcp-oauth-provider.ts``):
``JSON.stringify({clientInfo, tokens, codeVerifier}, null, 2)`` under the first 16 hex digits of the SHA-256
of the configured URL, with the MCP TypeScript SDK's ``OAuthClientInformationFull`` and ``OAuthTokens``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from brokerd import config, oauth
from brokerd.ncp_import import (
    ImportBindError,
    ImportItem,
    ImportPlan,
    NcpImportError,
    default_auth_dir,
    ncp_key,
    parse_file,
    scan,
)
from brokerd.secret import Secret, dec_hook, enc_hook
from brokerd.store import ServerRecord

NOW = 1_900_000_000.0
URL_A = "https://mcp.example.com/api"
URL_B = "https://other.example.org/mcp"
ISSUER = "https://auth.example.com"
TOKEN_ENDPOINT = "https://auth.example.com/token"
SECRETS = ("at-access-0001", "rt-refresh-0002", "cs-client-0003", "cv-verifier-0004", "sk-bearer-0005")

# Derivation of NCP's key (MCPOAuthProvider.createServerKey):
#   createHash('sha256').update(serverUrl).digest('hex').substring(0, 16)
# computed with Node 22 for these exact strings:
#   node -e "const {createHash}=require('crypto');
#            console.log(createHash('sha256').update('https://mcp.example.com/api').digest('hex').substring(0,16))"
#   -> cd6fdadd080b85f7
# and the same with 'https://mcp.example.com/api/' -> 62024eca48922f71 (no normalisation: a trailing slash is
# another file), with 'https://other.example.org/mcp?tenant=ü' -> ea658e0c421348b8 (Node hashes a string as
# UTF-8). Python: hashlib.sha256(url.encode()).hexdigest()[:16] gives the same three values.
NCP_KEYS = [
    ("https://mcp.example.com/api", "cd6fdadd080b85f7"),
    ("https://mcp.example.com/api/", "62024eca48922f71"),
    ("https://other.example.org/mcp?tenant=ü", "ea658e0c421348b8"),
]


@pytest.mark.parametrize(("url", "key"), NCP_KEYS)
def test_ncp_key_matches_nodes_computation(url: str, key: str) -> None:
    assert ncp_key(url) == key
    assert hashlib.sha256(url.encode("utf-8")).hexdigest().startswith(key)


def test_default_auth_dir() -> None:
    assert default_auth_dir(Path("/home/u")) == Path("/home/u/.ncp/auth")


# ---- fixtures in NCP's shape -----------------------------------------------------------------------


def _servers(entries: dict[str, Any]) -> dict[str, config.Server]:
    return config.parse(json.dumps({"mcpServers": entries}).encode()).servers


def _oauth(url: str, **oauth21: Any) -> dict[str, Any]:
    return {"url": url, "auth": {"type": "oauth", "oauth21": oauth21}}


def _client_info(**over: Any) -> dict[str, Any]:
    """What the SDK's registerClient returns for NCP's clientMetadata, as saveClientInformation stores it."""
    info = {
        "redirect_uris": ["http://localhost:9876/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "client_name": "NCP - MCP Aggregator",
        "client_id": "ncp-client-1",
        "client_id_issued_at": 1_899_000_000,
    }
    info.update(over)
    return {k: v for k, v in info.items() if v is not None}


def _tokens(**over: Any) -> dict[str, Any]:
    tokens = {
        "access_token": SECRETS[0],
        "token_type": "bearer",
        "expires_in": 3600,
        "scope": "read write",
        "refresh_token": SECRETS[1],
    }
    tokens.update(over)
    return {k: v for k, v in tokens.items() if v is not None}


def _state(**over: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"clientInfo": _client_info(), "tokens": _tokens(), "codeVerifier": SECRETS[3]}
    state.update(over)
    return {k: v for k, v in state.items() if v is not None}


def _write(auth_dir: Path, name: str, content: bytes | dict[str, Any], *, mtime: float = NOW - 600) -> Path:
    auth_dir.mkdir(parents=True, exist_ok=True)
    path = auth_dir / name
    data = content if isinstance(content, bytes) else json.dumps(content, indent=2).encode()
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def _ncp_file(auth_dir: Path, url: str, content: bytes | dict[str, Any], **kw: float) -> Path:
    return _write(auth_dir, f"{ncp_key(url)}.json", content, **kw)


def _assert_no_secret(plan: ImportPlan) -> None:
    shown = (
        repr(plan) + "".join(s.reason for s in plan.skipped) + "".join(n for i in plan.items for n in i.notes)
    )
    for secret in SECRETS:
        assert secret not in shown


# ---- the matched case ------------------------------------------------------------------------------


def test_matched_server_becomes_an_item(tmp_path: Path) -> None:
    path = _ncp_file(tmp_path, URL_A, _state(), mtime=NOW - 600)
    plan = scan(tmp_path, _servers({"a": _oauth(URL_A)}), now=NOW)

    assert plan.skipped == ()
    assert plan.not_found == ()
    (item,) = plan.items
    assert (item.server, item.server_url, item.path, item.matched_by) == ("a", URL_A, path, URL_A)
    assert item.access_token == Secret(SECRETS[0])
    assert item.refresh_token == Secret(SECRETS[1])
    assert item.obtained_at == NOW - 600  # the file's mtime: NCP records no save time
    assert item.expires_in == 3600
    assert item.expires_at == NOW - 600 + 3600
    assert item.scopes == ("read", "write")
    assert item.issuer_stamp is None
    c = item.client
    assert (c.client_id, c.source, c.client_secret, c.token_endpoint_auth_method) == (
        "ncp-client-1",
        "dynamic",
        None,
        "none",
    )
    assert c.redirect_uris == ("http://localhost:9876/callback",)
    assert c.client_id_issued_at == 1_899_000_000
    assert any("modification time" in n for n in item.notes)
    assert any("new client registration" in n for n in item.notes)  # localhost, not 127.0.0.1
    _assert_no_secret(plan)


def test_tolerated_variants(tmp_path: Path) -> None:
    """expires_in as a numeric string (the SDK's z.coerce.number), unknown keys, a confidential client."""
    state = _state(
        tokens=_tokens(expires_in="7200", id_token="x.y.z", token_type="Bearer"),
        clientInfo=_client_info(
            client_secret=SECRETS[2],
            token_endpoint_auth_method="client_secret_post",
            client_secret_expires_at=0,
        ),
        somethingNew={"k": 1},
    )
    _ncp_file(tmp_path, URL_A, state)
    (item,) = scan(tmp_path, _servers({"a": _oauth(URL_A)}), now=NOW).items
    assert item.expires_in == 7200
    assert item.client.client_secret == Secret(SECRETS[2])
    assert item.client.token_endpoint_auth_method == "client_secret_post"
    assert item.client.client_secret_expires_at is None  # 0: never expires


def test_no_refresh_token_but_still_valid_is_imported_with_a_note(tmp_path: Path) -> None:
    _ncp_file(tmp_path, URL_A, _state(tokens=_tokens(refresh_token=None)), mtime=NOW - 60)
    (item,) = scan(tmp_path, _servers({"a": _oauth(URL_A)}), now=NOW).items
    assert item.refresh_token is None
    assert any("no refresh token" in n for n in item.notes)


def test_expired_with_refresh_token_is_imported(tmp_path: Path) -> None:
    _ncp_file(tmp_path, URL_A, _state(), mtime=NOW - 86_400)
    (item,) = scan(tmp_path, _servers({"a": _oauth(URL_A)}), now=NOW).items
    assert item.expires_at is not None
    assert item.expires_at < NOW


def test_mtime_in_the_future_is_capped_at_now(tmp_path: Path) -> None:
    _ncp_file(tmp_path, URL_A, _state(), mtime=NOW + 5_000)
    (item,) = scan(tmp_path, _servers({"a": _oauth(URL_A)}), now=NOW).items
    assert item.obtained_at == NOW


def test_configured_client_is_the_one_the_tokens_belong_to(tmp_path: Path) -> None:
    """NCP answers clientInformation() from oauth21.clientId when set; the file's clientInfo is unused."""
    _ncp_file(tmp_path, URL_A, _state())
    servers = _servers({"a": _oauth(URL_A, clientId="configured-id", clientSecret=SECRETS[2])})
    (item,) = scan(tmp_path, servers, now=NOW).items
    assert (item.client.client_id, item.client.source) == ("configured-id", "preregistered")
    assert item.client.client_secret == Secret(SECRETS[2])
    assert item.client.token_endpoint_auth_method is None  # chosen from discovery, as the SDK does
    assert any("did not use" in n for n in item.notes)


def test_configured_client_needs_no_client_info(tmp_path: Path) -> None:
    _ncp_file(tmp_path, URL_A, _state(clientInfo=None))
    (item,) = scan(tmp_path, _servers({"a": _oauth(URL_A, clientId="configured-id")}), now=NOW).items
    assert item.client.client_id == "configured-id"


def test_another_spelling_of_the_same_url_matches_and_says_so(tmp_path: Path) -> None:
    _ncp_file(tmp_path, URL_A + "/", _state())
    (item,) = scan(tmp_path, _servers({"a": _oauth(URL_A)}), now=NOW).items
    assert item.matched_by == URL_A + "/"
    assert item.server_url == URL_A


def test_two_configured_servers(tmp_path: Path) -> None:
    _ncp_file(tmp_path, URL_A, _state())
    _ncp_file(tmp_path, URL_B, _state(clientInfo=_client_info(client_id="client-b")))
    servers = _servers({"a": _oauth(URL_A), "b": _oauth(URL_B), "c": _oauth("https://c.example.net/mcp")})
    plan = scan(tmp_path, servers, now=NOW)
    assert {(i.server, i.client.client_id) for i in plan.items} == {("a", "ncp-client-1"), ("b", "client-b")}
    assert plan.skipped == ()
    assert plan.not_found == ("c",)


# ---- what is listed, not imported ------------------------------------------------------------------

SKIP_CASES: list[tuple[str, dict[str, Any], bytes | dict[str, Any], str, str]] = [
    # (id, config entry of "a", file content, kind, words in the reason)
    ("corrupt-json", _oauth(URL_A), b'{"tokens": {"access_token": "at-', "unreadable", "not valid JSON"),
    ("empty-file", _oauth(URL_A), b"", "unreadable", "not valid JSON"),
    ("not-utf8", _oauth(URL_A), b'{"tokens": "\xff"}', "unreadable", "not valid JSON"),
    ("json-array", _oauth(URL_A), b"[]", "unreadable", "not a JSON object"),
    ("wrong-type", _oauth(URL_A), _state(tokens=_tokens(access_token=12345)), "unreadable", "access_token"),
    ("empty-tokens", _oauth(URL_A), _state(tokens={}), "unreadable", "access_token"),
    (
        "bad-expires-in",
        _oauth(URL_A),
        _state(tokens=_tokens(expires_in=SECRETS[4])),
        "unreadable",
        "expires_in is not a number",
    ),
    ("missing-tokens", _oauth(URL_A), _state(tokens=None), "no_grant", "holds no tokens"),
    ("null-tokens", _oauth(URL_A), {"clientInfo": _client_info(), "tokens": None}, "no_grant", "no tokens"),
    (
        "expired-no-refresh",
        _oauth(URL_A),
        _state(tokens=_tokens(refresh_token=None, expires_in=60)),
        "no_grant",
        "expired and there is no refresh token",
    ),
    ("no-client", _oauth(URL_A), _state(clientInfo=None), "unsupported", "without a client registration"),
    (
        "jwt-client",
        _oauth(URL_A),
        _state(clientInfo=_client_info(token_endpoint_auth_method="private_key_jwt")),
        "unsupported",
        "'private_key_jwt'",
    ),
    (
        "secret-method-without-secret",
        _oauth(URL_A),
        _state(clientInfo=_client_info(token_endpoint_auth_method="client_secret_basic")),
        "unsupported",
        "holds no client secret",
    ),
    ("dpop-token", _oauth(URL_A), _state(tokens=_tokens(token_type="DPoP")), "unsupported", "only Bearer"),
    (
        "bearer-server",
        {"url": URL_A, "auth": {"type": "bearer", "token": SECRETS[4]}},
        _state(),
        "not_oauth",
        "static access key",
    ),
    ("no-auth-block", {"url": URL_A}, _state(), "not_oauth", "no auth block"),
]


@pytest.mark.parametrize(
    ("entry", "content", "kind", "words"), [c[1:] for c in SKIP_CASES], ids=[c[0] for c in SKIP_CASES]
)
def test_listed_not_imported(
    tmp_path: Path, entry: dict[str, Any], content: bytes | dict[str, Any], kind: str, words: str
) -> None:
    path = _ncp_file(tmp_path, URL_A, content, mtime=NOW - 600)
    plan = scan(tmp_path, _servers({"a": entry}), now=NOW)
    assert plan.items == ()
    (skipped,) = plan.skipped
    assert (skipped.path, skipped.kind, skipped.server) == (path, kind, "a")
    assert words in skipped.reason
    assert plan.not_found == ()  # the server has a file, even if it cannot be used
    _assert_no_secret(plan)


def test_unmatched_files_are_listed(tmp_path: Path) -> None:
    stray = _ncp_file(tmp_path, "https://gone.example.com/mcp", _state())
    odd = _write(tmp_path, "notes.txt", b"hello")
    upper = _write(tmp_path, ncp_key(URL_A).upper() + ".JSON", _state())
    plan = scan(tmp_path, _servers({"a": _oauth(URL_A)}), now=NOW)
    assert plan.items == ()
    assert plan.not_found == ("a",)
    kinds = {s.path: (s.kind, s.server) for s in plan.skipped}
    assert kinds == {stray: ("unmatched", None), odd: ("unmatched", None), upper: ("unmatched", None)}
    assert "no configured server URL" in next(s.reason for s in plan.skipped if s.path == stray)
    _assert_no_secret(plan)


def test_two_servers_with_one_url_are_ambiguous(tmp_path: Path) -> None:
    path = _ncp_file(tmp_path, URL_A, _state())
    plan = scan(tmp_path, _servers({"a": _oauth(URL_A), "a2": _oauth(URL_A + "/")}), now=NOW)
    assert plan.items == ()
    (skipped,) = plan.skipped
    assert (skipped.path, skipped.kind) == (path, "ambiguous")
    assert "a, a2" in skipped.reason


def test_two_files_for_one_server_are_ambiguous(tmp_path: Path) -> None:
    one = _ncp_file(tmp_path, URL_A, _state())
    two = _ncp_file(tmp_path, URL_A + "/", _state())
    plan = scan(tmp_path, _servers({"a": _oauth(URL_A)}), now=NOW)
    assert plan.items == ()
    assert {(s.path, s.kind, s.server) for s in plan.skipped} == {
        (one, "ambiguous", "a"),
        (two, "ambiguous", "a"),
    }


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = _write(tmp_path / "elsewhere", "x.json", _state())
    auth = tmp_path / "auth"
    auth.mkdir()
    link = auth / f"{ncp_key(URL_A)}.json"
    link.symlink_to(target)
    (skipped,) = scan(auth, _servers({"a": _oauth(URL_A)}), now=NOW).skipped
    assert (skipped.path, skipped.kind) == (link, "unreadable")


def test_a_world_readable_file_gets_a_note(tmp_path: Path) -> None:
    path = _ncp_file(tmp_path, URL_A, _state())
    path.chmod(0o644)  # NCP's writeFile without a mode, under umask 022
    (item,) = scan(tmp_path, _servers({"a": _oauth(URL_A)}), now=NOW).items
    assert any("readable by other users" in n for n in item.notes)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(NcpImportError, match="no such directory"):
        scan(tmp_path / "absent", {}, now=NOW)


def test_parse_file_ignores_the_code_verifier() -> None:
    parsed = parse_file(json.dumps({"codeVerifier": SECRETS[3]}).encode())
    assert (parsed.tokens, parsed.client_info) == (None, None)


# ---- binding to a discovery ------------------------------------------------------------------------


def _discovery(
    *, issuer: str = ISSUER, server_url: str = URL_A, methods: tuple[str, ...] | None = None
) -> oauth.Discovery:
    return oauth.Discovery(
        server_url=server_url,
        resource=server_url,
        issuer=issuer,
        authorization_endpoint=f"{issuer}/authorize",
        token_endpoint=TOKEN_ENDPOINT,
        revocation_endpoint=f"{issuer}/revoke",
        token_endpoint_auth_methods_supported=methods,
    )


def _item(tmp_path: Path, state: dict[str, Any], **oauth21: Any) -> ImportItem:
    _ncp_file(tmp_path, URL_A, state, mtime=NOW - 600)
    (item,) = scan(tmp_path, _servers({"a": _oauth(URL_A, **oauth21)}), now=NOW).items
    return item


def test_bind_binds_the_grant_to_the_discovered_issuer(tmp_path: Path) -> None:
    """The grant and its client are bound to the issuer, endpoints and resource discovery found."""
    tokens, reg = _item(tmp_path, _state()).bind(_discovery())
    assert (tokens.issuer, tokens.client_id, tokens.token_endpoint) == (
        ISSUER,
        "ncp-client-1",
        TOKEN_ENDPOINT,
    )
    assert tokens.access_token == Secret(SECRETS[0])
    assert tokens.refresh_token == Secret(SECRETS[1])
    assert (tokens.obtained_at, tokens.expires_at) == (NOW - 600, NOW + 3000)
    assert tokens.resource == URL_A
    assert tokens.revocation_endpoint == f"{ISSUER}/revoke"
    assert tokens.scopes == ("read", "write")
    assert (reg.issuer, reg.client_id, reg.source, reg.token_endpoint_auth_method, reg.client_secret) == (
        ISSUER,
        "ncp-client-1",
        "dynamic",
        "none",
        None,
    )
    # It survives the store's encoding, secrets included.
    record = ServerRecord(server_url=URL_A, tokens=tokens, registrations={ISSUER: reg})
    data = msgspec.json.encode(record, enc_hook=enc_hook)
    assert msgspec.json.decode(data, type=ServerRecord, dec_hook=dec_hook) == record


@pytest.mark.parametrize(
    ("methods", "expected"),
    [
        (None, "client_secret_basic"),  # RFC 8414 default, as the SDK's selectClientAuthMethod
        (("client_secret_post", "none"), "client_secret_post"),
        (("none",), "none"),
    ],
)
def test_unrecorded_auth_method_is_chosen_from_discovery(
    tmp_path: Path, methods: tuple[str, ...] | None, expected: str
) -> None:
    item = _item(tmp_path, _state(), clientId="configured-id", clientSecret=SECRETS[2])
    _, reg = item.bind(_discovery(methods=methods))
    assert (reg.client_id, reg.source, reg.token_endpoint_auth_method) == (
        "configured-id",
        "preregistered",
        expected,
    )
    assert reg.client_secret == (Secret(SECRETS[2]) if expected != "none" else None)


def test_no_usable_auth_method_is_a_policy_error(tmp_path: Path) -> None:
    item = _item(tmp_path, _state(), clientId="configured-id", clientSecret=SECRETS[2])
    with pytest.raises(oauth.PolicyError):
        item.bind(_discovery(methods=("private_key_jwt",)))


@pytest.mark.parametrize("stamp", [ISSUER, ISSUER + "/", "HTTPS://AUTH.example.com:443/"])
def test_sdk_issuer_stamp_that_matches(tmp_path: Path, stamp: str) -> None:
    """Newer SDKs stamp String(authorizationServerUrl) onto what NCP saves; one slash apart still matches."""
    item = _item(tmp_path, _state(tokens=_tokens(issuer=stamp), clientInfo=_client_info(issuer=stamp)))
    assert item.issuer_stamp == stamp
    assert item.bind(_discovery())[1].issuer == ISSUER


def test_sdk_issuer_stamp_elsewhere_refuses_to_bind(tmp_path: Path) -> None:
    item = _item(tmp_path, _state(tokens=_tokens(issuer="https://old-auth.example.com/")))
    with pytest.raises(ImportBindError, match="old-auth") as err:
        item.bind(_discovery())
    assert SECRETS[1] not in str(err.value)


def test_conflicting_stamps_are_listed(tmp_path: Path) -> None:
    state = _state(tokens=_tokens(issuer=ISSUER), clientInfo=_client_info(issuer="https://x.example.com"))
    _ncp_file(tmp_path, URL_A, state)
    (skipped,) = scan(tmp_path, _servers({"a": _oauth(URL_A)}), now=NOW).skipped
    assert skipped.kind == "unsupported"


def test_discovery_for_another_server_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImportBindError, match="another server"):
        _item(tmp_path, _state()).bind(_discovery(server_url=URL_B))
