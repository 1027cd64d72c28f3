"""``ncp-broker import-ncp``: NCP's per-server OAuth files, read into an import plan (issue 5, item 5).

This module only reads files and computes; it opens no socket and runs no event loop. The daemon applies a
plan (see "Applying a plan" below).

NCP's format
------------
Source: ``portel-dev/ncp``, ``src/auth/mcp-oauth-provider.ts`` (class ``MCPOAuthProvider``, commit
5364bcf59306c56c715466d99efc6b5fdd593317), wired up as described in ``docs/OAUTH-IMPLEMENTATION.md`` of the
same repository (``createMCPOAuthProvider({serverUrl: config.url!, …})``)::

    storageDir: config.storageDir || join(homedir(), '.ncp', 'auth')
    createServerKey(serverUrl) = createHash('sha256').update(serverUrl).digest('hex').substring(0, 16)
    file = join(storageDir, `${serverKey}.json`)
    writeFile(file, JSON.stringify(this.oauthState, null, 2))    // no mode, no temp file, no fsync
    interface StoredOAuthState { clientInfo?: OAuthClientInformationFull; tokens?: OAuthTokens;
                                 codeVerifier?: string }

So a file is ``~/.ncp/auth/<first 16 hex digits of SHA-256(url)>.json`` where ``url`` is the ``url`` of the
``mcpServers`` entry exactly as written (UTF-8, not normalised), and it holds what the MCP TypeScript SDK
handed to ``saveClientInformation`` / ``saveTokens``:

* ``tokens`` (SDK ``OAuthTokens``): ``access_token``, ``token_type``, ``expires_in`` (relative seconds,
  ``z.coerce.number``), ``scope``, ``refresh_token``, ``id_token``;
* ``clientInfo`` (SDK ``OAuthClientInformationFull``, only after a dynamic registration): ``client_id``,
  ``client_secret``, ``client_id_issued_at``, ``client_secret_expires_at``, ``redirect_uris``
  (``http://localhost:<callbackPort>/callback``), ``token_endpoint_auth_method``, ``grant_types``,
  ``scope``, … A client configured with ``oauth21.clientId`` is never written here: NCP answers
  ``clientInformation()`` from the config, so the config's client is the one the tokens belong to;
* ``codeVerifier``: a pending PKCE verifier, never imported.

No issuer, token endpoint, server URL or save time is stored by NCP itself. Newer SDK releases (1.2x+, seen
in 1.32.2's ``client/auth.js``) stamp ``issuer`` — the authorization-server URL discovery used,
``String(authorizationServerUrl)`` — onto both values before saving, and NCP stores them unchanged; such a
stamp is read and enforced (below). Every other unknown key is ignored.

Matching
--------
A file belongs to a configured server when its name is NCP's key of that server's URL: the URL as written,
or another spelling of the same canonical URL (:func:`brokerd.oauth.canonical_url`, with and without a
trailing slash), since a 64-bit SHA-256 prefix only comes out of that exact string. The spelling that
matched is reported. Nothing else is tried: a file no configured URL hashes to is listed ``unmatched``, one
that two servers hash to, or two files for one server, are listed ``ambiguous``; none is guessed.

Expiry
------
NCP keeps ``expires_in`` only, relative to a time it does not store, so ``obtained_at`` is the file's
modification time (capped at ``now``) and ``expires_at = obtained_at + expires_in``. NCP rewrites the file
after the tokens too (a later ``saveCodeVerifier``, ``invalidateCredentials``), so the mtime is an upper
bound of when the tokens were issued and the expiry an upper bound too; :attr:`ImportItem.notes` says so.

The issuer
----------
Refreshing needs the issuer, the token endpoint and the client registration keyed by issuer (DESIGN.md
rule 5: a :class:`brokerd.oauth.TokenSet` cannot exist without ``issuer``, ``client_id`` and
``token_endpoint``). NCP's grant is bound to whatever the SDK's discovery of the server URL finds — it
rediscovers on every ``auth()`` and refreshes at that authorization server — and ours follows the same
RFC 9728 → RFC 8414 chain (with the same 2025-03-26 origin fallback). So an :class:`ImportItem` carries
the grant *unbound*, and :meth:`ImportItem.bind` binds it to a :class:`brokerd.oauth.Discovery` the
daemon has just run for that server: ``issuer``, ``token_endpoint``, ``revocation_endpoint`` and
``resource`` come from the discovery, the registration is keyed by ``discovery.issuer``. If the file
carries the SDK's ``issuer`` stamp and it does not name the discovered issuer (one trailing ``/`` apart,
as the SDK compares), binding is refused: the refresh token was issued elsewhere and is never sent to
another server. Without a stamp the grant is bound to the discovered issuer, exactly as the SDK would
use it; if that server does not know it, the first refresh ends the grant and the user logs in — nothing
worse than not importing.

Applying a plan (the daemon's side)
-----------------------------------
For each :class:`ImportItem` (in the daemon, through the server's actor: rule 2):

1. load the stored record; if it has tokens already, keep it and report the item as kept (unless the
   user asked to replace them);
2. probe the server URL and run ``oauth.discover(url, policy=…, challenge=…)`` as a login does, with the
   server's ``UrlPolicy``; a discovery failure skips the item with its reason;
3. ``tokens, registration = item.bind(discovery)`` (raises :class:`ImportBindError` or
   :class:`brokerd.oauth.PolicyError` with a reason to show), save them, load them into the actor;
4. ideally refresh once right away when there is a refresh token: that proves the binding while NCP's
   file is still there and replaces the estimated expiry with a real one.

Afterwards NCP must stop using that grant (point it at the broker, or move its file aside): two holders of
one rotating refresh token is exactly the replay that revokes grants. This module never changes NCP's files.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

from brokerd import oauth
from brokerd.config import Server
from brokerd.secret import Secret, dec_hook

__all__ = [
    "MAX_FILE_BYTES",
    "NCP_KEY_HEX_CHARS",
    "ImportBindError",
    "ImportItem",
    "ImportPlan",
    "ImportedClient",
    "NcpFile",
    "NcpFileError",
    "NcpImportError",
    "Skipped",
    "default_auth_dir",
    "ncp_key",
    "parse_file",
    "scan",
]

#: NCP keeps the first 16 hex digits (64 bits) of the SHA-256 (``hash.substring(0, 16)``).
NCP_KEY_HEX_CHARS = 16
#: NCP's files hold a few kilobytes; anything far larger is not one of them.
MAX_FILE_BYTES = 1 << 20

_NAME_RE = re.compile(r"^[0-9a-f]{16}\.json$")
AuthMethod = Literal["none", "client_secret_basic", "client_secret_post"]
_AUTH_METHODS: tuple[AuthMethod, ...] = ("none", "client_secret_basic", "client_secret_post")

SkipKind = Literal["unmatched", "ambiguous", "unreadable", "not_oauth", "no_grant", "unsupported"]


class NcpImportError(Exception):
    """The NCP auth directory cannot be scanned. The message names the directory and the reason."""


class NcpFileError(NcpImportError):
    """One NCP file cannot be used; the message is the reason (never a secret)."""


class ImportBindError(NcpImportError):
    """An item cannot be bound to the given discovery or store record; the message says why."""


class _Unsupported(NcpFileError):
    """The file is readable, but what it holds is something the broker cannot use."""


class _NoGrant(NcpFileError):
    """The file is readable, but it holds no grant worth importing."""


def ncp_key(url: str) -> str:
    """NCP's file key of ``url``: the first 16 hex digits of SHA-256 over the URL string as written (UTF-8,
    as Node's ``hash.update(string)``)."""
    return hashlib.sha256(url.encode()).hexdigest()[:NCP_KEY_HEX_CHARS]


