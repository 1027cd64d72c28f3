"""``ncp-broker``: start, stop and administer the daemon.

Secrets (access keys, client secrets) are read from standard input, a file or an environment variable,
never from the command line, where every user on the machine could see them in ``ps``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from brokerd import __version__, config, fsutil, paths
from brokerd.secret import Secret

__all__ = ["main"]

# Exit statuses shared with ncp-token where they mean the same thing.
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class CliError(Exception):
    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


# ---- talking to the daemon ------------------------------------------------------------------------


def _call(args: argparse.Namespace, request: dict[str, Any], timeout: float = 10.0) -> Any:
    from ncp_client import BrokerError, BrokerNotRunning, call

    try:
        return call(request, timeout=timeout, socket_path=args.socket)
    except BrokerNotRunning as exc:
        raise CliError(str(exc), EXIT_NOT_RUNNING) from None
    except BrokerError as exc:
        raise CliError(str(exc), exc.exit_status) from None


def _running(args: argparse.Namespace) -> dict[str, Any] | None:
    """The daemon's hello answer, or None when nothing answers on the socket."""
    from ncp_client import BrokerError, call

    try:
        result = call({"op": "hello"}, timeout=2.0, socket_path=args.socket)
    except BrokerError:
        return None
    return result if isinstance(result, dict) else None


# ---- secrets from stdin / file / env --------------------------------------------------------------


def _read_secret(source: str, what: str) -> Secret:
    """Read a secret from ``-`` (stdin), ``file:PATH`` or ``env:NAME``."""
    if source == "-":
        if sys.stdin.isatty():
            import getpass

            value = getpass.getpass(f"{what}: ")
        else:
            value = sys.stdin.readline()
    elif source.startswith("file:"):
        try:
            value = Path(source[5:]).expanduser().read_text().splitlines()[0]
        except (OSError, IndexError) as exc:
            raise CliError(f"cannot read the {what} from {source[5:]}: {exc}") from None
    elif source.startswith("env:"):
        value = os.environ.get(source[4:], "")
        if not value:
            raise CliError(f"the environment variable {source[4:]} is empty or not set")
    else:
        raise CliError(
            f"{what}s are never taken from the command line (other users can read it); "
            "give - (stdin), file:PATH or env:NAME",
            EXIT_USAGE,
        )
    value = value.strip()
    if not value:
        raise CliError(f"the {what} is empty")
    return Secret(value)


# ---- commands -------------------------------------------------------------------------------------


def cmd_start(args: argparse.Namespace) -> int:
    from brokerd import daemon

    opts = daemon.DaemonOptions(config_path=args.config, socket_path=args.socket)
    if args.foreground:
        return daemon.run(opts)
    if hello := _running(args):
        print(f"ncp-broker is already running (pid {hello.get('pid')}) on {args.socket}")
        return EXIT_OK
    return _start_background(args)


def _start_background(args: argparse.Namespace) -> int:
    try:
        fsutil.ensure_private_dir(paths.state_dir())
    except (OSError, fsutil.UnsafePathError) as exc:
        raise CliError(f"log directory: {exc}") from None
    log_file = paths.log_path()
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.fchmod(log_fd, 0o600)
    read_end, write_end = os.pipe()
    env = dict(os.environ, NCP_BROKER_READY_FD=str(write_end), NCP_BROKER_SOCK=str(args.socket))
    cmd = [sys.executable, "-m", "brokerd", "--config", str(args.config), "--log-level", args.log_level]
    try:
        child = subprocess.Popen(
            [*cmd, "start", "--foreground"],
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            pass_fds=(write_end,),
            env=env,
            start_new_session=True,  # survives the terminal that started it
        )
    finally:
        os.close(write_end)
        os.close(log_fd)
    answer = _read_readiness(read_end, START_TIMEOUT)
    if answer == "ready":
        print(f"ncp-broker started (pid {child.pid}) on {args.socket}; log: {log_file}")
        return EXIT_OK
    if answer.startswith("error ") and "already running" in answer:
        print(answer[6:])
        return EXIT_OK
    if answer.startswith("error "):
        raise CliError(f"ncp-broker did not start: {answer[6:]}\n  log: {log_file}")
    status = child.poll()
    raise CliError(
        f"ncp-broker did not report readiness within {START_TIMEOUT:g} s "
        f"({'still starting' if status is None else f'exit status {status}'}); see {log_file}"
    )


