"""A browser with no person, for `BROWSER`: logs in to oidc-provider's dev pages by plain HTTP form posts.

Python's `webbrowser` runs `$BROWSER URL` and waits for it to exit, so by default this program starts a
detached copy of itself (new session, no inherited stdio) that does the login, and returns at once. The copy
follows the authorization URL: redirects, the devInteractions login form (any user name), the consent form,
the device-flow pages (user code form, confirmation), and finally the redirect to the client's loopback
`redirect_uri`, which it GETs so the waiting listener receives the code. Cookies are kept across requests.

Environment:
    NCP_TEST_BROWSER_ACTION   approve (default) | deny: abort the interaction, so the client gets
                              `error=access_denied` (device flow: the code is marked denied)
    NCP_TEST_BROWSER_LOG      append one line per step to this file; the values of `code` and other
                              credentials in URLs are replaced by `<code>`-style placeholders
    NCP_TEST_BROWSER_USER     the login name to type (default "alice"); it becomes the token's `sub`
    NCP_TEST_BROWSER_TIMEOUT  seconds for the whole login (default 30)
    NCP_TEST_BROWSER_FOREGROUND=1  do the login in this process (what `--foreground` does)

It contacts loopback addresses only (127.0.0.0/8, ::1, localhost) and stops at any other URL.
Exit status (foreground): 0 when the callback was delivered or the device flow finished, 1 otherwise.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx

__all__ = ["LoginResult", "is_loopback_url", "redact_url", "run_login"]

_SECRET_PARAMS = {"code", "access_token", "id_token", "refresh_token", "device_code"}
_MAX_STEPS = 30


def is_loopback_url(url: str) -> bool:
    """True for http(s) URLs whose host is `localhost` or a loopback IP literal."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """The URL with credential values in query and fragment replaced by `<name>` placeholders."""
    parts = urlsplit(url)

    def scrub(text: str) -> str:
        pairs = parse_qsl(text, keep_blank_values=True)
        if not pairs:
            return text
        return urlencode([(k, f"<{k}>" if k in _SECRET_PARAMS else v) for k, v in pairs], safe="<>:/")

    return urlunsplit(parts._replace(query=scrub(parts.query), fragment=scrub(parts.fragment)))


@dataclass
class _Form:
    action: str
    method: str
    form_id: str | None
    fields: list[tuple[str, str]] = field(default_factory=list)
    text_inputs: list[str] = field(default_factory=list)


@dataclass
class _Page:
    forms: list[_Form] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    # <button form="ID" name="N" value="V"> outside the form (oidc-provider's device confirm page)
    buttons: list[tuple[str | None, str, str]] = field(default_factory=list)


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = _Page()
        self._current: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = _Form(a.get("action", ""), a.get("method", "get").lower(), a.get("id"))
            self.page.forms.append(self._current)
        elif tag == "input" and self._current is not None and a.get("name"):
            kind = a.get("type", "text").lower()
            if kind in ("text", "password", "email"):
                self._current.text_inputs.append(a["name"])
            else:
                self._current.fields.append((a["name"], a.get("value", "")))
        elif tag == "a" and a.get("href"):
            self.page.links.append(a["href"])
        elif tag == "button" and a.get("name"):
            self.page.buttons.append((a.get("form"), a["name"], a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


@dataclass
class LoginResult:
    """How the login ended: `callback_url` is the redirect delivered to the client (redacted)."""

    ok: bool
    reason: str
    callback_url: str | None = None
    redirect_url: str | None = None  # with deliver=False only: the unredacted redirect, to paste


class _Driver:
    def __init__(
        self,
        start_url: str,
        action: str,
        user: str,
        log_path: str | None,
        deadline: float,
        *,
        deliver: bool = True,
    ) -> None:
        self.deliver = deliver
        self.as_origin = _origin(start_url)
        self.action = action
        self.user = user
        self.log_path = log_path
        self.deadline = deadline

    def log(self, line: str) -> None:
        if self.log_path:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def run(self, url: str) -> LoginResult:
        self.log(f"start action={self.action} url={redact_url(url)}")
        timeout = httpx.Timeout(max(1.0, self.deadline - time.monotonic()))
        with httpx.Client(follow_redirects=False, timeout=timeout, trust_env=False) as http:
            method, body = "GET", None
            for _ in range(_MAX_STEPS):
                if time.monotonic() > self.deadline:
                    return self._end(LoginResult(False, "deadline passed"))
                if not is_loopback_url(url):
                    return self._end(LoginResult(False, f"refused non-loopback URL {redact_url(url)}"))
                if _origin(url) != self.as_origin:
                    return self._deliver(http, url, method, body)
                self.log(f"{method} {redact_url(url)}")
                response = http.request(method, url, data=body)
                if response.is_redirect:
                    url, method, body = urljoin(url, response.headers["location"]), "GET", None
                    continue
                step = self._next_step(url, response)
                if isinstance(step, LoginResult):
                    return self._end(step)
                url, method, body = step
            return self._end(LoginResult(False, "too many steps"))

    def _deliver(self, http: httpx.Client, url: str, method: str, body: dict[str, str] | None) -> LoginResult:
        """The client's redirect_uri: hand it the response, whatever the listener answers."""
        if not self.deliver:
            return self._end(LoginResult(True, "redirect not delivered", redact_url(url), redirect_url=url))
        self.log(f"callback {method} {redact_url(url)}")
        try:
            http.request(method, url, data=body)
        except httpx.HTTPError as exc:
            return self._end(LoginResult(False, f"callback not delivered: {type(exc).__name__}"))
        return self._end(LoginResult(True, "callback delivered", redact_url(url)))

    def _next_step(
        self, url: str, response: httpx.Response
    ) -> tuple[str, str, dict[str, str] | None] | LoginResult:
        if "html" not in response.headers.get("content-type", ""):
            return LoginResult(
                False, f"unexpected {response.status_code} {response.headers.get('content-type')}"
            )
        if self.action == "deny" and "The Sign-in request was interrupted" in response.text:
            return LoginResult(True, "device flow denied")
        parser = _PageParser()
        parser.feed(response.text)
        page = parser.page
        for form in page.forms:
            fields = dict(form.fields)
            target = urljoin(url, form.action or url)
            if fields.get("prompt") in ("login", "consent"):
                if self.action == "deny":
                    abort = next((link for link in page.links if link.rstrip("/").endswith("/abort")), None)
                    if abort is None:
                        return LoginResult(False, "deny asked but the page has no abort link")
                    self.log(f"deny at {fields['prompt']} page")
                    return urljoin(url, abort), "GET", None
                if fields["prompt"] == "login":
                    for name in form.text_inputs:
                        fields[name] = self.user if name == "login" else "any-password"
                self.log(f"submit {fields['prompt']} form")
                return target, form.method.upper(), fields
            if form.form_id == "op.deviceConfirmForm":
                if self.action == "deny":
                    fields.pop("confirm", None)
                    fields["abort"] = "yes"
                    self.log("deny device confirmation")
                else:
                    self.log("confirm device")
                return target, "POST", fields
            if form.form_id == "op.deviceInputForm":
                return LoginResult(False, "device user code form: open verification_uri_complete instead")
            if form.method == "post" and fields:
                # An auto-submitting form (device flow's first step, or response_mode=form_post).
                self.log(f"submit auto-post form to {redact_url(target)}")
                return target, "POST", fields
        title = _title(response.text)
        if "Success" in title:
            return LoginResult(True, "device flow finished")
        return LoginResult(False, f"stuck at {response.status_code} page {title!r}")

    def _end(self, result: LoginResult) -> LoginResult:
        self.log(f"end ok={result.ok} {result.reason}")
        return result


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _title(html: str) -> str:
    start = html.find("<title>")
    end = html.find("</title>", start)
    return html[start + 7 : end].strip() if start >= 0 and end > start else ""


