"""Per-server credential actors: the only code that reads or writes one server's credentials.

One actor per configured server (DESIGN.md rule 2). The socket server never looks inside credentials; it
asks the actor named in the request and relays the answer or the :class:`~brokerd.wire.WireError`.

* :class:`BearerActor` serves a static access key (NCP's ``"type": "bearer"``), the fallback for servers
  without OAuth. The key comes from the config entry (``auth.token``) or from the store
  (``ncp-broker add NAME URL --access-key -``).
* ``brokerd.grant.OAuthActor`` owns an OAuth grant (login, refresh, persistence).
* :class:`UnbrokeredActor` answers for entries the broker lists but does not hold credentials for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from brokerd.config import Server
from brokerd.secret import Secret
from brokerd.wire import WireError

if TYPE_CHECKING:
    from brokerd.grant import OAuthContext
    from brokerd.store import Store

__all__ = [
    "Actor",
    "BearerActor",
    "KeyStore",
    "OAuthUnavailableActor",
    "TokenAnswer",
    "UnbrokeredActor",
    "make_actor",
]


@dataclass(frozen=True)
class TokenAnswer:
    token: Secret
    token_type: str = "Bearer"  # noqa: S105 (a token type, not a password)
    expires_at: float | None = None

    def as_result(self, now: float) -> dict[str, Any]:
        expires_in = None if self.expires_at is None else max(0.0, round(self.expires_at - now, 3))
        return {
            "token": self.token,
            "token_type": self.token_type,
            "expires_at": self.expires_at,
            "expires_in": expires_in,
        }


class KeyStore(Protocol):
    """What an actor needs from the credential store to find a stored access key."""

    async def load_access_key(self, server_url: str) -> Secret | None: ...

    async def save_access_key(self, server_url: str, key: Secret | None) -> None: ...


class Actor(Protocol):
    server: Server

    async def get_token(self, min_ttl: float) -> TokenAnswer: ...

    async def token_rejected(self, token: Secret, www_authenticate: str | None = None) -> TokenAnswer: ...

    def status(self) -> dict[str, Any]: ...

    def accepts(self, server: Server) -> bool:
        """Whether this actor can carry on for ``server`` after a reload, keeping its state."""
        ...


def _add_hint(name: str, url: str | None) -> str:
    return f"ncp-broker add {name} {url or 'URL'} --access-key -"


class BearerActor:
    """A static access key. ``token_rejected`` cannot make a new one; it records the rejection for status."""

    def __init__(self, server: Server, store: KeyStore) -> None:
        self.server = server
        self._store = store
        self._key: Secret | None = server.access_key
        self._rejected_at: float | None = None

    def accepts(self, server: Server) -> bool:
        return server == self.server

    async def get_token(self, min_ttl: float) -> TokenAnswer:
        if self._key is None:
            assert self.server.url is not None
            self._key = await self._store.load_access_key(self.server.url)
        if self._key is None:
            raise WireError(
                "needs_login",
                f"no access key is stored for {self.server.name}",
                _add_hint(self.server.name, self.server.url),
            )
        return TokenAnswer(self._key)

    async def set_key(self, key: Secret) -> None:
        """Persist a new key (before it is used: DESIGN.md rule 3) and serve it from now on."""
        assert self.server.url is not None
        await self._store.save_access_key(self.server.url, key)
        self._key = key
        self._rejected_at = None

    async def forget_key(self) -> dict[str, Any]:
        """Logout for an access key: forget the stored key (a key in the config file stays there)."""
        assert self.server.url is not None
        await self._store.save_access_key(self.server.url, None)
        had = self._key is not None
        self._key = self.server.access_key
        return {"had_grant": had, "revocation": [], "saved": True}

    async def token_rejected(self, token: Secret, www_authenticate: str | None = None) -> TokenAnswer:
        answer = await self.get_token(0)
        if token == answer.token:
            self._rejected_at = time.time()
        return answer

    def status(self) -> dict[str, Any]:
        if self._rejected_at is not None:
            return {
                "state": "rejected",
                "detail": "the server refused the access key; store a new one",
                "rejected_at": self._rejected_at,
                "hint": _add_hint(self.server.name, self.server.url),
            }
        source = "config" if self.server.access_key is not None else "store"
        return {"state": "valid", "detail": f"access key ({source})"}


class _RefusingActor:
    """An actor that answers every token request with the same error, and says so in status."""

    state = ""

    def __init__(self, server: Server) -> None:
        self.server = server

    def accepts(self, server: Server) -> bool:
        return server == self.server

    def _error(self) -> WireError:
        raise NotImplementedError

    async def get_token(self, min_ttl: float) -> TokenAnswer:
        raise self._error()

    async def token_rejected(self, token: Secret, www_authenticate: str | None = None) -> TokenAnswer:
        raise self._error()

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "detail": self._error().message}


class OAuthUnavailableActor(_RefusingActor):
    """An OAuth server in a broker that was built without OAuth (unit tests of the broker alone)."""

    state = "needs_login"

    def _error(self) -> WireError:
        return WireError(
            "login_unavailable",
            f"{self.server.name} uses OAuth, and this version of ncp-broker cannot log in yet",
            "use an access key instead: " + _add_hint(self.server.name, self.server.url),
        )


class UnbrokeredActor(_RefusingActor):
    """An entry the broker lists but holds no credentials for (stdio, basic auth, ...)."""

    state = "not_brokered"

    def _error(self) -> WireError:
        return WireError(
            "not_brokered",
            f"{self.server.name} is not brokered: {self.server.reason}",
            "give it a url and an auth block of type oauth or bearer (see docs/configuration.md)",
        )


def make_actor(server: Server, store: Store, oauth: OAuthContext | None = None) -> Actor:
    """The actor for ``server``; OAuth servers need the daemon's shared OAuth context to log in."""
    if server.kind == "bearer":
        return BearerActor(server, store)
    if server.kind == "oauth":
        if oauth is None:
            return OAuthUnavailableActor(server)
        from brokerd.grant import OAuthActor

        return OAuthActor(server, store, oauth)
    return UnbrokeredActor(server)
