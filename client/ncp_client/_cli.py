"""``ncp-token``: print a fresh access token from ncp-broker.

Start-up time matters (hosts run it per connection), so this module loads nothing that printing a token
does not need: it parses its few options by hand instead of loading argparse, writes JSON with the
client's own encoder instead of loading json, and imports the rest (urllib.parse, webbrowser) only on
the paths that use them. ``tests/unit/test_client_imports.py`` keeps it that way.
"""

from __future__ import annotations

import os
import sys

from ncp_client._errors import BrokerError, NeedsLogin, UnknownServer
from ncp_client._protocol import DEFAULT_TIMEOUT, call, json_text

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

USAGE = """\
usage: ncp-token [SERVER] [--header | --headers-json] [--method M --url U [--dpop-nonce N]]
                 [--min-ttl SECONDS] [--timeout SECONDS]

Print a fresh access token for SERVER (a name from the ncp-broker config).

  SERVER            if omitted: $CLAUDE_CODE_MCP_SERVER_NAME, else the server whose URL is
                    $CLAUDE_CODE_MCP_SERVER_URL
  --header          print "Authorization: Bearer <token>"
  --headers-json    print {"Authorization": "Bearer <token>"} (for header-helper hosts)
  --method M        the HTTP method and URL of the one request the token is for: a DPoP-bound token
  --url U           (RFC 9449) comes with a proof for exactly that request, printed as the "DPoP"
                    header ("Authorization: DPoP <token>"); a Bearer token is printed as usual
  --dpop-nonce N    the nonce the server demanded (its DPoP-Nonce header), for the proof
  --min-ttl S       the token must stay valid for at least S seconds (default: the daemon's, 30)
  --timeout S       give up after S seconds (default 5)

Run from a terminal, a server that needs a login is logged in to first (the browser opens); from a
script, that is exit status 5 with the command to run. The socket is $NCP_BROKER_SOCK, else the daemon's
default. Exit status: 0 ok, 2 usage, 3 broker not
running, 4 unknown server, 5 needs login, 6 authorization server unreachable, 7 protocol error,
1 other refusal.
"""

EXIT_USAGE = 2


class _Usage(Exception):
    pass


def _parse(argv: Sequence[str]) -> dict[str, object]:
    opts: dict[str, object] = {"format": "raw", "min_ttl": None, "timeout": DEFAULT_TIMEOUT, "server": None}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            opts["help"] = True
        elif arg == "--header":
            opts["format"] = "header"
        elif arg == "--headers-json":
            opts["format"] = "json"
        elif arg.split("=", 1)[0] in ("--min-ttl", "--timeout"):
            name, _, value = arg.partition("=")
            if not value:
                if not args:
                    raise _Usage(f"{name} needs a value")
                value = args.pop(0)
            try:
                number = float(value)
            except ValueError:
                raise _Usage(f"{name} takes a number of seconds, not {value!r}") from None
            if not number >= 0:  # also refuses NaN
                raise _Usage(f"{name} must be a non-negative number")
            opts[name[2:].replace("-", "_")] = number
        elif arg.split("=", 1)[0] in ("--method", "--url", "--dpop-nonce"):
            name, _, value = arg.partition("=")
            if not value:
                if not args:
                    raise _Usage(f"{name} needs a value")
                value = args.pop(0)
            opts[name[2:].replace("-", "_")] = value
        elif arg.startswith("-") and arg != "-":
            raise _Usage(f"unknown option {arg}")
        elif opts["server"] is None:
            opts["server"] = arg
        else:
            raise _Usage("give one SERVER")
    if ("method" in opts) != ("url" in opts):
        raise _Usage("--method and --url go together: they name the one request a DPoP proof is for")
    if "dpop_nonce" in opts and "url" not in opts:
        raise _Usage("--dpop-nonce needs --method and --url")
    return opts


def _server_from_env(timeout: float) -> str:
    name = os.environ.get("CLAUDE_CODE_MCP_SERVER_NAME")
    if name:
        return name
    url = os.environ.get("CLAUDE_CODE_MCP_SERVER_URL")
    if not url:
        raise _Usage("no SERVER given, and neither CLAUDE_CODE_MCP_SERVER_NAME nor _URL is set")
    # The daemon decides which entries name that server (brokerd.oauth.canonical_url, the one rule).
    listing = call({"op": "list", "url": url}, timeout=timeout)
    for entry in listing.get("servers", []) if isinstance(listing, dict) else []:
        if isinstance(entry, dict) and entry.get("brokered") and isinstance(entry.get("name"), str):
            return str(entry["name"])
    raise UnknownServer(
        "unknown_server",
        f"no configured server has the URL {url}",
        f"ncp-broker add NAME {url} --oauth   (or --access-key -)",
    )


