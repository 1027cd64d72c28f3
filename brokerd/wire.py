"""The socket protocol: newline-delimited JSON, one response per request, in order.

Requests are a msgspec tagged union on the ``op`` field, decoded by one Decoder made once; responses are
``{"id": …, "ok": true, "result": {…}}`` or ``{"id": …, "ok": false, "error": {"code", "message", "hint"}}``.
``docs/protocol.md`` is the reference for other languages; the thin client (``ncp_client``) speaks it with
the standard library only.

Framing rules the daemon enforces (DESIGN.md rule 6): a frame is at most :data:`MAX_FRAME` bytes including
its newline; a partial frame must complete within :data:`FRAME_DEADLINE` seconds; an idle connection is
closed after :data:`IDLE_TIMEOUT`. A frame that is not a valid request gets a ``bad_request`` error and the
connection stays usable; an oversized or endless frame gets ``frame_too_large`` and the connection closes
(its framing is lost).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from brokerd import shape
from brokerd.secret import Secret, dec_hook, enc_hook

__all__ = [
    "DEFAULT_MIN_TTL",
    "FRAME_DEADLINE",
    "IDLE_TIMEOUT",
    "MAX_FRAME",
    "PROTOCOL_VERSION",
    "DaemonStatus",
    "ErrorBody",
    "ErrorCode",
    "GetToken",
    "GrantState",
    "Hello",
    "HelloResult",
    "ImportNcp",
    "ImportResult",
    "ImportSkipped",
    "Imported",
    "Invalidate",
    "InvalidateResult",
    "ListResult",
    "ListServers",
    "Listing",
    "Login",
    "LoginComplete",
    "LoginStarted",
    "LoginWait",
    "Logout",
    "LogoutResult",
    "Reload",
    "ReloadResult",
    "Request",
    "Result",
    "Revocation",
    "ScopeInsufficient",
    "ServerStatus",
    "SetAccessKey",
    "Shutdown",
    "ShutdownResult",
    "Status",
    "StatusResult",
    "StoredResult",
    "TokenRejected",
    "TokenResult",
    "WireError",
    "decode_request",
    "encode_error",
    "encode_result",
    "request_id",
]

PROTOCOL_VERSION = 1
MAX_FRAME = 64 * 1024
FRAME_DEADLINE = 10.0
IDLE_TIMEOUT = 600.0
DEFAULT_MIN_TTL = 30.0

ErrorCode = Literal[
    "bad_request",  # the frame is not a valid request; fix the client
    "frame_too_large",  # a frame over MAX_FRAME; the connection is closed
    "unsupported_protocol",  # hello asked for a protocol version the daemon does not speak
    "unknown_server",  # no such name in the config
    "not_brokered",  # the entry exists but the broker does not hold credentials for it
    "needs_login",  # no usable grant; the hint names the login command
    "login_in_progress",  # a login is pending; wait for it or complete it
    "login_unavailable",  # this daemon cannot log in to that server (yet)
    "as_unreachable",  # the authorization server cannot be reached; the current token has expired
    "insufficient_scope",  # step-up gave up: the server still refuses after MAX_AUTHORIZATIONS tries
    "config_error",  # reload refused: the file is bad; the old config stays in force
    "config_conflict",  # two entries name one server with different settings; both are refused
    "stopping",  # the daemon is stopping and cannot start this exchange; start it again
    "internal",  # a bug; the daemon stays up, the message says where to look
]


class WireError(Exception):
    """An error answer: a stable ``code``, a sentence, and the command a person can run (``hint``)."""

    def __init__(self, code: ErrorCode, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.hint = hint


# ---- answers --------------------------------------------------------------------------------------
#
# Every result is one of these Structs, encoded by the one encoder below; docs/protocol.md has a field
# table for each, and tests/unit/test_protocol_docs.py holds the two equal. New fields need a default and
# go at the end; clients ignore fields they do not know.


class _Answer(msgspec.Struct):
    pass


class TokenResult(_Answer, kw_only=True):
    """The answer to every request that yields a token: ``get_token``, ``token_rejected``,
    ``scope_insufficient``, ``login_wait``, ``login_complete``."""

    token: Secret
    token_type: str = "Bearer"  # noqa: S105 - a token type name, not a secret
    #: Wall-clock expiry (seconds since the epoch), or None when the server gave none (an access key).
    expires_at: float | None = None
    #: Seconds left when the answer was made (never negative), or None.
    expires_in: float | None = None
    #: For a DPoP-bound token (``token_type`` "DPoP") asked for with ``method`` and ``url``: a fresh proof
    #: for that one request, to send as the ``DPoP`` header (RFC 9449 §7). None otherwise.
    dpop: Secret | None = None

    @classmethod
    def at(cls, now: float, token: Secret, token_type: str, expires_at: float | None) -> TokenResult:
        expires_in = None if expires_at is None else max(0.0, round(expires_at - now, 3))
        return cls(token=token, token_type=token_type, expires_at=expires_at, expires_in=expires_in)


class HelloResult(_Answer, kw_only=True):
    """``hello``: what the daemon speaks, and whether it is stopping."""

    protocol: int
    version: str
    pid: int
    stopping: bool = False


class DaemonStatus(_Answer, kw_only=True):
    """The daemon part of ``status``."""

    pid: int
    version: str
    protocol: int
    socket: str
    config: str | None
    store: str
    started_at: float
    stopping: bool = False


class Listing(_Answer, kw_only=True):
    """One config entry, as ``list`` and ``status`` name it."""

    name: str
    url: str | None
    kind: str
    brokered: bool
    #: The other names of the same grant (entries whose URLs name one server).
    aliases: list[str] = []


class GrantState(_Answer, kw_only=True, omit_defaults=True):
    """What an actor says of its grant in ``status``: a state word, a sentence, and what applies."""

    state: str
    detail: str
    expires_at: float | None = None
    last_refresh: float | None = None
    next_refresh: float | None = None
    retry_at: float | None = None
    last_error: str | None = None
    #: transient, refused, grant_ended, login_failed, store_write, authorization_server_moved
    last_error_class: str | None = None
    login_url: str | None = None
    rejected_at: float | None = None
    #: A refresh of the current refresh token that was sent and never answered, explained.
    unanswered_refresh: str | None = None
    #: The command that fixes the state, when a person can.
    hint: str | None = None
    #: How the grant gets tokens: authorization_code, client_credentials, jwt_bearer (OAuth grants only).
    grant_type: str | None = None
    #: The access token is bound to the daemon's DPoP key (RFC 9449).
    dpop_bound: bool = False


class ServerStatus(GrantState, kw_only=True, omit_defaults=True):
    """One server in ``status``: its grant's state and its :class:`Listing`, side by side (fields that do
    not apply are left out)."""

    name: str
    url: str | None
    kind: str
    brokered: bool
    aliases: list[str]


class StatusResult(_Answer, kw_only=True):
    daemon: DaemonStatus
    servers: list[ServerStatus]


class ListResult(_Answer, kw_only=True):
    servers: list[Listing]


class ReloadResult(_Answer, kw_only=True):
    added: list[str]
    removed: list[str]
    changed: list[str]


class StoredResult(_Answer, kw_only=True):
    """``set_access_key``."""

    stored: bool = True


class LoginStarted(_Answer, kw_only=True):
    """``login``: the URL to open (and the code to enter, for a device login)."""

    url: str
    user_code: str | None
    joined: bool
    opened_elsewhere: bool
    started_at: float
    aliases: list[str] = []
    #: The grant needs no person (client credentials, a workload's token): the daemon is getting a token
    #: itself, ``url`` is empty, and ``login_wait`` answers with the token or why there is none.
    automatic: bool = False


class Revocation(_Answer, kw_only=True):
    """One RFC 7009 revocation at logout."""

    token: str
    outcome: str
    detail: str


class LogoutResult(_Answer, kw_only=True):
    had_grant: bool
    revocation: list[Revocation]
    saved: bool
    aliases: list[str] = []


class InvalidateResult(_Answer, kw_only=True):
    forgot: list[str]
    saved: bool
    aliases: list[str] = []


class Imported(_Answer, kw_only=True):
    """One NCP file handed to a server's actor."""

    server: str
    file: str
    notes: list[str]
    outcome: Literal["imported", "kept", "failed"]
    detail: str