def default_auth_dir(home: Path) -> Path:
    """NCP's default storage directory under ``home``: ``~/.ncp/auth``."""
    return home / ".ncp" / "auth"


# ---- NCP's file, as stored -------------------------------------------------------------------------


class _NcpTokens(msgspec.Struct):
    access_token: Secret
    token_type: str | None = None
    expires_in: int | float | str | None = None
    refresh_token: Secret | None = None
    scope: str | None = None
    issuer: Any = None  # the SDK's stamp; a non-string counts as no stamp, as in the SDK


class _NcpClient(msgspec.Struct):
    client_id: str
    client_secret: Secret | None = None
    client_id_issued_at: int | float | None = None
    client_secret_expires_at: int | float | None = None
    token_endpoint_auth_method: str | None = None
    redirect_uris: list[str] | None = None
    grant_types: list[str] | None = None
    scope: str | None = None
    registration_access_token: Secret | None = None
    registration_client_uri: str | None = None
    issuer: Any = None


class _NcpState(msgspec.Struct):
    client_info: _NcpClient | None = msgspec.field(default=None, name="clientInfo")
    tokens: _NcpTokens | None = None


@dataclass(frozen=True)
class NcpFile:
    """One parsed NCP file: the raw SDK values, secrets wrapped."""

    tokens: _NcpTokens | None
    client_info: _NcpClient | None


