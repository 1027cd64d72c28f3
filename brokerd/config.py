"""The config file: NCP's ``mcpServers`` JSON format, so an existing ``~/.ncp/config.json`` works as it is.

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

import ipaddress
import json
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

from brokerd import shape
from brokerd.fsutil import atomic_write
from brokerd.secret import Secret, dec_hook

__all__ = [
    "Config",
    "ConfigError",
    "OAuthSettings",
    "Server",
    "edit_raw",
    "insecure_file_warning",
    "is_loopback_host",
    "load",
    "parse",
]

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


class _OAuth21(msgspec.Struct, forbid_unknown_fields=True, rename="camel", omit_defaults=True):
    scopes: list[str] | None = None
    callback_port: int | None = None
    client_id: str | None = None
    client_secret: Secret | None = None
    client_metadata_url: str | None = None


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
class OAuthSettings:
    scopes: tuple[str, ...] | None
    callback_port: int | None
    client_id: str | None
    client_secret: Secret | None
    client_metadata_url: str | None


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

    def find_by_url(self, url: str) -> Server | None:
        """The brokered server whose URL is ``url``, ignoring a trailing slash and the case of the host."""
        wanted = _url_key(url)
        for server in self.servers.values():
            if server.url and _url_key(server.url) == wanted:
                return server
        return None


def _url_key(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
        o = auth.oauth21
        if o.callback_port is not None and not (0 <= o.callback_port <= 65535):
            raise ConfigError(path, f"{where}.auth.oauth21.callbackPort", "must be a port number 0-65535")
        if o.client_secret is not None and o.client_id is None:
            raise ConfigError(path, f"{where}.auth.oauth21", "clientSecret is given without clientId")
        if o.client_metadata_url is not None:
            cimd = urlsplit(o.client_metadata_url)
            if cimd.scheme != "https" or cimd.path in ("", "/"):
                raise ConfigError(
                    path, f"{where}.auth.oauth21.clientMetadataUrl", "must be an https URL with a path"
                )
        settings = OAuthSettings(
            scopes=tuple(o.scopes) if o.scopes is not None else None,
            callback_port=o.callback_port,
            client_id=o.client_id,
            client_secret=o.client_secret,
            client_metadata_url=o.client_metadata_url,
        )
        return Server(name, "oauth", oauth=settings, **common)
    return Server(name, "none", reason=f'auth type "{auth.type}" is not brokered', **common)


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
