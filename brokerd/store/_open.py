"""Choosing a backend: ``"store": "auto" | "file" | "keyring"``.

``auto`` uses the keyring only when keyring's own choice is a *recommended* backend (priority 1 or more,
keyring's definition): GNOME Keyring / KWallet over D-Bus, the macOS Keychain, the Windows Credential
Locker. Anything else falls back to the file store:

- keyring's ``fail`` or ``null`` backend, or a chainer with nothing recommended to chain (headless Linux);
- keyrings.alt's file backends (priority below 1): a plaintext or home-made encrypted file, written in
  place without fsync, is no safer than our 0600 file and less durable;
- a backend whose detection raises, or does not answer within the timeout (D-Bus can hang).

``keyring`` insists on a usable backend and raises :class:`NoUsableKeyring` otherwise; ``file`` never
touches keyring at all.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

from keyring.backend import KeyringBackend

from brokerd.fsutil import ensure_private_dir
from brokerd.store._base import NoUsableKeyring, Store, StoreUnavailable
from brokerd.store._file import FileStore
from brokerd.store._keyring import KeyringStore, backend_name

__all__ = ["DEFAULT_KEYRING_TIMEOUT", "open_store"]

#: Seconds a single keyring call (or backend detection) may take before it counts as unavailable.
DEFAULT_KEYRING_TIMEOUT = 5.0


def _assess(backend: KeyringBackend) -> tuple[bool, str]:
    """Whether ``backend`` is fit to hold the broker's secrets, and a sentence saying why."""
    from keyring.backends import chainer, fail, null

    name = backend_name(backend)
    if isinstance(backend, fail.Keyring | null.Keyring):
        return False, f"keyring has no usable backend: {name}"
    try:
        if isinstance(backend, chainer.ChainerBackend):
            # A chainer writes to the first backend in its list, so that one must be recommended.
            chained = list(backend.backends)
            if not chained or chained[0].priority < 1:
                return False, f"keyring has no usable backend: {name} with nothing recommended to chain"
            return True, f"{name} over {backend_name(chained[0])} (priority {chained[0].priority:g})"
        priority = backend.priority
    except Exception as exc:  # noqa: BLE001 - a backend's priority probe may raise anything
        return False, f"keyring backend {name} is not usable ({type(exc).__name__}: {exc})"
    if priority < 1:
        return False, f"keyring has no usable backend: {name} is not recommended (priority {priority:g})"
    return True, f"{name} (priority {priority:g})"


def _detect(injected: KeyringBackend | None, timeout: float) -> tuple[KeyringBackend, bool, str] | None:
    """keyring's backend and whether it is usable, or None if detection did not finish within ``timeout``.

    Detection can block on D-Bus, so it runs in a daemon thread that is abandoned if it hangs.
    """
    outcome: list[tuple[KeyringBackend, bool, str]] = []

    def detect() -> None:
        if injected is not None:
            backend = injected
        else:
            import keyring
            from keyring.backends import fail

            try:
                backend = keyring.get_keyring()
            except Exception as exc:  # noqa: BLE001 - e.g. $PYTHON_KEYRING_BACKEND names one that raises
                why = f"keyring backend detection failed ({type(exc).__name__}: {exc})"
                outcome.append((fail.Keyring(), False, why))  # type: ignore[no-untyped-call]
                return
        outcome.append((backend, *_assess(backend)))

    worker = threading.Thread(target=detect, name="ncp-broker keyring detection", daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else None


def open_store(
    kind: Literal["auto", "file", "keyring"],
    data_dir: Path,
    *,
    keyring_backend: KeyringBackend | None = None,
    keyring_timeout: float = DEFAULT_KEYRING_TIMEOUT,
) -> Store:
    """The store for config ``"store": kind``, keeping its files in ``data_dir`` (made private, 0700).

    Call it once at start-up, before serving: it blocks for at most ``keyring_timeout`` while keyring
    detects its backend (never for ``"file"``). ``keyring_backend`` replaces keyring's own choice (tests
    inject an in-memory backend) and is judged by the same rules. ``keyring_timeout`` also bounds every
    later keyring call.

    Raises:
        NoUsableKeyring: ``kind == "keyring"`` and the backend is not usable (the message says what to do).
        StoreUnavailable: ``kind == "keyring"`` and detecting the backend did not finish in time.
        brokerd.fsutil.UnsafePathError: ``data_dir`` is a symlink, not a directory, or not ours.
        OSError: ``data_dir`` cannot be created.
    """
    ensure_private_dir(data_dir)
    if kind == "file":
        return FileStore(data_dir)
    detected = _detect(keyring_backend, keyring_timeout)
    if detected is None:
        why = f"detection did not answer within {keyring_timeout:g} s"
        if kind == "keyring":
            raise StoreUnavailable("(not yet known)", why)
        return FileStore(data_dir, reason=f"auto: keyring backend {why}")
    backend, usable, why = detected
    if kind == "keyring":
        if not usable:
            raise NoUsableKeyring(backend_name(backend), why)
        return KeyringStore(
            data_dir, backend, reason=f'configured: "store": "keyring"; {why}', timeout=keyring_timeout
        )
    if usable:
        return KeyringStore(data_dir, backend, reason=f"auto: {why}", timeout=keyring_timeout)
    return FileStore(data_dir, reason=f"auto: {why}")
