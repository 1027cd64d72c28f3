"""The config file: NCP's ``mcpServers`` JSON format, so NCP's ``~/.ncp/profiles/all.json`` works as it is.

Two layers:

* the *file* layer — msgspec Structs that mirror the JSON. Keys NCP or other tools put in a server entry
  (``command``, ``args``, ``transport``, …) are tolerated; inside our own ``auth`` block an unknown key is an
  error, because a misspelt ``clientSecret`` should not silently start a dynamic registration.
* the *model* layer — :class:`Config` with one :class:`Server` per entry, already checked: every entry is
  either brokered (``bearer`` or ``oauth``) or carries the reason it is not.

Any problem is a :class:`ConfigError` naming the file, the JSON path and what is wrong.
Editing (``add``/``remove``) goes through :func:`edit_raw`, which keeps every key it does not understand.
"""

from __future__ import annotations

import dataclasses
import json
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec

from brokerd import shape
from brokerd.fsutil import atomic_write
from brokerd.oauth import canonical_url, is_loopback_host
from brokerd.secret import Secret, dec_hook

__all__ = [
    "Config",
    "ConfigError",
    "EnterpriseSettings",
    "Grant",
    "KeySource",
    "OAuthSettings",
    "Server",
    "TokenSource",
    "differences",
    "edit_raw",
    "insecure_file_warning",
    "load",
    "parse",
]

_C = TypeVar("_C", bound=str)

DEFAULT_CALLBACK_PORT = 9876  # NCP's default, so existing registrations keep matching


class ConfigError(Exception):
    """The config file cannot be used. The message names the file, the JSON path and the problem."""

    def __init__(self, path: Path | None, where: str, problem: str) -> None:
        self.path = path
        self.where = where
        self.problem = problem
        place = str(path) if path else "<config>"
        at = f" at {where}" if where else ""
        super().__init__(f"{place}{at}: {problem}")


# ---- file layer -----------------------------------------------------------------------------------