class ImportSkipped(_Answer, kw_only=True):
    file: str
    kind: str
    reason: str
    server: str | None


class ImportResult(_Answer, kw_only=True):
    directory: str
    imported: list[Imported]
    skipped: list[ImportSkipped]
    not_found: list[str]


class ShutdownResult(_Answer, kw_only=True):
    stopping: bool = True


Result = (
    TokenResult
    | HelloResult
    | StatusResult
    | ListResult
    | ReloadResult
    | StoredResult
    | LoginStarted
    | LogoutResult
    | InvalidateResult
    | ImportResult
    | ShutdownResult
)


class ErrorBody(msgspec.Struct):
    code: ErrorCode
    message: str
    hint: str


class _Ok(msgspec.Struct, kw_only=True):
    id: int | str | None
    ok: bool = True
    result: Result


class _Failed(msgspec.Struct, kw_only=True):
    id: int | str | None
    ok: bool = False
    error: ErrorBody


# ---- requests -------------------------------------------------------------------------------------


class _Base(msgspec.Struct, tag_field="op", forbid_unknown_fields=True, kw_only=True):
    id: int | str | None = None


class Hello(_Base, tag="hello"):
    """Optional handshake: what protocol and version the daemon speaks."""

    protocol: int = PROTOCOL_VERSION
    client: str = ""


