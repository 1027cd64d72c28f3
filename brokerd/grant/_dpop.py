"""A grant's DPoP key (E3, RFC 9449) and the proofs made with it for resource requests.

The key is made at login (a new one for every new grant: ``brokerd.keys.new_dpop_key``), kept with the
tokens it binds (the store record's ``dpop_key``: the file store's 0600 document, or the keyring) and used
only inside the daemon: the core signs with :meth:`~brokerd.keys.PrivateKey.signer`, and what leaves the
daemon is a proof — a JWT that names the public key, one HTTP method and URL, the moment, and the access
token's hash (``ath``). A stolen access token is useless without the key; a stolen proof is good for that one
request, for minutes at most, and servers that track ``jti`` refuse it a second time.

A caller asks for a proof with the request it is about to send (``get_token`` with ``method`` and ``url``,
and the resource server's ``DPoP-Nonce`` when it demanded one); ``brokerd.resource_requests`` checks that
the URL is at the MCP server's origin: the daemon makes no proofs for requests to anywhere else.
"""

from __future__ import annotations

import logging

from brokerd import keys, oauth
from brokerd.oauth import Entropy
from brokerd.secret import Secret
from brokerd.wire import WireError

__all__ = ["load_stored_key", "resource_proof"]

log = logging.getLogger("brokerd.grant")


def load_stored_key(
    pem: Secret | None, tokens: oauth.TokenSet | None, *, label: str
) -> keys.PrivateKey | None:
    """The DPoP key of a stored grant, if its tokens are bound to it; None (and a warning) for a key that
    cannot be read or is not the one the tokens are bound to: such a grant cannot be used or renewed."""
    if pem is None or tokens is None or tokens.dpop_jkt is None:
        return None
    try:
        key = keys.load_key_pem(pem, what="the stored DPoP key")
    except keys.KeyFileError as exc:
        log.warning("%s: %s; the DPoP-bound grant cannot be used, a login is needed", label, exc.message)
        return None
    if key.thumbprint != tokens.dpop_jkt:
        log.warning(
            "%s: the stored DPoP key is not the one the tokens are bound to; a login is needed", label
        )
        return None
    return key


def resource_proof(
    tokens: oauth.TokenSet,
    key: keys.PrivateKey | None,
    *,
    method: str,
    url: str,
    now: float,
    entropy: Entropy,
    nonce: str | None,
    label: str,
    login_hint: str,
) -> Secret | None:
    """A fresh proof for ``method url`` with ``tokens`` (``ath``, and ``nonce`` when given); None for a
    Bearer token.

    Raises:
        WireError: ``needs_login``: the token is bound to a key the daemon no longer has.
    """
    if tokens.token_type != "DPoP":  # noqa: S105 - a token type name
        return None
    try:
        headers = oauth.resource_headers(
            tokens,
            method=method,
            url=url,
            now=now,
            entropy=entropy,
            dpop_key=key.signer() if key is not None else None,
            nonce=nonce,
        )
    except oauth.PolicyError as exc:
        raise WireError("needs_login", f"{label}: {exc.message}", login_hint) from None
    return next((Secret(value) for name, value in headers if name == "dpop"), None)
