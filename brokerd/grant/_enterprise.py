"""Enterprise-managed authorization (E2, SEP-990): the login at the company's IdP, shared by its servers.

Config entries that name the same ``auth.oauth21.enterprise.issuer`` share one IdP grant: one
:class:`IdpActor` (its own store record, its own renewal timer), so the second server of the same company
needs no new login. That grant is an ordinary authorization-code grant at the IdP — logged in with the
browser, paste or device machinery of any grant, with the ``openid`` scope, refreshed like any grant — whose
ID token is what each server exchanges for an ID-JAG (``brokerd.grant._present``). An ID token with less
than :data:`ID_TOKEN_MIN_LIFE` seconds left is renewed first.

``ncp-broker login SERVER`` of any of those servers is the login at the IdP; their ``status`` says whether
the IdP grant is held. Entries that name one IdP must agree on ``enterprise.clientId``: one login there is
one client's.
"""

from __future__ import annotations

import logging

from brokerd import oauth
from brokerd.config import EnterpriseSettings, OAuthSettings, Server
from brokerd.grant._actor import OAuthActor
from brokerd.grant._context import OAuthContext
from brokerd.grant._sources import CredentialError
from brokerd.secret import Secret
from brokerd.store import Store
from brokerd.wire import WireError

__all__ = ["ID_TOKEN_MIN_LIFE", "IdpActor", "IdpRegistry", "idp_key"]

log = logging.getLogger("brokerd.grant")

ID_TOKEN_MIN_LIFE = 60.0
"""An ID token with less life than this is renewed before it is exchanged (the exchange, then the jwt-bearer
request, follow at once, but the IdP checks ``exp`` when the exchange arrives)."""


def idp_key(issuer: str) -> str:
    """The store key of the IdP grant of ``issuer``: under the issuer, at a path no MCP server uses, so it
    never shares a record with a server's grant."""
    return f"{oauth.canonical_url(issuer).rstrip('/')}/.well-known/ncp-broker-enterprise-grant"


def _idp_server(enterprise: EnterpriseSettings, first: Server) -> Server:
    """The IdP as a server entry: its issuer, the client registered there, the login's scopes; named after
    the first entry that uses it, so that a hint's ``ncp-broker login NAME`` works."""
    assert first.oauth is not None
    settings = OAuthSettings(
        scopes=enterprise.scopes,
        callback_port=first.oauth.callback_port,
        client_id=enterprise.client_id,
        client_secret=enterprise.client_secret,
        client_metadata_url=None,
        dpop="off",  # DPoP binds the MCP server's token, not the IdP session
    )
    return Server(
        name=first.name,
        kind="oauth",
        url=enterprise.issuer,
        oauth=settings,
        allow_insecure_loopback=first.allow_insecure_loopback,
        allow_private_network=first.allow_private_network,
    )


class IdpActor(OAuthActor):
    """The one owner of the login at one enterprise IdP."""

    kind = "enterprise_idp"

    def __init__(
        self, enterprise: EnterpriseSettings, first: Server, store: Store, ctx: OAuthContext
    ) -> None:
        self.enterprise = enterprise
        super().__init__(
            _idp_server(enterprise, first), store, ctx, (first.name,), key=idp_key(enterprise.issuer)
        )

    @property
    def label(self) -> str:
        return f"the enterprise IdP {self.enterprise.issuer}"

    async def probe(self) -> tuple[oauth.Discovery, tuple[oauth.Challenge, ...]]:
        """The IdP's own metadata (discovery at its issuer): no MCP server stands in front of it."""
        discovery = await self.drive(oauth.discover_issuer(self.enterprise.issuer, policy=self.policy))
        return discovery, ()

    async def id_token(self, wanted: EnterpriseSettings) -> tuple[Secret, oauth.Registration, str]:
        """A fresh ID token from the IdP grant, with the registration and token endpoint to exchange it at.

        Raises:
            CredentialError: not logged in at the IdP, the grant ended, no fresh ID token, or ``wanted``
                names another client there than the grant's.
            oauth.TransientError: the IdP cannot be reached and the ID token has expired.
        """
        if wanted.client_id != self.enterprise.client_id:
            raise CredentialError(
                f"two servers name {self.enterprise.issuer} with different enterprise.clientId"
                f" ({self.enterprise.client_id!r} and {wanted.client_id!r}); one login there is one client's",
                hint="make auth.oauth21.enterprise the same in every entry that names this IdP, then: "
                "ncp-broker reload",
            )
        try:
            await self.serve(0)
            tokens = self.grant.tokens
            if tokens is not None and self._stale(tokens.id_token):
                await self.serve(0, refused=tokens.access_token)  # renew it for a new ID token
        except WireError as exc:
            if exc.code == "as_unreachable":
                raise oauth.TransientError(exc.message) from None
            raise CredentialError(exc.message, hint=exc.hint or self.login_hint) from None
        tokens = self.grant.tokens
        if tokens is None or tokens.id_token is None or self._stale(tokens.id_token):
            raise CredentialError(
                f"{self.label} gave no ID token with life left; log in there again", hint=self.login_hint
            )
        registration = self.grant.registrations.get(tokens.issuer)
        if registration is None:
            raise CredentialError(f"the client registration at {self.label} is gone", hint=self.login_hint)
        return tokens.id_token, registration, tokens.token_endpoint

    def _stale(self, id_token: Secret | None) -> bool:
        if id_token is None:
            return True
        try:
            exp = oauth.unverified_claims(id_token.reveal()).get("exp")
        except ValueError:
            return False  # not one we can read: the IdP judges it
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            return False
        return float(exp) - self.ctx.clock() < ID_TOKEN_MIN_LIFE


class IdpRegistry:
    """The IdP grants of a daemon, one per enterprise issuer, made when a server first names one and kept
    across reloads (a grant has one writer for the daemon's life)."""

    def __init__(self, store: Store, ctx: OAuthContext) -> None:
        self._store = store
        self._ctx = ctx
        self._actors: dict[str, IdpActor] = {}
        self._closed = False

    def get(self, enterprise: EnterpriseSettings, server: Server) -> IdpActor:
        key = oauth.canonical_url(enterprise.issuer)
        actor = self._actors.get(key)
        if actor is None:
            actor = self._actors[key] = IdpActor(enterprise, server, self._store, self._ctx)
            if self._closed:
                actor.close()
            self._ctx.nursery.start_soon(actor.start)
        return actor

    def close(self) -> None:
        """The daemon stops: no IdP grant starts a new exchange."""
        self._closed = True
        for actor in self._actors.values():
            actor.close()
