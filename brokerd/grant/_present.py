"""What a grant presents at the token endpoint, and the exchange it takes, for each grant type (E1-E4).

:meth:`Presenter.plan` reads everything local first — the client's key (``private_key_jwt``), the workload's
token, the enterprise IdP's ID token — and returns the flow to drive, so that nothing is sent (and no
refresh token is marked as spent) when a key file is unreadable or a workload token has expired:

==================  ===================================================  ==============================
grant               the first token (nothing held)                       renewal (a token held)
==================  ===================================================  ==============================
authorization_code  a person's login (``_login.py``), not here            ``oauth.renew``: the refresh
client_credentials  discovery, the configured client, the grant           ``oauth.renew``: ask again
jwt_bearer with     discovery, the workload's JWT, the grant              ``oauth.renew`` with the JWT
``workloadToken``                                                          read again
jwt_bearer with     discovery, the IdP's ID token → an ID-JAG at the      a new ID-JAG, then
``enterprise``      IdP, the grant with it                                ``oauth.renew`` with it
==================  ===================================================  ==============================

A new grant is DPoP-bound when ``oauth.wants_dpop`` says so (``auth.oauth21.dpop``): a fresh key is made for
it, and every later request of that grant (renewal, revocation, proofs) uses that key.

After the authorization server refuses what a grant presented, :meth:`Presenter.note_refused` remembers it;
:meth:`Presenter.changed_since_refusal` says whether something new can be presented (the renewal machine then
gets ``Retry``), and the same workload token or ID token is never presented twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import msgspec

from brokerd import keys, oauth
from brokerd.grant._client_key import load_client_key
from brokerd.grant._sources import FileState, TokenSource, file_state
from brokerd.secret import Secret

if TYPE_CHECKING:
    from brokerd.grant._actor import OAuthActor
    from brokerd.grant._enterprise import IdpActor

__all__ = ["Plan", "Presenter"]

Kind = Literal["authorization_code", "client_credentials", "workload", "enterprise"]


@dataclass
class Plan:
    """One exchange, ready to send: the ``flow``, the ``registration`` it authenticates with, the DPoP
    key the new tokens will be bound to, whether it spends a refresh token, and what it presents (a
    workload token or an ID token, to remember should it be refused)."""

    flow: oauth.Flow[oauth.TokenSet]
    registration: oauth.Registration
    dpop_key: keys.PrivateKey | None
    spends_refresh_token: bool
    presented: Secret | None = None


def _without_offline_access(
    scopes: tuple[str, ...] | None, configured: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """A grant without a person asks again instead of refreshing: ``offline_access`` (a refresh token) is
    only asked for when the config says so (authorization servers may refuse it for these grants)."""
    if scopes is None or "offline_access" in (configured or ()):
        return scopes
    return tuple(s for s in scopes if s != "offline_access") or None


def _digest(value: Secret | None) -> str | None:
    return None if value is None else hashlib.sha256(value.reveal().encode()).hexdigest()


class Presenter:
    """The credentials of one actor's grant, from its settings (rebuilt when a reload changes them)."""

    def __init__(self, actor: OAuthActor, idp: IdpActor | None = None) -> None:
        self._actor = actor
        self._idp = idp
        settings = actor.settings
        self.source: TokenSource | None = None
        self.kind: Kind = "authorization_code"
        if settings.grant == "client_credentials":
            self.kind = "client_credentials"
        elif settings.workload_token is not None:
            self.kind = "workload"
            self.source = TokenSource(
                settings.workload_token,
                what="the workload token",
                key="auth.oauth21.workloadToken",
                server=actor.server.name,
            )
        elif settings.enterprise is not None:
            self.kind = "enterprise"
            if settings.enterprise.id_token is not None:
                self.source = TokenSource(
                    settings.enterprise.id_token,
                    what="the enterprise ID token",
                    key="auth.oauth21.enterprise.idToken",
                    server=actor.server.name,
                )
        # What the local inputs looked like when the grant was last refused (see _inputs); None: not refused.
        self._refused: tuple[FileState | None, FileState | None, str | None] | None = None

    @property
    def idp(self) -> IdpActor | None:
        """The enterprise IdP whose login this grant uses (None when an ``idToken`` source replaces it)."""
        return self._idp if self.kind == "enterprise" and self.source is None else None

    def able(self) -> bool:
        """Whether the daemon can get this grant's tokens without a person, now."""
        if self.kind == "authorization_code":
            return False
        idp = self.idp
        return idp is None or idp.grant.tokens is not None

    # ---- refusals -----------------------------------------------------------------------------------

    async def note_refused(self, plan: Plan | None) -> None:
        """The grant was refused (by the authorization server, or here for a bad key or token): remember
        what its inputs looked like, and never present the same workload or ID token again."""
        if self.source is not None and plan is not None and plan.presented is not None:
            self.source.note_refused(plan.presented)
        self._refused = await self._inputs()

    async def changed_since_refusal(self) -> bool:
        """Whether the inputs may have changed since the last refusal: a key or token file that changed (in
        content, mode or owner: ``chmod 600`` fixes a key), a new ID token at the IdP, or a command (which
        can only be asked by running it)."""
        if self._refused is None:
            return False
        if self.source is not None and self.source.source.command is not None:
            return True
        return await self._inputs() != self._refused

    async def _inputs(self) -> tuple[FileState | None, FileState | None, str | None]:
        settings = self._actor.settings
        key = settings.private_key.file if settings.private_key is not None else None
        token = self.source.source.file if self.source is not None else None
        idp = self.idp
        id_token = idp.grant.tokens.id_token if idp is not None and idp.grant.tokens is not None else None
        return (
            await file_state(key) if key is not None else None,
            await file_state(token) if token is not None else None,
            _digest(id_token),
        )

    # ---- what every request of the grant carries ---------------------------------------------------

    async def sender(self, dpop_key: keys.PrivateKey | None) -> oauth.Sender:
        """The signing inputs of a token request: the client's key for ``private_key_jwt`` (read now) and
        the grant's DPoP key.

        Raises:
            CredentialError: the client key cannot be read (the message names the file and the fix).
        """
        settings = self._actor.settings
        client_key = await load_client_key(settings.private_key) if settings.private_key is not None else None
        return oauth.Sender(
            entropy=self._actor.ctx.entropy,
            client_key=client_key.signer() if client_key is not None else None,
            dpop_key=dpop_key.signer() if dpop_key is not None else None,
        )

    # ---- plans --------------------------------------------------------------------------------------

    async def plan(self, seen: oauth.TokenSet | None) -> Plan:
        """The exchange that gets the grant's next tokens: the first ones when ``seen`` is None (only for a
        grant that needs no person), else the renewal of ``seen``.

        Raises:
            CredentialError: a key or token source fails (nothing was sent).
            oauth.OAuthError: discovery, DPoP policy (``required`` without ES256 at the authorization
                server), registration, or the enterprise IdP's exchange failed.
        """
        if seen is None:
            return await self._first()
        actor = self._actor
        registration = actor.grant.registrations.get(seen.issuer)
        if registration is None:
            raise oauth.GrantEndedError(
                "the client registration for this grant is gone", error=None, hint=actor.login_hint
            )
        registration = self._current(registration)
        dpop_key = actor.grant.dpop_key
        sender = await self.sender(dpop_key)
        assertion = presented = None
        if seen.refresh_token is None and seen.grant_type == oauth.JWT_BEARER:
            assertion, presented = await self._assertion(seen.issuer, seen.resource, seen.scopes or None)
        flow = oauth.renew(seen, registration, policy=actor.policy, sender=sender, assertion=assertion)
        spends = seen.refresh_token is not None
        return Plan(flow, registration, dpop_key, spends_refresh_token=spends, presented=presented)

    def _current(self, registration: oauth.Registration) -> oauth.Registration:
        """A configured client of a grant without a person, with the secret the config holds now: a reload
        that changes ``clientSecret`` applies to the next renewal (nobody logs in to bring it in)."""
        settings = self._actor.settings
        configured = (
            self.kind != "authorization_code"
            and registration.source == "preregistered"
            and registration.client_id == (settings.client_id or "")
            and registration.token_endpoint_auth_method in ("client_secret_basic", "client_secret_post")
        )
        if not configured or settings.client_secret is None:
            return registration
        return msgspec.structs.replace(registration, client_secret=settings.client_secret)

    async def _first(self) -> Plan:
        actor = self._actor
        settings = actor.settings
        discovery, challenges = await actor.probe()
        use_dpop = oauth.wants_dpop(settings.dpop, discovery, challenges)
        registration = await self._registration(discovery)
        dpop_key = keys.new_dpop_key() if use_dpop else None
        sender = await self.sender(dpop_key)
        scopes = _without_offline_access(oauth.select_scopes(discovery, settings.scopes), settings.scopes)
        policy = actor.policy
        if self.kind == "client_credentials":
            flow = oauth.client_credentials_flow(
                discovery, registration, policy=policy, scopes=scopes, sender=sender
            )
            return Plan(flow, registration, dpop_key, spends_refresh_token=False)
        assertion, presented = await self._assertion(discovery.issuer, discovery.resource_indicator, scopes)
        flow = oauth.jwt_bearer_flow(
            discovery, registration, assertion=assertion, policy=policy, scopes=scopes, sender=sender
        )
        return Plan(flow, registration, dpop_key, spends_refresh_token=False, presented=presented)

    async def _registration(self, discovery: oauth.Discovery) -> oauth.Registration:
        """The configured client at ``discovery``'s authorization server (no grant here registers
        dynamically: the specifications assume a client registered beforehand), or none at all for a
        workload that presents only its own token."""
        actor = self._actor
        settings = actor.settings
        if settings.client_id is None:
            return oauth.Registration(issuer=discovery.issuer, client_id="", source="preregistered")
        return await actor.drive(
            oauth.register(
                discovery,
                policy=actor.policy,
                redirect_uris=(),
                now=actor.ctx.clock(),
                client_id=settings.client_id,
                client_secret=settings.client_secret,
                auth_method=settings.token_endpoint_auth_method,
                private_key=settings.private_key is not None,
            )
        )

    async def _assertion(
        self, issuer: str, resource: str | None, scopes: Sequence[str] | None
    ) -> tuple[Secret, Secret]:
        """The jwt-bearer assertion, and what was presented for it: the workload's token (both), or a new
        ID-JAG for ``issuer`` and ``resource`` from the enterprise IdP, and the ID token it was had for."""
        actor = self._actor
        now = actor.ctx.clock()
        if self.kind == "workload":
            assert self.source is not None
            token = await self.source.read(now=now)
            return token, token
        settings = actor.settings
        enterprise = settings.enterprise
        assert enterprise is not None
        if self.source is not None:
            id_token = await self.source.read(now=now)
            idp_discovery = await actor.drive(oauth.discover_issuer(enterprise.issuer, policy=actor.policy))
            idp_registration = await actor.drive(
                oauth.register(
                    idp_discovery,
                    policy=actor.policy,
                    redirect_uris=(),
                    now=now,
                    client_id=enterprise.client_id,
                    client_secret=enterprise.client_secret,
                )
            )
            token_endpoint = idp_discovery.token_endpoint
        else:
            idp = self.idp
            assert idp is not None
            id_token, idp_registration, token_endpoint = await idp.id_token(enterprise)
        if resource is None:
            raise oauth.PolicyError("the MCP server's resource is unknown; an ID-JAG names it")
        jag = await actor.drive(
            oauth.exchange_for_id_jag(
                idp_registration,
                token_endpoint=token_endpoint,
                subject_token=id_token,
                audience=issuer,
                resource=resource,
                policy=actor.policy,
                scopes=scopes,
            )
        )
        return jag.assertion, id_token
