"""What the store keeps for one server: everything the next refresh needs (DESIGN.md rule 5).

The records are plain msgspec Structs so that the OAuth core can fill them in and the store can write them
as JSON. Every secret is a :class:`~brokerd.secret.Secret`, so a record that reaches a log line or an error
message prints ``<redacted>`` where the secret would be.

Compatibility rules for anyone adding a field: every new field has a default, and unknown fields are
ignored on load (never ``forbid_unknown_fields`` here), so a document written by a newer version still
loads in an older one. An incompatible change bumps :data:`DOCUMENT_VERSION`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from brokerd.secret import Secret

__all__ = ["DOCUMENT_VERSION", "RegistrationRecord", "ServerRecord", "TokenRecord"]

#: The format version written into every stored document. Loading a document with a higher version
#: reports it and leaves it in place (it is not corrupt, only newer); a later save replaces it.
DOCUMENT_VERSION = 1


class TokenRecord(msgspec.Struct, kw_only=True):
    """The current grant: tokens plus what refreshing them needs, without rediscovery."""

    access_token: Secret | None = None
    refresh_token: Secret | None = None
    token_type: str = "Bearer"  # noqa: S105 - a token type name, not a secret
    #: Wall-clock expiry of the access token (seconds since the epoch), or None if the server gave none.
    expires_at: float | None = None
    #: ``expires_in`` as issued, in seconds; the refresh point is derived from it (DESIGN.md rule 9).
    issued_lifetime: float | None = None
    scopes: list[str] = msgspec.field(default_factory=list)
    token_endpoint: str | None = None
    issuer: str | None = None
    #: RFC 8707 resource indicator the grant is bound to.
    resource: str | None = None
    obtained_at: float | None = None
    #: The client the grant was issued to, and where to revoke it at logout (no rediscovery needed).
    client_id: str | None = None
    revocation_endpoint: str | None = None


class RegistrationRecord(msgspec.Struct, kw_only=True):
    """One client registration, kept per authorization server issuer."""

    client_id: str
    client_secret: Secret | None = None
    token_endpoint_auth_method: str = "none"  # noqa: S105 - a method name, not a secret
    redirect_uris: list[str] = msgspec.field(default_factory=list)
    registered_at: float | None = None
    #: RFC 7592 client configuration endpoint and its bearer token, when the server returned them.
    registration_client_uri: str | None = None
    registration_access_token: Secret | None = None
    client_id_issued_at: float | None = None
    #: 0 means the secret never expires (RFC 7591).
    client_secret_expires_at: float | None = None
    #: How the client came to be: ``preregistered``, ``metadata_document`` or ``dynamic``.
    source: str = "dynamic"
    grant_types: list[str] = msgspec.field(default_factory=list)
    scope: str | None = None


class ServerRecord(msgspec.Struct, kw_only=True):
    """Everything the broker persists about one server, keyed by its canonical URL."""

    server_url: str
    #: Static bearer key for a server without OAuth (config ``"type": "bearer"``).
    access_key: Secret | None = None
    tokens: TokenRecord | None = None
    #: Keyed by the authorization server's issuer identifier, exactly as it appears in its metadata.
    registrations: dict[str, RegistrationRecord] = msgspec.field(default_factory=dict)
    #: Cached, non-secret discovery metadata (protected resource and authorization server documents).
    discovery: dict[str, Any] | None = None