def _read_readiness(fd: int, timeout: float) -> str:
    import selectors

    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        try:
            while b"\n" not in data:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    break
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
    return data.decode(errors="replace").strip()


def cmd_stop(args: argparse.Namespace) -> int:
    hello = _running(args)
    if hello is None:
        print(f"ncp-broker is not running on {args.socket}")
        return EXIT_OK
    _call(args, {"op": "shutdown"})
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if _running(args) is None:
            print(f"ncp-broker stopped (pid {hello.get('pid')})")
            return EXIT_OK
        time.sleep(0.05)
    raise CliError(f"ncp-broker (pid {hello.get('pid')}) did not stop within {STOP_TIMEOUT:g} s")


def cmd_reload(args: argparse.Namespace) -> int:
    summary = _call(args, {"op": "reload"})
    parts = [f"{k}: {', '.join(v)}" for k, v in summary.items() if v]
    print("config reloaded" + (f" ({'; '.join(parts)})" if parts else ", nothing changed"))
    return EXIT_OK


def _fmt_time(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def cmd_status(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"op": "status"}
    if args.server:
        request["server"] = args.server
    try:
        status = _call(args, request)
    except CliError as exc:
        if exc.status != EXIT_NOT_RUNNING:
            raise
        if args.json:
            print(json.dumps({"running": False, "socket": str(args.socket)}))
        else:
            print(f"ncp-broker is not running (socket {args.socket})\n  start it with: ncp-broker start")
        return EXIT_NOT_RUNNING
    if args.json:
        print(json.dumps({"running": True, **status}, indent=2))
        return EXIT_OK
    d = status["daemon"]
    print(f"ncp-broker {d['version']} (pid {d['pid']}) since {_fmt_time(d['started_at'])}")
    print(f"  socket: {d['socket']}\n  config: {d['config']}\n  store:  {d['store']}")
    rows = [("SERVER", "STATE", "URL", "DETAIL")]
    for s in status["servers"]:
        rows.append((s["name"], s.get("state", "-"), s.get("url") or "-", s.get("detail", "")))
    if len(rows) == 1:
        print("\nno servers configured; add one with: ncp-broker add NAME URL --oauth")
        return EXIT_OK
    widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
    print()
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + str(row[3]))
    for s in status["servers"]:
        details = _status_details(s)
        if details:
            print(f"\n{s['name']}:")
            width = max(len(label) for label, _ in details)
            for label, value in details:
                print(f"  {label.ljust(width)}  {value}")
    return EXIT_OK


def _status_details(s: dict[str, Any]) -> list[tuple[str, str]]:
    """The lines under a server in ``status``: times, the last error and its class, what to run."""
    details = [
        (label, _fmt_time(s[key]))
        for label, key in (
            ("expires", "expires_at"),
            ("last refresh", "last_refresh"),
            ("next refresh", "next_refresh"),
            ("retry at", "retry_at"),
        )
        if s.get(key)
    ]
    if s.get("last_error"):
        details.append(("last error", f"[{s.get('last_error_class') or 'error'}] {s['last_error']}"))
    if s.get("login_url"):
        details.append(("login URL", str(s["login_url"])))
    if s.get("hint"):
        details.append(("to fix", str(s["hint"])))
    return details


