"""Per-server credential actors: the only code that reads or writes one server's credentials.

One actor per grant (DESIGN.md rules 2 and 11): config entries that name the same server share it. The
broker never looks inside credentials and never asks what kind of actor it holds: it calls the
:class:`Actor` method a request names, and an actor that cannot do that answers with a
:class:`~brokerd.wire.WireError` saying so.

* :class:`BearerActor` serves a static access key (NCP's ``"type": "bearer"``), the fallback for servers
  without OAuth. The key comes from the config entry (``auth.token``) or from the store
  (``ncp-broker add NAME URL --access-key -``).
* ``brokerd.grant.OAuthActor`` owns an OAuth grant (login, renewal, persistence).
* :class:`UnbrokeredActor` answers for entries the broker lists but holds no credentials for.
* :class:`ConflictActor` answers for entries that name one server with settings that disagree.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol

from brokerd.config import Server
from brokerd.resource_requests import ResourceRequest
from brokerd.secret import Secret
from brokerd.wire import (
    GrantState,
    Imported,
    InvalidateResult,
    LoginStarted,
    LogoutResult,
    TokenResult,
    WireError,
)

if TYPE_CHECKING:
    from brokerd.ncp_import import ImportItem

__all__ = [
    "Actor",
    "BearerActor",
    "ConflictActor",
    "KeyStore",
    "OAuthUnavailableActor",
    "UnbrokeredActor",
]

LoginMode = Literal["browser", "paste", "device"]


class KeyStore(Protocol):
    """What an actor needs from the credential store to find a stored access key."""

    async def load_access_key(self, server_url: str) -> Secret | None: ...

    async def save_access_key(self, server_url: str, key: Secret | None) -> None: ...


def _add_hint(name: str, url: str | None) -> str:
    return f"ncp-broker add {name} {url or 'URL'} --access-key -"


class Actor:
    """What every actor answers. The defaults refuse, naming what this server is instead."""

    kind = ""
    #: Whether the actor holds state a later actor for the same server must not overwrite (a grant with
    #: a renewal that may be in flight): a reload that drops the server keeps such an actor aside, closed.
    keeps_a_grant = False

    def __init__(self, server: Server, aliases: Sequence[str] = ()) -> None:
        self.server = server
        self.aliases: tuple[str, ...] = tuple(aliases) or (server.name,)

    @property
    def label(self) -> str:
        """The name messages use: the first entry, and the others when there are aliases."""
        others = [a for a in self.aliases if a != self.server.name]
        return f"{self.server.name} (also: {', '.join(others)})" if others else self.server.name

    # ---- life -----------------------------------------------------------------------------------

    def accepts(self, server: Server) -> bool:
        """Whether this actor can carry on for ``server`` after a reload (its grant is the same)."""
        return server == self.server

    def reconfigure(self, server: Server, aliases: Sequence[str]) -> None:
        """A reload kept this actor: take the new settings and names."""
        self.server = server
        self.aliases = tuple(aliases) or (server.name,)

    async def start(self) -> None:
        """Load what is stored, so the timer can renew ahead of the first request. Never raises."""

    def close(self) -> None:
        """Take no new exchanges (the daemon stops, or a reload retired this server); what is in flight
        finishes."""

    def reopen(self) -> None:
        """A reload brought this server back: take exchanges again."""

    def status(self) -> GrantState:
        raise NotImplementedError

    # ---- requests -------------------------------------------------------------------------------

    def _refusal(self) -> WireError:
        return WireError(
            "bad_request",
            f"{self.label} is not an OAuth server (auth type: {self.server.kind}); there is nothing to "
            "log in to",
            f"ncp-broker add {self.server.name} {self.server.url or 'URL'} --oauth",
        )

    async def get_token(self, min_ttl: float, *, request: ResourceRequest | None = None) -> TokenResult:
        """A token with ``min_ttl`` left; ``request`` is the one HTTP request it is for (a DPoP-bound
        token's answer carries a proof for it)."""
        raise self._refusal()

    def token_now(self, min_ttl: float) -> TokenResult | None:
        """What :meth:`get_token` would answer, if it can be known now without waiting or any I/O; else
        None (then ``get_token`` answers). Never raises."""
        return None

    async def token_rejected(
        self,
        token: Secret,
        www_authenticate: str | None = None,
        *,
        request: ResourceRequest | None = None,
    ) -> TokenResult:
        raise self._refusal()

    async def scope_insufficient(
        self, token: Secret | None, scopes: list[str], www_authenticate: str | None
    ) -> TokenResult:
        raise self._refusal()

    async def login(self, mode: LoginMode, *, open_browser: bool, will_open: bool) -> LoginStarted:
        raise self._refusal()

    async def login_wait(self) -> TokenResult:
        raise self._refusal()

    async def login_complete(self, response: str) -> TokenResult:
        raise self._refusal()

    async def logout(self) -> LogoutResult:
        raise WireError("not_brokered", f"{self.label} holds no credentials to log out of")

    async def invalidate(self, what: Literal["tokens", "client", "all"]) -> InvalidateResult:
        held = "client registration" if what == "client" else "credentials"
        raise WireError("not_brokered", f"{self.label} holds no {held} to invalidate")

    async def set_access_key(self, key: Secret) -> None:
        raise WireError(
            "bad_request",
            f"{self.label} is not a bearer server; access keys are only for auth type bearer",
            f"ncp-broker add {self.server.name} URL --access-key -",
        )

    async def import_grant(self, item: ImportItem, *, replace: bool) -> Imported:
        return Imported(
            server=self.server.name,
            file=str(item.path),
            notes=list(item.notes),
            outcome="failed",
            detail=f"{self.label} is not an OAuth server here",
        )


class BearerActor(Actor):
    """A static access key. ``token_rejected`` cannot make a new one; it records the rejection for status."""

    kind = "bearer"

    def __init__(self, server: Server, store: KeyStore, aliases: Sequence[str] = ()) -> None:
        super().__init__(server, aliases)
        assert server.url is not None
        self._store = store
        self._key: Secret | None = server.access_key
        self._rejected_at: float | None = None

    def accepts(self, server: Server) -> bool:
        return server.kind == "bearer"

    def reconfigure(self, server: Server, aliases: Sequence[str]) -> None:
        if server.access_key != self.server.access_key:
            self._key, self._rejected_at = server.access_key, None
        super().reconfigure(server, aliases)

    async def get_token(self, min_ttl: float, *, request: ResourceRequest | None = None) -> TokenResult:
        """The access key (Bearer, whatever ``request`` the caller names)."""
        if self._key is None:
            assert self.server.url is not None
            self._key = await self._store.load_access_key(self.server.url)
        if self._key is None:
            raise WireError(
                "needs_login",
                f"no access key is stored for {self.label}",
                _add_hint(self.server.name, self.server.url),
            )
        return TokenResult(token=self._key)

    def token_now(self, min_ttl: float) -> TokenResult | None:
        return None if self._key is None else TokenResult(token=self._key)

    async def set_access_key(self, key: Secret) -> None:
        """Persist a new key (before it is used: DESIGN.md rule 3) and serve it from now on."""
        assert self.server.url is not None
        await self._store.save_access_key(self.server.url, key)
        self._key = key
        self._rejected_at = None

    async def _forget_key(self) -> bool:
        """Forget the stored key (a key in the config file stays there); whether one was held."""
        assert self.server.url is not None
        await self._store.save_access_key(self.server.url, None)
        had = self._key is not None
        self._key = self.server.access_key
        return had

    async def logout(self) -> LogoutResult:
        """Logout for an access key: forget the stored key."""
        return LogoutResult(had_grant=await self._forget_key(), revocation=[], saved=True)

    async def invalidate(self, what: Literal["tokens", "client", "all"]) -> InvalidateResult:
        if what == "client":
            return await super().invalidate(what)
        return InvalidateResult(forgot=["tokens"] if await self._forget_key() else [], saved=True)

    async def token_rejected(
        self,
        token: Secret,
        www_authenticate: str | None = None,
        *,
        request: ResourceRequest | None = None,
    ) -> TokenResult:
        answer = await self.get_token(0, request=request)
        if token == answer.token:
            self._rejected_at = time.time()
        return answer

    def status(self) -> GrantState:
        if self._rejected_at is not None:
            return GrantState(
                state="rejected",
                detail="the server refused the access key; store a new one",
                rejected_at=self._rejected_at,
                hint=_add_hint(self.server.name, self.server.url),
            )
        source = "config" if self.server.access_key is not None else "store"
        return GrantState(state="valid", detail=f"access key ({source})")


class _RefusingActor(Actor):
    """An actor that answers every token request with the same error, and says so in status."""

    state = ""

    def _error(self) -> WireError:
        raise NotImplementedError

    async def get_token(self, min_ttl: float, *, request: ResourceRequest | None = None) -> TokenResult:
        raise self._error()

    async def token_rejected(
        self,
        token: Secret,
        www_authenticate: str | None = None,
        *,
        request: ResourceRequest | None = None,
    ) -> TokenResult:
        raise self._error()

    def status(self) -> GrantState:
        error = self._error()
        return GrantState(state=self.state, detail=error.message, hint=error.hint)


class OAuthUnavailableActor(_RefusingActor):
    """An OAuth server in a broker that was built without OAuth (unit tests of the broker alone)."""

    kind = "oauth"
    state = "needs_login"

    def accepts(self, server: Server) -> bool:
        return server.kind == "oauth"

    def _error(self) -> WireError:
        return WireError(
            "login_unavailable",
            f"{self.label} uses OAuth, and this version of ncp-broker cannot log in yet",
            "use an access key instead: " + _add_hint(self.server.name, self.server.url),
        )

    def _refusal(self) -> WireError:
        return self._error()


class UnbrokeredActor(_RefusingActor):
    """An entry the broker lists but holds no credentials for (stdio, basic auth, ...)."""

    kind = "none"
    state = "not_brokered"

    def _error(self) -> WireError:
        return WireError(
            "not_brokered",
            f"{self.server.name} is not brokered: {self.server.reason}",
            "give it a url and an auth block of type oauth or bearer (see docs/configuration.md)",
        )


class ConflictActor(_RefusingActor):
    """Entries that name one server (one canonical URL) with settings that disagree: which settings
    would the one grant use? Both are refused until the config agrees with itself (DESIGN rule 11)."""

    kind = "conflict"
    state = "config_conflict"

    def __init__(self, server: Server, aliases: Sequence[str], differing: Sequence[str]) -> None:
        super().__init__(server, aliases)
        self.differing = tuple(differing)

    def accepts(self, server: Server) -> bool:
        return False  # rebuilt on every reload, from the entries as they are then

    def _error(self) -> WireError:
        names = " and ".join(self.aliases)
        return WireError(
            "config_conflict",
            f"{names} name the same server ({self.server.url}) with different settings "
            f"({', '.join(self.differing)}); one grant cannot follow both, so neither is used",
            f"make {', '.join(self.differing)} the same in both entries (or remove one), then: "
            "ncp-broker reload",
        )

    def _refusal(self) -> WireError:
        return self._error()

    async def logout(self) -> LogoutResult:
        raise self._error()

    async def invalidate(self, what: Literal["tokens", "client", "all"]) -> InvalidateResult:
        raise self._error()