LOGIN_WAIT = 330.0


def _can_log_in_here(exc: NeedsLogin, server: str) -> bool:
    """First use from a terminal logs in (or joins the pending login), as NCP does on first connection;
    scripts get the error."""
    return (
        exc.code in ("needs_login", "login_in_progress")
        and f"ncp-broker login {server}" in exc.hint
        and sys.stdin.isatty()
    )


def _interactive_login(server: str) -> object:
    sys.stderr.write(f"ncp-token: {server} needs a login; starting it\n")
    started = call({"op": "login", "server": server, "mode": "browser", "will_open": True}, timeout=90)
    url = str(started.get("url", "")) if isinstance(started, dict) else ""
    elsewhere = isinstance(started, dict) and started.get("opened_elsewhere") is True
    opened = False
    if url.startswith(("https://", "http://")) and not elsewhere:  # one browser tab, however many callers
        import webbrowser

        try:
            opened = webbrowser.open(url)
        except webbrowser.Error:
            opened = False
    verb = "opened your browser at" if opened else "log in with this URL in a browser:"
    sys.stderr.write(f"ncp-token: {verb}\n\n  {url}\n\n")
    return call({"op": "login_wait", "server": server}, timeout=LOGIN_WAIT)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = _parse(sys.argv[1:] if argv is None else argv)
    except _Usage as exc:
        sys.stderr.write(f"ncp-token: {exc}\n{USAGE}")
        return EXIT_USAGE
    if opts.get("help"):
        sys.stdout.write(USAGE)
        return 0
    timeout = float(opts["timeout"])  # type: ignore[arg-type]
    try:
        server = str(opts["server"]) if opts["server"] is not None else _server_from_env(timeout)
        request: dict[str, object] = {"op": "get_token", "server": server}
        if opts["min_ttl"] is not None:
            request["min_ttl"] = opts["min_ttl"]
        for field in ("method", "url", "dpop_nonce"):
            if field in opts:
                request[field] = opts[field]
        try:
            result = call(request, timeout=timeout)
        except NeedsLogin as exc:
            if not _can_log_in_here(exc, server):
                raise
            result = _interactive_login(server)
        token = result.get("token") if isinstance(result, dict) else None
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            sys.stderr.write("ncp-token: the daemon's answer has no usable token\n")
            return 7
        proof = result.get("dpop") if isinstance(result, dict) else None
        bound = isinstance(result, dict) and str(result.get("token_type", "")).lower() == "dpop"
    except _Usage as exc:
        sys.stderr.write(f"ncp-token: {exc}\n{USAGE}")
        return EXIT_USAGE
    except BrokerError as exc:
        sys.stderr.write(f"ncp-token: {exc}\n")
        return exc.exit_status
    if bound:
        return _print_bound(opts, token, proof)
    if opts["format"] == "header":
        sys.stdout.write(f"Authorization: Bearer {token}\n")
    elif opts["format"] == "json":
        sys.stdout.write('{"Authorization": ' + json_text(f"Bearer {token}") + "}\n")  # json.dumps' layout
    else:
        sys.stdout.write(token + "\n")
    return 0


def _print_bound(opts: dict[str, object], token: str, proof: object) -> int:
    """A DPoP-bound token: useless without a proof for the one request it goes with (RFC 9449)."""
    if not isinstance(proof, str) or not proof or any(c in proof for c in "\r\n"):
        sys.stderr.write(
            "ncp-token: the server's tokens are DPoP-bound and need a proof for each request; name it:\n"
            "  ncp-token SERVER --headers-json --method METHOD --url URL\n"
        )
        return EXIT_USAGE
    if opts["format"] == "header":
        sys.stdout.write(f"Authorization: DPoP {token}\nDPoP: {proof}\n")
    elif opts["format"] == "json":
        sys.stdout.write(
            '{"Authorization": ' + json_text(f"DPoP {token}") + ', "DPoP": ' + json_text(proof) + "}\n"
        )
    else:
        sys.stderr.write(
            "ncp-token: a DPoP-bound token goes with its proof: use --header or --headers-json\n"
        )
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