def run_login(
    url: str,
    *,
    action: str = "approve",
    user: str = "alice",
    log_path: str | None = None,
    timeout: float = 30.0,
    deliver: bool = True,
) -> LoginResult:
    """Drive one login in this process; never raises for HTTP failures (they end up in the result).

    With ``deliver=False`` it stops at the redirect to the client and returns it in ``redirect_url``
    (what a person would copy from the address bar for ``ncp-broker login --no-browser``).
    """
    if action not in ("approve", "deny"):
        raise ValueError(f"action must be approve or deny, not {action!r}")
    driver = _Driver(url, action, user, log_path, time.monotonic() + timeout, deliver=deliver)
    try:
        return driver.run(url)
    except httpx.HTTPError as exc:
        return driver._end(LoginResult(False, f"{type(exc).__name__}: {exc}"))


def _detach(argv: list[str]) -> int:
    """Start `argv` as a new session with no inherited stdio, and return without waiting."""
    log = os.environ.get("NCP_TEST_BROWSER_LOG")
    sink = open(log, "ab") if log else None  # noqa: SIM115 - handed to the child, closed right after
    try:
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=sink or subprocess.DEVNULL,
            stderr=sink or subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        if sink:
            sink.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`browser_http.py [--foreground] URL`: returns at once unless in the foreground."""
    args = sys.argv[1:] if argv is None else argv
    foreground = os.environ.get("NCP_TEST_BROWSER_FOREGROUND") == "1"
    if args and args[0] == "--foreground":
        foreground, args = True, args[1:]
    if len(args) != 1:
        sys.stderr.write("usage: browser_http.py [--foreground] URL\n")
        return 2
    if not foreground:
        return _detach([sys.executable, str(Path(__file__).resolve()), "--foreground", args[0]])
    result = run_login(
        args[0],
        action=os.environ.get("NCP_TEST_BROWSER_ACTION", "approve"),
        user=os.environ.get("NCP_TEST_BROWSER_USER", "alice"),
        log_path=os.environ.get("NCP_TEST_BROWSER_LOG"),
        timeout=float(os.environ.get("NCP_TEST_BROWSER_TIMEOUT", "30")),
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
