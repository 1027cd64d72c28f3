"""Opening the user's browser on an authorization or verification URL (checklist A7).

The URL passes :class:`~brokerd.oauth.UrlPolicy` first: ``https``, or ``http`` to a loopback host when the
policy allows it; ``javascript:``, ``data:``, ``file:`` and every other scheme are refused. The browser is
started with Python's :mod:`webbrowser` (an argument list, never a shell), in a worker thread, because
``webbrowser`` waits for the program it runs to exit. ``$BROWSER`` is read at every call (``webbrowser``
itself reads it once per process), entries separated by ``os.pathsep`` as ``webbrowser`` does.

:func:`open_browser` returns False when no browser could be opened (a headless system, no program found,
the program failed or did not return within the timeout): the caller then prints the URL.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import webbrowser

import trio

from brokerd.oauth import UrlPolicy

__all__ = ["OPEN_TIMEOUT", "open_browser"]

log = logging.getLogger("brokerd.browser")

OPEN_TIMEOUT = 15.0


async def open_browser(url: str, *, policy: UrlPolicy, timeout: float = OPEN_TIMEOUT) -> bool:
    """Open ``url`` in the user's browser; True if a browser program accepted it.

    Returns False (print the URL instead) on a headless system (no ``$BROWSER``, and on Linux/BSD no
    ``$DISPLAY`` or ``$WAYLAND_DISPLAY``), when no browser program is found, when it exits with an error,
    or when it has not returned within ``timeout`` seconds (the thread is then abandoned, not killed).

    Raises:
        PolicyError: the URL is refused by ``policy`` (A7, S1, S2); nothing was started.
        trio.Cancelled: the caller's cancel scope fired (the worker thread is abandoned).
    """
    policy.check(url, what="the URL to open in the browser")
    chosen = os.environ.get("BROWSER", "")
    if not chosen and _headless():
        log.info("no display and no $BROWSER: not opening a browser")
        return False
    opened = False
    with trio.move_on_after(timeout):
        opened = await trio.to_thread.run_sync(_open, url, chosen, abandon_on_cancel=True)
    if not opened:
        log.info("could not open a browser for the login")
    return opened


def _open(url: str, chosen: str) -> bool:
    for entry in filter(None, chosen.split(os.pathsep)):
        controller = _controller(entry)
        if controller is not None and controller.open(url, new=2):
            return True
    if chosen:
        return False
    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False


def _controller(entry: str) -> webbrowser.BaseBrowser | None:
    if "%s" in entry:
        return webbrowser.GenericBrowser(shlex.split(entry))
    try:
        return webbrowser.get(entry)  # a name webbrowser knows (firefox, chromium, …)
    except webbrowser.Error:
        pass
    if shutil.which(entry) is None:
        log.info("$BROWSER names %r, which is not an executable program", entry)
        return None
    return webbrowser.GenericBrowser(entry)


def _headless() -> bool:
    if sys.platform == "darwin" or sys.platform.startswith("win"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
