"""A user agent with no person, for `BROWSER` during conformance runs (standard library only).

The conformance suite's authorization endpoint answers at once with a 302 to the client's loopback
`redirect_uri`, so a login needs no pages and no forms: GET the authorization URL, follow the redirects,
and GET the callback, which hands the code (or the error) to the waiting ncp-broker listener.

Python's `webbrowser` runs `$BROWSER URL` and waits for it to exit, so, like a real browser, this
program starts a detached copy of itself that does the fetching, and returns at once.

    fetch_browser.py [--foreground] URL

Environment: `NCP_CONFORMANCE_BROWSER_LOG`, a file that gets one line per step (URLs without their query
string, which carries the code). Only loopback URLs are ever fetched. Exit status in the foreground: 0 when
the callback was delivered (whatever the listener answered), 1 otherwise.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import subprocess
import sys
import time
from urllib.parse import urljoin, urlsplit

__all__ = ["deliver", "main"]

MAX_REDIRECTS = 5
TIMEOUT = 10.0


def _log(line: str) -> None:
    path = os.environ.get("NCP_CONFORMANCE_BROWSER_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%H:%M:%S')} browser: {line}\n")


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bare(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def deliver(url: str) -> bool:
    """GET ``url`` and follow its redirects; True once a redirect target that answers is reached."""
    for hop in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme != "http" or not _loopback(parts.hostname):
            _log(f"refused to fetch {_bare(url)}: not http on loopback")
            return False
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=TIMEOUT)
        try:
            target = parts.path or "/"
            conn.request("GET", f"{target}?{parts.query}" if parts.query else target)
            response = conn.getresponse()
            location = response.getheader("location")
            response.read()
        except OSError as exc:
            _log(f"GET {_bare(url)} failed: {exc}")
            return False
        finally:
            conn.close()
        _log(f"GET {_bare(url)} -> {response.status}")
        if response.status in (301, 302, 303, 307, 308) and location:
            url = urljoin(url, location)
            continue
        return hop > 0  # the first URL must redirect; what answers after a redirect is the callback
    _log("too many redirects")
    return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    foreground = bool(args) and args[0] == "--foreground"
    if foreground:
        args = args[1:]
    if len(args) != 1:
        sys.stderr.write("usage: fetch_browser.py [--foreground] URL\n")
        return 2
    if foreground:
        return 0 if deliver(args[0]) else 1
    subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--foreground", args[0]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
