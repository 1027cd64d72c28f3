"""Commands about one server: ``add``, ``remove``, ``login``, ``logout``, ``invalidate``, ``import-ncp``.

Secrets (access keys, client secrets) are read from standard input, a file or an environment variable,
never from the command line, where every user on the machine could see them in ``ps``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brokerd import paths
from brokerd.cli._common import (
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    call,
    edit,
    fmt_time,
    load_config,
    read_secret,
    reload_if_running,
    running,
)
from brokerd.secret import Secret

if TYPE_CHECKING:
    from brokerd import config

__all__ = ["register"]


def cmd_add(args: argparse.Namespace) -> int:
    if args.access_key is None and not args.oauth:
        raise CliError("choose --oauth or --access-key SOURCE", EXIT_USAGE)
    auth: dict[str, Any]
    key: Secret | None = None
    if args.access_key is not None:
        key = read_secret(args.access_key, "access key")
        auth = {"type": "bearer"}
    else:
        oauth21: dict[str, Any] = {}
        if args.scopes:
            oauth21["scopes"] = [s for s in args.scopes.replace(" ", ",").split(",") if s]
        if args.callback_port is not None:
            oauth21["callbackPort"] = args.callback_port
        if args.client_id:
            oauth21["clientId"] = args.client_id
        if args.client_secret:
            oauth21["clientSecret"] = read_secret(args.client_secret, "client secret").reveal()
        if args.client_metadata_url:
            oauth21["clientMetadataUrl"] = args.client_metadata_url
        auth = {"type": "oauth", "oauth21": oauth21}
    if args.allow_insecure_loopback:
        auth["allowInsecureLoopback"] = True
    if args.allow_private_network:
        auth["allowPrivateNetwork"] = True

    def change(raw: dict[str, Any]) -> None:
        entry = raw["mcpServers"].get(args.name)
        entry = dict(entry) if isinstance(entry, dict) else {}
        entry["url"] = args.url
        entry["auth"] = auth
        raw["mcpServers"][args.name] = entry

    edit(args, change)
    if key is not None:
        _store_access_key(args, args.name, args.url, key)
    reload_if_running(args)
    print(f"added {args.name} ({args.url}) to {args.config}")
    if args.oauth:
        print(f"  log in with: ncp-broker login {args.name}")
    return EXIT_OK


def _store_access_key(args: argparse.Namespace, name: str, url: str, key: Secret) -> None:
    """Keep the key in the credential store, through the daemon when it runs (it owns the store)."""
    if running(args) is not None:
        call(args, {"op": "reload"})
        call(args, {"op": "set_access_key", "server": name, "key": key.reveal()})
        return
    import trio

    from brokerd.store import open_store

    async def save() -> None:
        store = open_store(load_config(args).store, paths.data_dir())
        await store.save_access_key(url, key)

    trio.run(save)


LOGIN_WAIT = 330.0  # the daemon gives up on a login after 5 minutes; wait a little longer than that


def cmd_login(args: argparse.Namespace) -> int:
    mode = "device" if args.device else "paste" if args.no_browser else "browser"
    request = {"op": "login", "server": args.name, "mode": mode, "will_open": mode == "browser"}
    started = call(args, request, timeout=90)
    url = str(started["url"])
    if started.get("automatic"):  # client credentials, a workload's token: no person, no browser
        print(f"getting a token for {args.name} without a browser…")
        result = call(args, {"op": "login_wait", "server": args.name}, timeout=LOGIN_WAIT)
        expires = result.get("expires_at")
        print(f"Authorized {args.name}" + (f" (token valid until {fmt_time(expires)})" if expires else ""))
        return EXIT_OK
    if started.get("joined"):
        print(f"a login for {args.name} is already in progress; joining it")
    _say_shared(args.name, list(started.get("aliases", [])))
    if mode == "device":
        print(f"on any device, open:\n\n  {url}\n\nand enter the code:  {started.get('user_code')}\n")
        print("waiting for you to approve…")
        result = _wait(args, {"op": "login_wait", "server": args.name})
    elif mode == "browser":
        if started.get("opened_elsewhere"):
            print(f"the browser was opened for it already; finish there, or open:\n\n  {url}\n")
        elif _open_browser(url):
            print(f"opened your browser to log in to {args.name}; if nothing appeared, open:\n\n  {url}\n")
        else:
            print(f"open this URL in a browser to log in to {args.name}:\n\n  {url}\n")
        result = _wait(args, {"op": "login_wait", "server": args.name})
    else:
        print(f"open this URL in any browser to log in to {args.name}:\n\n  {url}\n")
        print("then paste the code, or the whole address the browser was sent to, here:", flush=True)
        pasted = read_secret("-", "code or redirect URL").reveal()
        result = _wait(args, {"op": "login_complete", "server": args.name, "response": pasted})
    expires = result.get("expires_at")
    print(f"Authorized {args.name}" + (f" (token valid until {fmt_time(expires)})" if expires else ""))
    return EXIT_OK


def _wait(args: argparse.Namespace, request: dict[str, Any]) -> Any:
    """What was printed reaches the person before the long wait for their login (stdout may be a pipe)."""
    sys.stdout.flush()
    return call(args, request, timeout=LOGIN_WAIT)


def _open_browser(url: str) -> bool:
    """Open ``url`` with the user's browser (honouring $BROWSER), never through a shell."""
    if not url.startswith(("https://", "http://")):
        raise CliError(f"refusing to open a non-http(s) authorization URL: {url[:40]}")
    import webbrowser

    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False


