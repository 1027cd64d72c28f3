"""What the store keeps for one server: everything the next refresh needs (DESIGN.md rule 5).

One model of a grant: the record holds the OAuth core's own :class:`~brokerd.oauth.TokenSet` and
:class:`~brokerd.oauth.Registration`, persisted as they are (msgspec, with the Secret hooks of
:mod:`brokerd.secret`), so nothing maps one shape onto another. Every secret is a
:class:`~brokerd.secret.Secret`, so a record that reaches a log line or an error message prints
``<redacted>`` where the secret would be.

Compatibility rules for anyone adding a field: every new field has a default, and unknown fields are
ignored on load (never ``forbid_unknown_fields`` here), so a document written by a newer version still
loads in an older one, and documents of older versions (with ``issued_lifetime`` or ``discovery``, say)
load in this one. An incompatible change bumps :data:`DOCUMENT_VERSION`.
"""

from __future__ import annotations

import msgspec

from brokerd.oauth import Registration, TokenSet
from brokerd.secret import Secret

__all__ = ["DOCUMENT_VERSION", "RefreshSent", "ServerRecord"]

#: The format version written into every stored document. Loading a document with a higher version
#: reports it and leaves it in place (it is not corrupt, only newer); a later save replaces it.
DOCUMENT_VERSION = 1


class RefreshSent(msgspec.Struct, frozen=True, kw_only=True):
    """A refresh was sent and its answer not yet recorded: which refresh token it presented (the first 16
    hex digits of its SHA-256, not the token) and when. Found at start-up, it means the previous daemon
    stopped mid-refresh; see ``brokerd.grant._grant.Unanswered``."""

    token_digest: str
    sent_at: float


class ServerRecord(msgspec.Struct, kw_only=True):
    """Everything the broker persists about one server, keyed by its canonical URL."""

    server_url: str
    #: Static bearer key for a server without OAuth (config ``"type": "bearer"``).
    access_key: Secret | None = None
    tokens: TokenSet | None = None
    #: Keyed by the authorization server's issuer identifier, exactly as it appears in its metadata.
    registrations: dict[str, Registration] = msgspec.field(default_factory=dict)
    refresh_sent: RefreshSent | None = None
    #: The grant's DPoP private key (E3) as PKCS #8 PEM: kept like a refresh token, and only while the
    #: tokens are bound to it (their ``dpop_jkt`` is its thumbprint).
    dpop_key: Secret | None = None