GrantType = Literal["authorization_code", "client_credentials", "jwt_bearer"]
AuthMethod = Literal["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]
DpopSetting = Literal["auto", "required", "off"]
_GRANTS: tuple[GrantType, ...] = ("authorization_code", "client_credentials", "jwt_bearer")
_AUTH_METHODS: tuple[AuthMethod, ...] = (
    "none",
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
)
_DPOP: tuple[DpopSetting, ...] = ("auto", "required", "off")


class _Source(msgspec.Struct, forbid_unknown_fields=True, rename="camel", omit_defaults=True):
    # Where a credential is read from; which of the three a key allows is checked in _source().
    file: str | None = None
    command: list[str] | None = None
    keyring: str | None = None


class _Enterprise(msgspec.Struct, forbid_unknown_fields=True, rename="camel", omit_defaults=True):
    issuer: str
    client_id: str
    client_secret: Secret | None = None
    id_token: _Source | None = None
    scopes: list[str] | None = None


class _OAuth21(msgspec.Struct, forbid_unknown_fields=True, rename="camel", omit_defaults=True):
    scopes: list[str] | None = None
    callback_port: int | None = None
    client_id: str | None = None
    client_secret: Secret | None = None
    client_metadata_url: str | None = None
    # Plain strings, checked in _oauth_settings, so that a wrong value is answered with the right ones.
    grant: str | None = None
    token_endpoint_auth_method: str | None = None
    private_key: _Source | None = None
    workload_token: _Source | None = None
    enterprise: _Enterprise | None = None
    dpop: str = "auto"


class _Auth(msgspec.Struct, forbid_unknown_fields=True, rename="camel", omit_defaults=True):
    type: Literal["oauth", "bearer", "apiKey", "basic"]
    oauth21: _OAuth21 | None = None
    # NCP's legacy device-flow block; accepted so NCP configs load, reported as not brokered.
    oauth: dict[str, Any] | None = None
    token: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    allow_insecure_loopback: bool = False
    allow_private_network: bool = False


class _Entry(msgspec.Struct, rename="camel"):
    url: str | None = None
    command: str | None = None
    auth: _Auth | None = None


# ---- model layer ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenSource:
    """Where a token that someone else issues is read, each time it is needed: ``file`` (re-read when it
    changes; a workload's projected token, an ID token a sign-in helper keeps) or ``command`` (an argv run
    without a shell; its standard output, stripped, is the token)."""

    file: Path | None = None
    command: tuple[str, ...] | None = None


@dataclass(frozen=True)
class KeySource:
    """Where the client's private key for ``private_key_jwt`` is: ``file`` (PEM, mode 0600, checked when
    it is read: ``brokerd.keys.load_key_file``) or ``keyring`` (the name of an entry of service
    ``ncp-broker`` holding the PEM text)."""

    file: Path | None = None
    keyring: str | None = None


@dataclass(frozen=True)
class EnterpriseSettings:
    """The enterprise IdP of SEP-990 (E2): its ``issuer``, this client's registration there
    (``client_id``, ``client_secret``), the ``scopes`` of the login there (``openid`` at least), and
    optionally ``id_token``: a source of ID tokens that replaces logging in at the IdP."""

    issuer: str
    client_id: str
    client_secret: Secret | None = None
    id_token: TokenSource | None = None
    scopes: tuple[str, ...] = ("openid",)


@dataclass(frozen=True)
class OAuthSettings:
    """An ``oauth21`` block, checked. ``grant`` is how tokens are had: ``authorization_code`` (a person logs
    in; the default), ``client_credentials`` (E1) or ``jwt_bearer`` with ``workload_token`` (E4) or
    ``enterprise`` (E2). ``dpop`` is when to bind tokens to a key (E3, ``brokerd.oauth.wants_dpop``)."""

    scopes: tuple[str, ...] | None
    callback_port: int | None
    client_id: str | None
    client_secret: Secret | None
    client_metadata_url: str | None
    grant: GrantType = "authorization_code"
    token_endpoint_auth_method: AuthMethod | None = None
    private_key: KeySource | None = None
    workload_token: TokenSource | None = None
    enterprise: EnterpriseSettings | None = None
    dpop: DpopSetting = "auto"


@dataclass(frozen=True)
class Server:
    """One ``mcpServers`` entry as the daemon sees it.

    ``kind`` is ``bearer`` (a static access key), ``oauth``, or ``none`` when the entry is listed but not
    brokered (a stdio server, an auth type we do not broker); ``reason`` then says why.
    """

    name: str
    kind: Literal["bearer", "oauth", "none"]
    url: str | None = None
    reason: str = ""
    access_key: Secret | None = None  # a key written inline in the config (NCP's ``auth.token``)
    oauth: OAuthSettings | None = None
    allow_insecure_loopback: bool = False
    allow_private_network: bool = False


@dataclass(frozen=True)
class Config:
    path: Path | None
    servers: dict[str, Server] = field(default_factory=dict)
    store: Literal["auto", "file", "keyring"] = "auto"

    def find_by_url(self, url: str) -> list[Server]:
        """The entries whose URL names the same server as ``url`` (:func:`brokerd.oauth.canonical_url`), in
        config order; empty for a URL that is not absolute."""
        try:
            wanted = canonical_url(url)
        except ValueError:
            return []
        return [s for s in self.servers.values() if s.url and canonical_url(s.url) == wanted]

    def grants(self) -> list[Grant]:
        """The brokered entries grouped by the server they name: one :class:`Grant` per canonical URL, in
        config order (DESIGN rule 11). Entries that are not brokered are not grouped."""
        groups: dict[str, list[Server]] = {}
        for server in self.servers.values():
            if server.kind != "none" and server.url is not None:
                groups.setdefault(canonical_url(server.url), []).append(server)
        return [Grant(key, tuple(members)) for key, members in groups.items()]


@dataclass(frozen=True)
class Grant:
    """The config entries that name one server: aliases of one grant.

    ``conflicts`` lists the settings (as config keys) in which the entries disagree; when there are any,
    the daemon refuses every one of these entries, since one grant cannot follow two sets of settings.
    """

    key: str
    members: tuple[Server, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    @property
    def conflicts(self) -> tuple[str, ...]:
        first = self.members[0]
        found: dict[str, None] = {}
        for other in self.members[1:]:
            found.update(dict.fromkeys(differences(first, other)))
        return tuple(found)


#: Where each setting of a :class:`Server` sits in a config entry, for messages about aliases that disagree.
_SETTING_KEYS = {
    "kind": "auth.type",
    "access_key": "auth.token",
    "allow_insecure_loopback": "auth.allowInsecureLoopback",
    "allow_private_network": "auth.allowPrivateNetwork",
}


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


def differences(a: Server, b: Server) -> list[str]:
    """The config keys whose values differ between entries ``a`` and ``b`` (names and URL spellings aside):
    every setting of :class:`Server` and every key of ``oauth21`` (:class:`OAuthSettings`).

    A secret is compared, never shown: the key names it, not the value.
    """
    keys = [key for name, key in _SETTING_KEYS.items() if getattr(a, name) != getattr(b, name)]
    if a.oauth is not None and b.oauth is not None:
        keys += [
            f"auth.oauth21.{_camel(f.name)}"
            for f in dataclasses.fields(OAuthSettings)
            if getattr(a.oauth, f.name) != getattr(b.oauth, f.name)
        ]
    return keys


_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")


def _check_url(path: Path | None, where: str, url: str, *, allow_insecure_loopback: bool) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise ConfigError(path, where, f"not a valid URL ({exc})") from None
    if parts.username or parts.password:
        raise ConfigError(path, where, "credentials inside the URL are not allowed; use the auth block")
    # Errors show the URL without its query: a key passed as ?key=… must not reach a log line.
    shown = repr(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(path, where, f"{shown} is not an http(s) URL")
    if parts.scheme == "http":
        if not is_loopback_host(host):
            raise ConfigError(path, where, f"{shown} uses plain http; use https")
        if not allow_insecure_loopback:
            raise ConfigError(
                path,
                where,
                f"{shown} uses plain http; set auth.allowInsecureLoopback to true for a local test server",
            )


def _server(path: Path | None, name: str, entry: _Entry) -> Server:
    where = f"$.mcpServers[{json.dumps(name)}]"
    if not _NAME_RE.match(name):
        raise ConfigError(path, where, "server names must be 1-200 characters without control characters")
    if entry.url is None:
        what = "a stdio server (command)" if entry.command else "no url"
        return Server(name, "none", reason=f"{what}; only remote servers are brokered")
    auth = entry.auth
    insecure = bool(auth and auth.allow_insecure_loopback)
    _check_url(path, f"{where}.url", entry.url, allow_insecure_loopback=insecure)
    if auth is None:
        return Server(name, "none", url=entry.url, reason="no auth block; nothing to broker")
    common: dict[str, Any] = {
        "url": entry.url,
        "allow_insecure_loopback": auth.allow_insecure_loopback,
        "allow_private_network": auth.allow_private_network,
    }
    if auth.type == "bearer":
        return Server(name, "bearer", access_key=auth.token, **common)
    if auth.type == "oauth":
        if auth.oauth21 is None:
            if auth.oauth is not None:
                return Server(
                    name, "none", reason="NCP's legacy device-flow 'oauth' block; use 'oauth21'", **common
                )
            raise ConfigError(path, f"{where}.auth", 'type "oauth" needs an "oauth21" block ({} is enough)')
        settings = _oauth_settings(path, f"{where}.auth.oauth21", auth.oauth21, insecure)
        return Server(name, "oauth", oauth=settings, **common)
    return Server(name, "none", reason=f'auth type "{auth.type}" is not brokered', **common)


def _oauth_settings(path: Path | None, where: str, o: _OAuth21, insecure: bool) -> OAuthSettings:
    """The checked ``oauth21`` block. The grant follows from the keys when not given: ``workloadToken`` or
    ``enterprise`` mean ``jwt_bearer``; otherwise ``authorization_code``."""
    if o.callback_port is not None and not (0 <= o.callback_port <= 65535):
        raise ConfigError(path, f"{where}.callbackPort", "must be a port number 0-65535")
    if o.client_secret is not None and o.client_id is None:
        raise ConfigError(path, where, "clientSecret is given without clientId")
    if o.client_metadata_url is not None:
        cimd = urlsplit(o.client_metadata_url)
        if cimd.scheme != "https" or cimd.path in ("", "/"):
            raise ConfigError(path, f"{where}.clientMetadataUrl", "must be an https URL with a path")
    if o.workload_token is not None and o.enterprise is not None:
        raise ConfigError(
            path, where, "give workloadToken or enterprise, not both: each is a jwt_bearer assertion"
        )
    given_grant = _choice(path, f"{where}.grant", o.grant, _GRANTS)
    method = _choice(path, f"{where}.tokenEndpointAuthMethod", o.token_endpoint_auth_method, _AUTH_METHODS)
    dpop = _choice(path, f"{where}.dpop", o.dpop, _DPOP) or "auto"
    inferred: GrantType = "jwt_bearer" if (o.workload_token or o.enterprise) else "authorization_code"
    grant = given_grant or inferred
    if grant == "jwt_bearer" and inferred != "jwt_bearer":
        raise ConfigError(
            path, f"{where}.grant", '"jwt_bearer" needs workloadToken or enterprise (the assertion)'
        )
    if grant != "jwt_bearer" and inferred == "jwt_bearer":
        given = "workloadToken" if o.workload_token else "enterprise"
        raise ConfigError(path, f"{where}.{given}", f'is used only with grant "jwt_bearer", not "{grant}"')
    if grant != "authorization_code":
        for key, value in (("callbackPort", o.callback_port), ("clientMetadataUrl", o.client_metadata_url)):
            if value is not None:
                raise ConfigError(
                    path, f"{where}.{key}", f'has no use with grant "{grant}": no browser is involved'
                )
    if grant == "client_credentials" and (
        o.client_id is None or (o.client_secret is None and o.private_key is None)
    ):
        raise ConfigError(
            path,
            where,
            'grant "client_credentials" needs clientId, and clientSecret or privateKey',
        )
    if o.enterprise is not None and o.client_id is None:
        # SEP-990 §6.1: the IdP puts this client's ID at the MCP server's AS into the ID-JAG.
        raise ConfigError(
            path,
            where,
            "enterprise needs clientId: this client's ID at the MCP server's authorization server",
        )
    _check_client_auth(path, where, o)
    return OAuthSettings(
        scopes=tuple(o.scopes) if o.scopes is not None else None,
        callback_port=o.callback_port,
        client_id=o.client_id,
        client_secret=o.client_secret,
        client_metadata_url=o.client_metadata_url,
        grant=grant,
        token_endpoint_auth_method=method,
        private_key=_key_source(path, f"{where}.privateKey", o.private_key),
        workload_token=_token_source(path, f"{where}.workloadToken", o.workload_token),
        enterprise=_enterprise(path, f"{where}.enterprise", o.enterprise, insecure),
        dpop=dpop,
    )


def _choice(path: Path | None, where: str, value: str | None, allowed: tuple[_C, ...]) -> _C | None:
    if value is None:
        return None
    for option in allowed:
        if value == option:
            return option
    names = ", ".join(f'"{a}"' for a in allowed[:-1]) + f' or "{allowed[-1]}"'
    raise ConfigError(path, where, f"must be {names}, not {json.dumps(value)[:60]}")


def _check_client_auth(path: Path | None, where: str, o: _OAuth21) -> None:
    if o.private_key is not None and o.client_id is None:
        raise ConfigError(path, where, "privateKey is given without clientId")
    if o.private_key is not None and o.client_secret is not None:
        raise ConfigError(path, where, "give clientSecret or privateKey, not both")
    method = o.token_endpoint_auth_method
    if method is None:
        return
    at = f"{where}.tokenEndpointAuthMethod"
    if o.client_id is None:
        raise ConfigError(path, at, "is given without clientId")
    if method == "private_key_jwt" and o.private_key is None:
        raise ConfigError(path, at, '"private_key_jwt" needs privateKey')
    if method != "private_key_jwt" and o.private_key is not None:
        raise ConfigError(path, at, f'is "{method}", but privateKey is given (that means "private_key_jwt")')
    if method in ("client_secret_basic", "client_secret_post") and o.client_secret is None:
        raise ConfigError(path, at, f'"{method}" needs clientSecret')
    if method == "none" and o.client_secret is not None:
        raise ConfigError(path, at, 'is "none", but clientSecret is given')


def _file_path(path: Path | None, where: str, value: str) -> Path:
    if not value or "\x00" in value:
        raise ConfigError(path, where, "must be a file path")
    file = Path(value)
    if not (file.is_absolute() or value.startswith("~")):
        raise ConfigError(path, where, f"{value!r} must be an absolute path (or start with ~)")
    return file


def _only(path: Path | None, where: str, source: _Source, allowed: tuple[str, ...]) -> str:
    given = [name for name in ("file", "command", "keyring") if getattr(source, name) is not None]
    names = " or ".join(f'"{a}"' for a in allowed)
    if len(given) != 1 or given[0] not in allowed:
        raise ConfigError(path, where, f"must have exactly one of {names}")
    return given[0]


def _token_source(path: Path | None, where: str, source: _Source | None) -> TokenSource | None:
    if source is None:
        return None
    if _only(path, where, source, ("file", "command")) == "file":
        return TokenSource(file=_file_path(path, f"{where}.file", source.file or ""))
    command = source.command or []
    if not command or not all(isinstance(a, str) and a and "\x00" not in a for a in command):
        raise ConfigError(path, f"{where}.command", "must be a non-empty list of program and arguments")
    return TokenSource(command=tuple(command))


def _key_source(path: Path | None, where: str, source: _Source | None) -> KeySource | None:
    if source is None:
        return None
    if _only(path, where, source, ("file", "keyring")) == "file":
        return KeySource(file=_file_path(path, f"{where}.file", source.file or ""))
    name = source.keyring or ""
    if not _NAME_RE.match(name):
        raise ConfigError(path, f"{where}.keyring", "must be a keyring entry name (1-200 characters)")
    return KeySource(keyring=name)


def _enterprise(
    path: Path | None, where: str, e: _Enterprise | None, insecure: bool
) -> EnterpriseSettings | None:
    if e is None:
        return None
    _check_url(path, f"{where}.issuer", e.issuer, allow_insecure_loopback=insecure)
    scopes = tuple(e.scopes) if e.scopes is not None else ("openid",)
    if "openid" not in scopes and e.id_token is None:
        raise ConfigError(
            path, f"{where}.scopes", 'must include "openid": the login there is for an ID token'
        )
    return EnterpriseSettings(
        issuer=e.issuer,
        client_id=e.client_id,
        client_secret=e.client_secret,
        id_token=_token_source(path, f"{where}.idToken", e.id_token),
        scopes=scopes,
    )


def _convert(path: Path | None, where: str, obj: Any, type_: type[Any]) -> Any:
    # The shape is judged by brokerd.shape, in our words; msgspec then only builds the Structs.
    found = shape.problem(obj, type_, where, quote_values=True)
    if found is not None:
        raise ConfigError(path, found.where, found.what)
    try:
        return msgspec.convert(obj, type_, dec_hook=dec_hook, str_keys=True)
    except msgspec.ValidationError as exc:  # brokerd.shape let through what msgspec refuses: a bug of ours
        raise ConfigError(path, where, f"does not fit the config format ({exc})") from None


class _TopLevel(msgspec.Struct, rename="camel"):
    mcp_servers: dict[str, Any] = msgspec.field(default_factory=dict)
    store: Literal["auto", "file", "keyring"] = "auto"


class _NotJson(ValueError):
    """A number JSON does not have (``NaN``, ``Infinity``), which :func:`json.loads` would accept."""


def _refuse_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON number")


def _decode_json(data: bytes, path: Path | None) -> Any:
    """``data`` as UTF-8 JSON, with the standard library.

    Raises:
        ConfigError: not UTF-8, not JSON (with line and column), nested too deeply, or text that is not
            Unicode (an unpaired UTF-16 surrogate escape such as ``"\\ud800"``).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            path, "", f"not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start})"
        ) from None
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        # Our verdict and position; the standard library's few words (stable since Python 3.5) say what.
        raise ConfigError(
            path, "", f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except _NotJson as exc:
        raise ConfigError(path, "", f"not valid JSON: {exc}") from None
    except ValueError:  # int() refuses numbers of more than sys.get_int_max_str_digits() digits
        raise ConfigError(path, "", "not valid JSON: a number has too many digits") from None
    except RecursionError:
        raise ConfigError(path, "", "nested too deeply") from None
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            path, "", "a \\u escape is half of a UTF-16 surrogate pair; the text is not Unicode"
        ) from None
    return obj


def parse(data: bytes, path: Path | None = None) -> Config:
    """Parse and check a config document.

    We decide every verdict and word every message ourselves, so that they do not change with msgspec's
    releases: the bytes are decoded as UTF-8 and parsed as JSON by the standard library, the shape is
    judged by :mod:`brokerd.shape`, and msgspec only builds the Structs from a document already checked.

    Raises:
        ConfigError: not UTF-8, not JSON, a wrong type, an unknown key inside ``auth``, a bad URL, ….
    """
    obj = _decode_json(data, path)
    top: _TopLevel = _convert(path, "$", obj, _TopLevel)
    servers = {}
    for name, raw_entry in top.mcp_servers.items():
        where = f"$.mcpServers[{json.dumps(name)}]"
        entry: _Entry = _convert(path, where, raw_entry, _Entry)
        servers[name] = _server(path, name, entry)
    return Config(path=path, servers=servers, store=top.store)


def load(path: Path) -> Config:
    """Read and parse the config file; a missing file is an empty config.

    Raises:
        ConfigError: the file cannot be read or parsed.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Config(path=path)
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    return parse(data, path)


def edit_raw(path: Path, change: Callable[[dict[str, Any]], None]) -> Config:
    """Apply ``change`` to the config's raw JSON and write it back atomically, keeping unknown keys.

    The result is parsed before it is written, so an edit can never leave a config the daemon rejects.
    The file keeps its mode if it exists, else is created 0600 (it may hold client secrets).

    Raises:
        ConfigError: the current file is unreadable, or the edited document does not parse.
    """
    try:
        raw: Any = json.loads(path.read_bytes())
    except FileNotFoundError:
        raw = {}
    except (OSError, ValueError) as exc:
        raise ConfigError(path, "", f"cannot edit: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(path, "$", "the config must be a JSON object")
    raw.setdefault("mcpServers", {})
    if not isinstance(raw["mcpServers"], dict):
        raise ConfigError(path, "$.mcpServers", "must be an object")
    change(raw)
    data = (json.dumps(raw, indent=2, ensure_ascii=False) + "\n").encode()
    config = parse(data, path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o600
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, data, mode=mode)
    return config


def insecure_file_warning(path: Path) -> str | None:
    """A warning when the config holds secrets but other users can read it."""
    try:
        st = path.stat()
        if not st.st_mode & 0o077:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if b'"clientSecret"' in data or b'"token"' in data or b'"password"' in data:
        return f"{path} holds secrets and is readable by other users; run: chmod 600 {path}"
    return None
