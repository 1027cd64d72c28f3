"""The client's private key for ``private_key_jwt`` (E1), read where the config says, each time it is used.

``{"file": PATH}``: a PEM file of mode 0600 owned by the daemon's user (``brokerd.keys.load_key_file``
checks it: a key others can read is refused with ``chmod 600 PATH``). ``{"keyring": ENTRY}``: the PEM text
in the OS keyring entry ``ENTRY`` of service ``ncp-broker`` (``keyring set ncp-broker ENTRY < key.pem``).
Never an argument or an environment variable. The key is read again for every token request, so a rotated
key file is picked up without a restart; it stays in the daemon's memory only while it signs.
"""

from __future__ import annotations

import trio

from brokerd import config, keys
from brokerd.grant._sources import CredentialError
from brokerd.secret import Secret

__all__ = ["KEYRING_TIMEOUT", "load_client_key"]

KEYRING_TIMEOUT = 5.0
_KEYRING_SERVICE = "ncp-broker"


async def load_client_key(source: config.KeySource) -> keys.PrivateKey:
    """The key ``source`` names.

    Raises:
        CredentialError: the file or keyring entry is missing, readable by others, garbled, encrypted, or a
            kind of key that cannot sign; the keyring does not answer. The hint says what to run.
    """
    try:
        if source.file is not None:
            return await trio.to_thread.run_sync(keys.load_key_file, source.file)
        assert source.keyring is not None
        pem = await _from_keyring(source.keyring)
        return await trio.to_thread.run_sync(
            lambda: keys.load_key_pem(pem, what=f"the private key in keyring entry {source.keyring!r}")
        )
    except keys.KeyFileError as exc:
        raise CredentialError(
            exc.message, hint=exc.hint or "check auth.oauth21.privateKey in the config"
        ) from None


async def _from_keyring(entry: str) -> Secret:
    def get() -> str | None:
        import keyring

        return keyring.get_password(_KEYRING_SERVICE, entry)

    hint = f"store it: keyring set {_KEYRING_SERVICE} {entry} < client.pem"
    try:
        with trio.fail_after(KEYRING_TIMEOUT):
            value = await trio.to_thread.run_sync(get, abandon_on_cancel=True)
    except trio.TooSlowError:
        raise CredentialError(f"the keyring did not answer within {KEYRING_TIMEOUT:g} s", hint=hint) from None
    except Exception as exc:  # noqa: BLE001 - keyring backends raise anything (D-Bus errors, RuntimeError, …)
        raise CredentialError(f"the keyring cannot be read ({type(exc).__name__})", hint=hint) from None
    if not value:
        raise CredentialError(
            f"keyring entry {entry!r} of service {_KEYRING_SERVICE} holds no key", hint=hint
        )
    return Secret(value)