class GetToken(_Base, tag="get_token"):
    """A fresh access token with at least ``min_ttl`` seconds left (capped for short-lived tokens).

    ``method`` and ``url`` name the one HTTP request the token is for: for a DPoP-bound token the answer
    then carries a proof for it (``dpop``), with ``dpop_nonce`` if the resource server demanded one (the
    daemon remembers it for the next proofs). ``url`` must be at the server's origin.
    """

    server: str
    min_ttl: float | None = None
    method: str | None = None
    url: str | None = None
    dpop_nonce: str | None = None


class TokenRejected(_Base, tag="token_rejected"):
    """The resource answered 401 to ``token``: refresh if it is still current, else return the newer one.

    ``www_authenticate`` is the 401's header, if the client has it: when its protected resource metadata
    now names another authorization server, the grant ends and the answer is ``needs_login`` (D7).
    ``method``, ``url`` and ``dpop_nonce`` as for :class:`GetToken`: the proof for the request to resend.
    """

    server: str
    token: Secret
    www_authenticate: str | None = None
    method: str | None = None
    url: str | None = None
    dpop_nonce: str | None = None


class ScopeInsufficient(_Base, tag="scope_insufficient"):
    """The resource answered 403 ``insufficient_scope`` to ``token``: re-authorize (step-up, A9).

    The daemon asks for the union of the scopes it holds and the challenged ones (``scopes``, and the
    ``scope`` of ``www_authenticate``), opens the browser itself and answers with the new token once the
    login is done. If ``token`` is no longer the current one, the current one comes back at once.
    """

    server: str
    token: Secret | None = None
    scopes: list[str] = []
    www_authenticate: str | None = None


class Status(_Base, tag="status"):
    """The state of every server (or one), the socket path and the store in use. Never a token."""

    server: str | None = None


class ListServers(_Base, tag="list"):
    """Configured server names, their URL, whether they are brokered, and their aliases; with ``url``,
    only the entries that name that server (the daemon's rule for "the same server URL")."""

    url: str | None = None


class Reload(_Base, tag="reload"):
    """Re-read the config file. A bad file is refused and the running config stays."""


class SetAccessKey(_Base, tag="set_access_key"):
    """Store a static access key for a ``bearer`` server (``ncp-broker add NAME URL --access-key -``)."""

    server: str
    key: Secret