def parse_file(data: bytes) -> NcpFile:
    """Parse the bytes of one ``~/.ncp/auth/<key>.json``.

    Raises:
        NcpFileError: not UTF-8 JSON, not an object, or a known field of the wrong type. The message names
            the JSON path, never a value.
    """
    try:
        obj = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise NcpFileError(f"not valid JSON ({_short(str(exc))})") from None
    except (UnicodeDecodeError, RecursionError):
        raise NcpFileError("not valid JSON") from None
    if not isinstance(obj, dict):
        raise NcpFileError("not a JSON object")
    try:
        state = msgspec.convert(obj, _NcpState, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        raise NcpFileError(f"unexpected shape: {_short(str(exc))}") from None
    return NcpFile(tokens=state.tokens, client_info=state.client_info)


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- the plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """A file (or server) that is not imported, with the reason; ``server`` when it matched one."""

    path: Path
    kind: SkipKind
    reason: str
    server: str | None = None


@dataclass(frozen=True)
class ImportedClient:
    """The client NCP's tokens were issued to.

    ``source`` is ``preregistered`` (the config's ``oauth21.clientId``) or ``dynamic`` (NCP's
    ``clientInfo``). ``token_endpoint_auth_method`` is None when NCP's file does not say: it is then chosen
    from the discovered server's supported methods at binding time, as the SDK's
    ``selectClientAuthMethod`` does (``client_secret_basic``, then ``client_secret_post``, then ``none``).
    """

    client_id: str
    source: Literal["preregistered", "dynamic"]
    client_secret: Secret | None = None
    token_endpoint_auth_method: AuthMethod | None = None
    redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ()
    scope: str | None = None
    client_id_issued_at: float | None = None
    client_secret_expires_at: float | None = None
    registration_access_token: Secret | None = None
    registration_client_uri: str | None = None


@dataclass(frozen=True)
class ImportItem:
    """NCP's grant for one configured OAuth server, not yet bound to an issuer (see the module docs).

    ``obtained_at`` is the file's modification time, capped at the scan's ``now``; ``expires_at`` is
    ``obtained_at + expires_in`` (an upper bound). ``issuer_stamp`` is the SDK's ``issuer`` stamp when the
    file has one. ``notes`` are things to tell the user, none of them secret.
    """

    server: str
    server_url: str
    path: Path
    matched_by: str
    access_token: Secret
    client: ImportedClient
    obtained_at: float
    refresh_token: Secret | None = None
    expires_in: float | None = None
    scopes: tuple[str, ...] = ()
    issuer_stamp: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def expires_at(self) -> float | None:
        return None if self.expires_in is None else self.obtained_at + self.expires_in

    def bind(self, discovery: oauth.Discovery) -> tuple[oauth.TokenSet, oauth.Registration]:
        """The grant and its client, bound to ``discovery`` (just run for :attr:`server_url`).

        Raises:
            ImportBindError: the discovery is for another server, or the file's issuer stamp names another
                authorization server.
            brokerd.oauth.PolicyError: the client has a secret but the server supports none of the
                client authentication methods the broker has.
        """
        if oauth.canonical_url(discovery.server_url) != oauth.canonical_url(self.server_url):
            raise ImportBindError(f"{self.server}: the discovery given is for another server URL")
        if self.issuer_stamp is not None and not _issuers_match(self.issuer_stamp, discovery.issuer):
            raise ImportBindError(
                f"{self.server}: NCP obtained this grant from {_short(self.issuer_stamp, 120)!r},"
                f" but discovery now finds {_short(discovery.issuer, 120)!r};"
                " not importing it (log in with the broker)"
            )
        tokens = oauth.TokenSet(
            access_token=self.access_token,
            refresh_token=self.refresh_token,
            expires_at=self.expires_at,
            scopes=self.scopes,
            token_endpoint=discovery.token_endpoint,
            issuer=discovery.issuer,
            resource=discovery.resource,
            obtained_at=self.obtained_at,
            client_id=self.client.client_id,
            revocation_endpoint=discovery.revocation_endpoint,
        )
        return tokens, self._registration(discovery)

    def _registration(self, discovery: oauth.Discovery) -> oauth.Registration:
        c = self.client
        method: oauth.AuthMethod | None = c.token_endpoint_auth_method
        if method is None:
            # The broker's own choice for a client whose method is not recorded (R1): no effects, no I/O.
            chosen = oauth.run_sync(
                oauth.register(
                    discovery,
                    policy=oauth.UrlPolicy(),
                    redirect_uris=(),
                    now=self.obtained_at,
                    client_id=c.client_id,
                    client_secret=c.client_secret,
                ),
                _no_effects,
            )
            method = chosen.token_endpoint_auth_method
        return oauth.Registration(
            issuer=discovery.issuer,
            client_id=c.client_id,
            client_secret=c.client_secret if method != "none" else None,
            token_endpoint_auth_method=method,
            redirect_uris=c.redirect_uris,
            registered_at=c.client_id_issued_at or 0.0,
            registration_client_uri=c.registration_client_uri,
            registration_access_token=c.registration_access_token,
            client_secret_expires_at=c.client_secret_expires_at,
            source=c.source,
            grant_types=c.grant_types,
            scope=c.scope,
        )


def _no_effects(effect: oauth.Effect) -> object:
    raise AssertionError(f"registering a known client needs no {type(effect).__name__}")


def _issuers_match(a: str, b: str) -> bool:
    """The SDK's ``issuersMatch`` (equal as parsed URLs, one trailing ``/`` apart at most), by the one
    function that decides "the same URL" here (:func:`brokerd.oauth.canonical_url`)."""
    try:
        return oauth.canonical_url(a) == oauth.canonical_url(b)
    except ValueError:
        return a == b


@dataclass(frozen=True)
class ImportPlan:
    """What ``import-ncp`` would do: ``items`` to import, ``skipped`` files with a reason each, and the
    configured OAuth servers NCP has no file for (``not_found``)."""

    auth_dir: Path
    items: tuple[ImportItem, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    not_found: tuple[str, ...] = ()


# ---- scanning --------------------------------------------------------------------------------------


def _spellings(url: str) -> list[str]:
    """The URL as written, then the other spellings of its canonical URL (with and without a trailing
    slash on the path)."""
    found = [url, url.strip()]
    try:
        canonical = oauth.canonical_url(url)
    except ValueError:
        canonical = None
    if canonical is not None:
        p = urlsplit(canonical)
        other_path = "" if p.path == "/" else p.path + "/"
        found += [canonical, urlunsplit((p.scheme, p.netloc, other_path, p.query, ""))]
    return list(dict.fromkeys(found))


def _read(path: Path) -> tuple[bytes, os.stat_result]:
    """The bytes and stat of a regular file, not following a symlink; NcpFileError otherwise."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise NcpFileError(f"cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NcpFileError("not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise NcpFileError(f"larger than {MAX_FILE_BYTES} bytes; not an NCP auth file")
        chunks = []
        total = 0
        while chunk := os.read(fd, 65536):
            total += len(chunk)
            if total > MAX_FILE_BYTES:
                raise NcpFileError(f"larger than {MAX_FILE_BYTES} bytes; not an NCP auth file")
            chunks.append(chunk)
        return b"".join(chunks), st
    except OSError as exc:
        raise NcpFileError(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)


def _seconds(value: int | float | str | None, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise NcpFileError(f"{what} is not a number") from None
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise NcpFileError(f"{what} is not a non-negative number")
    return number


def _stamp(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _client(server: Server, info: _NcpClient | None, notes: list[str]) -> ImportedClient:
    settings = server.oauth
    assert settings is not None
    if settings.client_id is not None:
        if info is not None and info.client_id != settings.client_id:
            notes.append(
                "NCP's file also holds a dynamically registered client, which NCP did not use because"
                " the config names a client; it is not imported"
            )
        return ImportedClient(
            client_id=settings.client_id, source="preregistered", client_secret=settings.client_secret
        )
    if info is None:
        raise _Unsupported(
            "tokens without a client registration (and no oauth21.clientId in the config): they cannot be"
            " refreshed"
        )
    method: AuthMethod | None = None
    if info.token_endpoint_auth_method is not None:
        wanted = info.token_endpoint_auth_method
        method = next((m for m in _AUTH_METHODS if m == wanted), None)
        if method is None:
            raise _Unsupported(
                f"the client is registered for {_short(wanted, 40)!r} authentication, which the broker"
                " does not support"
            )
        if method != "none" and not info.client_secret:
            raise _Unsupported(f"the client is registered for {method} but NCP's file holds no client secret")
    secret_expires = _seconds(info.client_secret_expires_at, "clientInfo.client_secret_expires_at")
    uris = tuple(info.redirect_uris or ())
    if uris and not any(_is_ip_loopback(u) for u in uris):
        notes.append(
            "NCP registered its client for a localhost redirect URI; a later browser login through the"
            " broker needs a new client registration"
        )
    return ImportedClient(
        client_id=info.client_id,
        source="dynamic",
        client_secret=info.client_secret or None,
        token_endpoint_auth_method=method,
        redirect_uris=uris,
        grant_types=tuple(info.grant_types or ()),
        scope=info.scope,
        client_id_issued_at=_seconds(info.client_id_issued_at, "clientInfo.client_id_issued_at"),
        client_secret_expires_at=secret_expires or None,  # 0: never expires (RFC 7591)
        registration_access_token=info.registration_access_token or None,
        registration_client_uri=info.registration_client_uri,
    )


def _is_ip_loopback(uri: str) -> bool:
    try:
        return urlsplit(uri).hostname in ("127.0.0.1", "::1")
    except ValueError:
        return False


def _item(
    server: Server, path: Path, spelling: str, data: bytes, st: os.stat_result, *, now: float
) -> ImportItem:
    parsed = parse_file(data)
    tokens = parsed.tokens
    if tokens is None:
        raise _NoGrant("holds no tokens (NCP never finished a login, or dropped them)")
    if (tokens.token_type or "Bearer").lower() != "bearer":
        raise _Unsupported(f"holds a {_short(tokens.token_type or '', 20)!r} token; only Bearer is brokered")
    if not tokens.access_token:
        raise NcpFileError("tokens.access_token is empty")
    notes: list[str] = []
    client = _client(server, parsed.client_info, notes)
    expires_in = _seconds(tokens.expires_in, "tokens.expires_in")
    obtained_at = min(st.st_mtime, now)
    refresh_token = tokens.refresh_token or None
    if expires_in is not None:
        if refresh_token is None and obtained_at + expires_in <= now:
            raise _NoGrant("the access token has expired and there is no refresh token")
        notes.append("expiry estimated from the file's modification time (NCP does not record it)")
    if refresh_token is None:
        notes.append("no refresh token: the grant ends when the access token expires")
    if stat.S_IMODE(st.st_mode) & 0o077:
        notes.append("NCP's file is readable by other users; consider a fresh login afterwards")
    # The client's stamp counts only when that client is the one used (not one the config overrides).
    client_stamp = (
        _stamp(parsed.client_info.issuer) if parsed.client_info and client.source == "dynamic" else None
    )
    stamps = {s for s in (_stamp(tokens.issuer), client_stamp) if s}
    if len(stamps) > 1 and not _issuers_match(*sorted(stamps)):
        raise _Unsupported("the tokens and the client are stamped with different authorization servers")
    return ImportItem(
        server=server.name,
        server_url=server.url or "",
        path=path,
        matched_by=spelling,
        access_token=tokens.access_token,
        refresh_token=refresh_token,
        expires_in=expires_in,
        obtained_at=obtained_at,
        scopes=tuple((tokens.scope or "").split()),
        client=client,
        issuer_stamp=_stamp(tokens.issuer) or (min(stamps) if stamps else None),
        notes=tuple(notes),
    )


def _kind(exc: NcpFileError) -> SkipKind:
    if isinstance(exc, _NoGrant):
        return "no_grant"
    if isinstance(exc, _Unsupported):
        return "unsupported"
    return "unreadable"


def scan(auth_dir: Path, servers: Mapping[str, Server], *, now: float) -> ImportPlan:
    """Read every file in ``auth_dir`` (NCP's ``~/.ncp/auth``) and match it to ``servers`` (the config's).

    ``now`` is the wall-clock time, for deciding which grants have already ended. Files are never written.

    Raises:
        NcpImportError: ``auth_dir`` does not exist or cannot be listed.
    """
    try:
        entries = sorted(auth_dir.iterdir(), key=lambda p: p.name)
    except FileNotFoundError:
        raise NcpImportError(
            f"{auth_dir}: no such directory (NCP keeps its OAuth files in ~/.ncp/auth)"
        ) from None
    except OSError as exc:
        raise NcpImportError(f"{auth_dir}: cannot list: {exc.strerror}") from None

    by_key: dict[str, dict[str, str]] = {}  # NCP key -> server name -> the spelling that hashes to it
    for name, server in servers.items():
        if server.url is None:
            continue
        for spelling in _spellings(server.url):
            by_key.setdefault(ncp_key(spelling), {}).setdefault(name, spelling)

    items: list[ImportItem] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for path in entries:
        if not _NAME_RE.match(path.name):
            skipped.append(Skipped(path, "unmatched", "not named like NCP's <16 hex digits>.json"))
            continue
        matches = by_key.get(path.name[:NCP_KEY_HEX_CHARS], {})
        if not matches:
            skipped.append(Skipped(path, "unmatched", "no configured server URL hashes to this name"))
            continue
        if len(matches) > 1:
            names = ", ".join(sorted(matches))
            skipped.append(Skipped(path, "ambiguous", f"matches more than one configured server: {names}"))
            continue
        ((name, spelling),) = matches.items()
        seen.add(name)
        server = servers[name]
        if server.kind != "oauth":
            what = (
                "a static access key (bearer)"
                if server.kind == "bearer"
                else f"not brokered ({server.reason})"
            )
            skipped.append(Skipped(path, "not_oauth", f"server {name!r} is configured as {what}", name))
            continue
        try:
            data, st = _read(path)
            items.append(_item(server, path, spelling, data, st, now=now))
        except NcpFileError as exc:
            skipped.append(Skipped(path, _kind(exc), str(exc), name))

    per_server: dict[str, list[ImportItem]] = {}
    for item in items:
        per_server.setdefault(item.server, []).append(item)
    kept: list[ImportItem] = []
    for item in items:
        group = per_server[item.server]
        if len(group) == 1:
            kept.append(item)
            continue
        others = ", ".join(g.path.name for g in group if g is not item)
        skipped.append(
            Skipped(
                item.path,
                "ambiguous",
                f"another NCP file also matches {item.server!r}: {others}",
                item.server,
            )
        )
    not_found = tuple(n for n, s in servers.items() if s.kind == "oauth" and n not in seen)
    skipped.sort(key=lambda s: s.path.name)
    return ImportPlan(auth_dir=auth_dir, items=tuple(kept), skipped=tuple(skipped), not_found=not_found)