def cmd_logout(args: argparse.Namespace) -> int:
    result = call(args, {"op": "logout", "server": args.name}, timeout=60)
    _print_logout(args.name, result)
    return EXIT_OK


def cmd_invalidate(args: argparse.Namespace) -> int:
    if running(args) is not None:
        result = call(args, {"op": "invalidate", "server": args.name, "what": args.what}, timeout=60)
        forgot = list(result.get("forgot", []))
    else:
        result = {}
        cfg = load_config(args)
        server = cfg.servers.get(args.name)
        if server is None or server.url is None:
            raise CliError(f"no server named {args.name!r} with a URL in {args.config}", 4)
        forgot = _invalidate_offline(cfg, server.url, args.what)
    held = " and ".join(forgot) if forgot else "nothing"
    print(f"{args.name}: forgot {held} locally (nothing was revoked; `ncp-broker logout` revokes)")
    _say_shared(args.name, result.get("aliases", []) if running(args) is not None else _aliases(args))
    if "tokens" in forgot:
        print(f"  log in again with: ncp-broker login {args.name}")
    return EXIT_OK


def cmd_import_ncp(args: argparse.Namespace) -> int:
    from brokerd.ncp_import import default_auth_dir

    directory = (args.directory or default_auth_dir(Path.home())).expanduser().resolve()
    if running(args) is None:
        raise CliError(
            "import-ncp hands each grant to the running daemon (it discovers where to refresh it)\n"
            "  start it with: ncp-broker start",
            EXIT_NOT_RUNNING,
        )
    request = {"op": "import_ncp", "directory": str(directory), "replace": args.replace}
    result = call(args, request, timeout=300)
    failed = 0
    for item in result["imported"]:
        failed += item["outcome"] == "failed"
        print(f"{item['server']}: {item['outcome']}: {item['detail']}  ({item['file']})")
        for note in item.get("notes", []):
            print(f"  note: {note}")
    for skipped in result["skipped"]:
        who = f" [{skipped['server']}]" if skipped.get("server") else ""
        print(f"skipped {skipped['file']}{who}: {skipped['kind']}: {skipped['reason']}")
    for name in result["not_found"]:
        print(f"{name}: NCP has no file for it in {result['directory']}")
    if any(item["outcome"] == "imported" for item in result["imported"]):
        print(
            "\nNCP must not use these grants any more (a refresh token spent by two programs ends the grant):"
            "\npoint NCP at the broker, or move its files aside."
        )
    if not result["imported"] and not result["skipped"]:
        print(f"nothing to import from {result['directory']}")
    return 1 if failed else EXIT_OK


def _invalidate_offline(cfg: config.Config, url: str, what: str) -> list[str]:
    """``invalidate`` on the store itself, when no daemon owns it."""
    import msgspec
    import trio

    from brokerd.store import open_store

    async def forget() -> list[str]:
        store = open_store(cfg.store, paths.data_dir())
        record = await store.load(url)
        if record is None:
            return []
        forgot = []
        if what in ("tokens", "all") and (record.tokens is not None or record.access_key is not None):
            record = msgspec.structs.replace(record, tokens=None, access_key=None)
            forgot.append("tokens")
        if what in ("client", "all") and record.registrations:
            record = msgspec.structs.replace(record, registrations={})
            forgot.append("client")
        await store.save(record)
        return forgot

    return trio.run(forget)


def _aliases(args: argparse.Namespace) -> list[str]:
    """The other config names of ``args.name``'s grant (entries that name the same server)."""
    cfg = load_config(args)
    server = cfg.servers.get(args.name)
    if server is None or server.url is None:
        return []
    return [s.name for s in cfg.find_by_url(server.url) if s.name != args.name and s.kind != "none"]


def _say_shared(name: str, aliases: list[str]) -> None:
    if aliases:
        them = "them" if len(aliases) > 1 else "it"
        print(f"  (one grant with {', '.join(aliases)}: that applies to {them} too)")