def cmd_list(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    for server in cfg.servers.values():
        what = server.kind if server.kind != "none" else f"not brokered: {server.reason}"
        print(f"{server.name}\t{server.url or '-'}\t{what}")
    return EXIT_OK


def _load_config(args: argparse.Namespace) -> config.Config:
    try:
        return config.load(args.config)
    except config.ConfigError as exc:
        raise CliError(str(exc)) from None


def _edit(args: argparse.Namespace, change: Callable[[dict[str, Any]], None]) -> None:
    try:
        config.edit_raw(args.config, change)
    except config.ConfigError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write {args.config}: {exc.strerror}") from None


def _reload_if_running(args: argparse.Namespace) -> None:
    if _running(args) is not None:
        _call(args, {"op": "reload"})


def cmd_add(args: argparse.Namespace) -> int:
    if args.access_key is None and not args.oauth:
        raise CliError("choose --oauth or --access-key SOURCE", EXIT_USAGE)
    auth: dict[str, Any]
    key: Secret | None = None
    if args.access_key is not None:
        key = _read_secret(args.access_key, "access key")
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
            oauth21["clientSecret"] = _read_secret(args.client_secret, "client secret").reveal()
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

    _edit(args, change)
    if key is not None:
        _store_access_key(args, args.name, args.url, key)
    _reload_if_running(args)
    print(f"added {args.name} ({args.url}) to {args.config}")
    if args.oauth:
        print(f"  log in with: ncp-broker login {args.name}")
    return EXIT_OK


def _store_access_key(args: argparse.Namespace, name: str, url: str, key: Secret) -> None:
    """Keep the key in the credential store, through the daemon when it runs (it owns the store)."""
    if _running(args) is not None:
        _call(args, {"op": "reload"})
        _call(args, {"op": "set_access_key", "server": name, "key": key.reveal()})
        return
    import trio

    from brokerd.store import open_store

    async def save() -> None:
        store = open_store(_load_config(args).store, paths.data_dir())
        await store.save_access_key(url, key)

    trio.run(save)


LOGIN_WAIT = 330.0  # the daemon gives up on a login after 5 minutes; wait a little longer than that


def cmd_login(args: argparse.Namespace) -> int:
    mode = "device" if args.device else "paste" if args.no_browser else "browser"
    request = {"op": "login", "server": args.name, "mode": mode, "will_open": mode == "browser"}
    started = _call(args, request, timeout=90)
    url = str(started["url"])
    if started.get("joined"):
        print(f"a login for {args.name} is already in progress; joining it")
    if mode == "device":
        print(f"on any device, open:\n\n  {url}\n\nand enter the code:  {started.get('user_code')}\n")
        print("waiting for you to approve…")
        result = _call(args, {"op": "login_wait", "server": args.name}, timeout=LOGIN_WAIT)
    elif mode == "browser":
        if started.get("opened_elsewhere"):
            print(f"the browser was opened for it already; finish there, or open:\n\n  {url}\n")
        elif _open_browser(url):
            print(f"opened your browser to log in to {args.name}; if nothing appeared, open:\n\n  {url}\n")
        else:
            print(f"open this URL in a browser to log in to {args.name}:\n\n  {url}\n")
        result = _call(args, {"op": "login_wait", "server": args.name}, timeout=LOGIN_WAIT)
    else:
        print(f"open this URL in any browser to log in to {args.name}:\n\n  {url}\n")
        print("then paste the code, or the whole address the browser was sent to, here:")
        pasted = _read_secret("-", "code or redirect URL").reveal()
        request = {"op": "login_complete", "server": args.name, "response": pasted}
        result = _call(args, request, timeout=LOGIN_WAIT)
    expires = result.get("expires_at")
    print(f"Authorized {args.name}" + (f" (token valid until {_fmt_time(expires)})" if expires else ""))
    return EXIT_OK


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
    result = _call(args, {"op": "logout", "server": args.name}, timeout=60)
    _print_logout(args.name, result)
    return EXIT_OK


def cmd_invalidate(args: argparse.Namespace) -> int:
    if _running(args) is not None:
        result = _call(args, {"op": "invalidate", "server": args.name, "what": args.what}, timeout=60)
        forgot = list(result.get("forgot", []))
    else:
        cfg = _load_config(args)
        server = cfg.servers.get(args.name)
        if server is None or server.url is None:
            raise CliError(f"no server named {args.name!r} with a URL in {args.config}", 4)
        forgot = _invalidate_offline(cfg, server.url, args.what)
    held = " and ".join(forgot) if forgot else "nothing"
    print(f"{args.name}: forgot {held} locally (nothing was revoked; `ncp-broker logout` revokes)")
    if "tokens" in forgot:
        print(f"  log in again with: ncp-broker login {args.name}")
    return EXIT_OK


def cmd_import_ncp(args: argparse.Namespace) -> int:
    from brokerd.ncp_import import default_auth_dir

    directory = (args.directory or default_auth_dir(Path.home())).expanduser().resolve()
    if _running(args) is None:
        raise CliError(
            "import-ncp hands each grant to the running daemon (it discovers where to refresh it)\n"
            "  start it with: ncp-broker start",
            EXIT_NOT_RUNNING,
        )
    request = {"op": "import_ncp", "directory": str(directory), "replace": args.replace}
    result = _call(args, request, timeout=300)
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
        if what == "all":
            record = msgspec.structs.replace(record, discovery=None)
        await store.save(record)
        return forgot

    return trio.run(forget)


def _print_logout(name: str, result: dict[str, Any]) -> None:
    if not result.get("had_grant"):
        print(f"{name}: nothing to log out of; local credentials are cleared")
        return
    for r in result.get("revocation", []):
        detail = f" ({r['detail']})" if r.get("detail") else ""
        print(f"{name}: {r['token']}: {r['outcome']}{detail}")
    if not result.get("revocation"):
        print(f"{name}: the authorization server offers no revocation; local credentials are deleted")
    else:
        print(f"{name}: logged out; local credentials are deleted")


def _forget_offline(cfg: config.Config, url: str) -> None:
    """Delete a server's stored credentials when no daemon owns the store."""
    import trio

    from brokerd.store import open_store

    async def forget() -> None:
        await open_store(cfg.store, paths.data_dir()).delete(url)

    trio.run(forget)


def cmd_remove(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    if args.name not in cfg.servers:
        raise CliError(f"no server named {args.name!r} in {args.config}", 4)
    server = cfg.servers[args.name]
    if server.kind != "none" and server.url:
        if _running(args) is not None:
            _print_logout(args.name, _call(args, {"op": "logout", "server": args.name}, timeout=60))
        else:
            _forget_offline(cfg, server.url)
            print(f"{args.name}: local credentials deleted (not revoked: the daemon is not running)")

    def change(raw: dict[str, Any]) -> None:
        del raw["mcpServers"][args.name]

    _edit(args, change)
    _reload_if_running(args)
    print(f"removed {args.name} from {args.config}")
    return EXIT_OK


# ---- argument parsing -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ncp-broker",
        description="One OAuth 2.1 credential broker per user for MCP servers.",
        epilog='Shell use: curl -H "Authorization: Bearer $(ncp-token SERVER)" …  — see docs/.',
    )
    p.add_argument("--version", action="version", version=f"ncp-broker {__version__}")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file in NCP's mcpServers format (default: $NCP_BROKER_CONFIG, else "
        f"{paths.config_path()})",
    )
    p.add_argument(
        "--socket", type=Path, default=None, help="socket path (default: $NCP_BROKER_SOCK or the runtime dir)"
    )
    p.add_argument(
        "--log-level",
        default=os.environ.get("NCP_BROKER_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="daemon log level (default: info)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("start", help="start the daemon (in the background unless --foreground)")
    s.add_argument("--foreground", action="store_true", help="stay in the foreground (for service managers)")
    s.set_defaults(func=cmd_start)
    sub.add_parser("stop", help="stop the daemon").set_defaults(func=cmd_stop)
    sub.add_parser("reload", help="re-read the config (a bad file is refused)").set_defaults(func=cmd_reload)
    s = sub.add_parser("status", help="the daemon and every server's state")
    s.add_argument("server", nargs="?", help="only this server")
    s.add_argument("--json", action="store_true", help="machine-readable (never contains a token)")
    s.set_defaults(func=cmd_status)
    sub.add_parser("list", help="configured servers, from the config file").set_defaults(func=cmd_list)

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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.config = (args.config or paths.config_path()).expanduser()
    args.socket = (args.socket or paths.socket_path()).expanduser()
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        status: int = args.func(args)
    except CliError as exc:
        print(f"ncp-broker: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    return status