class Login(_Base, tag="login"):
    """Start a login (or join the pending one); answers with the authorization URL to open."""

    server: str
    mode: Literal["browser", "paste", "device"] = "browser"
    open_browser: bool = False
    """The daemon opens the browser itself (for a client without a terminal, e.g. ``BrokerAuth``)."""
    will_open: bool = False
    """The caller opens the URL in a browser itself (``ncp-broker login``, ``ncp-token``)."""


class LoginWait(_Base, tag="login_wait"):
    """Wait for the pending login to finish; answers with a token."""

    server: str


class LoginComplete(_Base, tag="login_complete"):
    """Finish the pending login with a pasted code or the whole redirect URL; answers with a token."""

    server: str
    response: Secret


class Logout(_Base, tag="logout"):
    """Revoke the server's grant at its authorization server and forget the local tokens (or the key)."""

    server: str


class Invalidate(_Base, tag="invalidate"):
    """Forget local credentials without revoking them (NCP's ``invalidateCredentials``): ``tokens`` (the
    next use needs a login), ``client`` (the next login registers again) or ``all``."""

    server: str
    what: Literal["tokens", "client", "all"]


class ImportNcp(_Base, tag="import_ncp"):
    """Take over NCP's grants from its per-server files in ``directory`` (an absolute path, NCP's
    ``~/.ncp/auth``); a server that has a grant already keeps it unless ``replace``."""

    directory: str
    replace: bool = False


class Shutdown(_Base, tag="shutdown"):
    """Stop the daemon after answering."""


Request = (
    Hello
    | GetToken
    | TokenRejected
    | ScopeInsufficient
    | Status
    | ListServers
    | Reload
    | SetAccessKey
    | Login
    | LoginWait
    | LoginComplete
    | Logout
    | Invalidate
    | ImportNcp
    | Shutdown
)

_decoder: msgspec.json.Decoder[Request] = msgspec.json.Decoder(Request, dec_hook=dec_hook)
_encoder = msgspec.json.Encoder(enc_hook=enc_hook)


class _IdOnly(msgspec.Struct):
    id: int | str | None = None


_id_decoder = msgspec.json.Decoder(_IdOnly)


def decode_request(frame: bytes) -> Request:
    """Decode one frame (without its newline).

    Raises:
        WireError: ``bad_request`` saying what is wrong in our words (:mod:`brokerd.shape`), which quote
            key names but never values, so a token in a malformed frame is not echoed back.
    """
    try:
        return _decoder.decode(frame)
    except msgspec.ValidationError:
        raise WireError(
            "bad_request", f"invalid request: {_why_not(frame)}", "see docs/protocol.md"
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        # msgspec raises UnicodeDecodeError for invalid UTF-8 inside a string, RecursionError for deep nesting
        raise WireError("bad_request", "invalid request: not a JSON object", "see docs/protocol.md") from None


def _why_not(frame: bytes) -> str:
    """Why a frame that msgspec refused is not a request, judged again by brokerd.shape in our words."""
    try:
        found = shape.problem(msgspec.json.decode(frame), Request)
    except RecursionError:
        return "nested too deeply"
    except (msgspec.DecodeError, UnicodeDecodeError):  # the typed decoder stopped before the bad bytes
        return "not a JSON object"
    if found is None:  # msgspec refused what brokerd.shape accepts: a bug of ours, named as such
        return "refused by the decoder (please report this frame's shape)"
    return found.what if found.where == "$" else f"{found.what} (at {found.where})"


def request_id(frame: bytes) -> int | str | None:
    """The ``id`` of a frame that failed to decode, if it has a usable one, so the error can carry it."""
    try:
        return _id_decoder.decode(frame).id
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return None


def encode_result(req_id: int | str | None, result: Result) -> bytes:
    """One answer line: ``{"id", "result", "ok": true}``."""
    return _encoder.encode(_Ok(id=req_id, result=result)) + b"\n"


def encode_error(req_id: int | str | None, error: WireError) -> bytes:
    """One error line: ``{"id", "error": {"code", "message", "hint"}, "ok": false}``."""
    body = ErrorBody(error.code, error.message, error.hint)
    return _encoder.encode(_Failed(id=req_id, error=body)) + b"\n"
