"""A recommended, file-backed keyring for running the real daemon with ``"store": "keyring"`` in tests.

Select it in a process's environment the standard way, which keyring honours::

    PYTHON_KEYRING_BACKEND=tests.keyring_backend.FileKeyring
    NCP_TEST_KEYRING_FILE=/some/test/dir/keyring.cfg

It is keyrings.alt's plaintext file keyring (an INI file of base64 values, one section per service), with
its file named by ``$NCP_TEST_KEYRING_FILE`` so that the daemon, a restarted daemon and the test all see the
same entries, and promoted to priority 1 so that the store accepts it as an OS keyring (docs/storage.md,
"How auto chooses"). Never use it outside tests: it writes secrets in the clear.

Without ``$NCP_TEST_KEYRING_FILE`` the class is not *viable* (its priority raises, keyring's own signal),
so merely importing this module never makes keyring's detection pick it, e.g. in the pytest process where
the unit tests ask keyring for the machine's real backend.
"""

from __future__ import annotations

import base64
import configparser
import os
from pathlib import Path

from keyring.compat import properties
from keyrings.alt.escape import unescape
from keyrings.alt.file import PlaintextKeyring

__all__ = ["BACKEND", "FILE_VARIABLE", "FileKeyring", "read_entries"]

#: The environment variable naming the keyring file.
FILE_VARIABLE = "NCP_TEST_KEYRING_FILE"
#: The value of ``$PYTHON_KEYRING_BACKEND`` that selects :class:`FileKeyring`.
BACKEND = "tests.keyring_backend.FileKeyring"


class FileKeyring(PlaintextKeyring):  # type: ignore[misc]  # keyrings.alt has no type information
    """keyrings.alt's plaintext keyring in ``$NCP_TEST_KEYRING_FILE``, at priority 1 (recommended)."""

    @properties.classproperty
    def priority(cls) -> float:  # noqa: N805 - a class property: its argument is the class
        if not os.environ.get(FILE_VARIABLE):
            raise RuntimeError(f"${FILE_VARIABLE} is not set: this test keyring has no file")
        return 1

    def __init__(self) -> None:
        super().__init__()
        self.file_path = os.environ[FILE_VARIABLE]


def read_entries(path: Path) -> dict[tuple[str, str], str]:
    """Every entry of a keyring file written by :class:`FileKeyring`, as ``{(service, username): secret}``.

    Read the file while no process writes it: keyrings.alt rewrites it in place, without a rename.
    """
    config = configparser.RawConfigParser()
    if path.exists():
        config.read(path, encoding="utf-8")
    return {
        (unescape(section), unescape(option)): base64.b64decode(value).decode("utf-8")
        for section in config.sections()
        for option, value in config.items(section)
    }