def _print_logout(name: str, result: dict[str, Any]) -> None:
    aliases = list(result.get("aliases", []))
    if not result.get("had_grant"):
        print(f"{name}: nothing to log out of; local credentials are cleared")
        _say_shared(name, aliases)
        return
    for r in result.get("revocation", []):
        detail = f" ({r['detail']})" if r.get("detail") else ""
        print(f"{name}: {r['token']}: {r['outcome']}{detail}")
    if not result.get("revocation"):
        print(f"{name}: the authorization server offers no revocation; local credentials are deleted")
    else:
        print(f"{name}: logged out; local credentials are deleted")
    _say_shared(name, aliases)


def _forget_offline(cfg: config.Config, url: str) -> None:
    """Delete a server's stored credentials when no daemon owns the store."""
    import trio

    from brokerd.store import open_store

    async def forget() -> None:
        await open_store(cfg.store, paths.data_dir()).delete(url)

    trio.run(forget)


def cmd_remove(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if args.name not in cfg.servers:
        raise CliError(f"no server named {args.name!r} in {args.config}", 4)
    server = cfg.servers[args.name]
    others = _aliases(args)
    if others:
        # The grant is still used by the other entries: removing this name must not log them out.
        print(
            f"{args.name}: the grant stays for {', '.join(others)} "
            f"(log out with: ncp-broker logout {others[0]})"
        )
    elif server.kind != "none" and server.url:
        if running(args) is not None:
            _print_logout(args.name, call(args, {"op": "logout", "server": args.name}, timeout=60))
        else:
            _forget_offline(cfg, server.url)
            print(f"{args.name}: local credentials deleted (not revoked: the daemon is not running)")

    def change(raw: dict[str, Any]) -> None:
        del raw["mcpServers"][args.name]

    edit(args, change)
    reload_if_running(args)
    print(f"removed {args.name} from {args.config}")
    return EXIT_OK


# ---- argument parsing -----------------------------------------------------------------------------


def register(sub: Any) -> None:
    s = sub.add_parser("add", help="add or replace a server in the config")
    s.add_argument("name")
    s.add_argument("url")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--oauth", action="store_true", help="OAuth 2.1 (discovered, registered dynamically)")
    how.add_argument(
        "--access-key",
        metavar="SOURCE",
        help="a static Bearer key, read from - (stdin), file:PATH or env:NAME — never from argv",
    )
    s.add_argument("--scopes", help="comma-separated scopes to request (default: discovered)")
    s.add_argument("--callback-port", type=int, help="fixed loopback callback port (default: any free port)")
    s.add_argument("--client-id", help="pre-registered client id")
    s.add_argument(
        "--client-secret", metavar="SOURCE", help="pre-registered client secret: -, file:PATH or env:NAME"
    )
    s.add_argument("--client-metadata-url", help="https URL of this client's metadata document")
    s.add_argument(
        "--allow-insecure-loopback", action="store_true", help="allow plain http to 127.0.0.1 (tests)"
    )
    s.add_argument(
        "--allow-private-network", action="store_true", help="allow private and link-local addresses"
    )
    s.set_defaults(func=cmd_add)

    s = sub.add_parser("login", help="log in to an OAuth server (opens the browser)")
    s.add_argument("name")
    how = s.add_mutually_exclusive_group()
    how.add_argument(
        "--no-browser",
        action="store_true",
        help="print the URL and read the code or redirect URL pasted back",
    )
    how.add_argument(
        "--device", action="store_true", help="device code (RFC 8628): approve on any device with a browser"
    )
    s.set_defaults(func=cmd_login)

    s = sub.add_parser("logout", help="revoke a server's grant (RFC 7009) and delete its local tokens")
    s.add_argument("name")
    s.set_defaults(func=cmd_logout)

    s = sub.add_parser(
        "invalidate",
        help="forget a server's tokens and/or client registration locally, without revoking",
        description="Forget local credentials without telling the authorization server (NCP's "
        "invalidateCredentials). tokens: the next use needs a login. client: the next login registers a new "
        "client; the current access token is used until it expires. all: both. To revoke, use logout.",
    )
    s.add_argument("name")
    s.add_argument("--what", required=True, choices=["tokens", "client", "all"], help="what to forget")
    s.set_defaults(func=cmd_invalidate)

    s = sub.add_parser(
        "import-ncp",
        help="take over NCP's OAuth grants (~/.ncp/auth) for the configured servers",
        description="Read NCP's per-server OAuth files and hand each grant that matches a configured server "
        "to the running daemon, which binds it to the authorization server discovery finds and refreshes "
        "it once. Files that match no configured server are listed, not guessed. NCP's files are only read.",
    )
    s.add_argument("directory", nargs="?", type=Path, help="NCP's auth directory (default: ~/.ncp/auth)")
    s.add_argument("--replace", action="store_true", help="replace grants the broker holds already")
    s.set_defaults(func=cmd_import_ncp)

    s = sub.add_parser("remove", help="log out of a server and delete it from the config")
    s.add_argument("name")
    s.set_defaults(func=cmd_remove)
