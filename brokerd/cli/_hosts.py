"""``ncp-broker hosts``: make MCP hosts reach servers through the broker (docs/hosts.md).

* ``hosts`` (or ``hosts list``): the hosts, their config file on this machine, and which servers are set
  up there;
* ``hosts show HOST SERVER``: the exact entry for that host's file;
* ``hosts install HOST SERVER…`` / ``hosts uninstall HOST SERVER…``: write or remove it, with a backup.

The entry runs ``ncp-broker proxy SERVER``; it never holds a token.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from brokerd.cli._common import EXIT_OK, EXIT_USAGE, CliError, load_config

__all__ = ["register"]

_NCP_NOTE = (
    "NCP: the entry goes into the NCP profile NCP runs from (~/.ncp/profiles/all.json, --profile for "
    "another), never into the file the broker reads. If that profile is the broker's config "
    "(--config ~/.ncp/profiles/all.json), install is refused: the broker's entry must stay a URL the "
    "broker logs in to, and NCP would go on doing its own OAuth for it beside the proxy. Give the broker "
    "its own config (ncp-broker add … without --config), then install with --replace to swap NCP's "
    "entry for the proxy."
)

if TYPE_CHECKING:
    from brokerd import config


def register(sub: Any) -> None:
    from brokerd.hosts import HOSTS

    ids = sorted(HOSTS)
    p = sub.add_parser(
        "hosts",
        help="set up MCP hosts (Claude, Cursor, VS Code, Codex, …) to use the broker",
        description="List MCP hosts and write the entry that runs `ncp-broker proxy SERVER` into their "
        "config files. Hosts: " + ", ".join(ids) + ". See docs/hosts.md.",
    )
    p.set_defaults(func=cmd_list)
    actions = p.add_subparsers(dest="hosts_action", metavar="ACTION")
    listing = actions.add_parser("list", help="the hosts, their config file here, what is installed")
    _location_options(listing, with_name=False)
    listing.set_defaults(func=cmd_list)

    show = actions.add_parser("show", help="print the entry for HOST's config file (HOST all: every host)")
    show.add_argument("host", metavar="HOST", choices=[*ids, "all"])
    show.add_argument("server", metavar="SERVER")
    _location_options(show)
    show.set_defaults(func=cmd_show)

    install = actions.add_parser(
        "install",
        help="write the entries into HOST's config file",
        description="Write one entry per SERVER into HOST's config file, keeping everything else in it. "
        "A backup of the previous file is kept beside it; a second install changes nothing. "
        "A file that does not parse is refused and left as it is.",
        epilog=_NCP_NOTE,
    )
    install.add_argument("host", metavar="HOST", choices=ids)
    install.add_argument("servers", metavar="SERVER", nargs="+")
    _location_options(install)
    install.add_argument("--dry-run", action="store_true", help="print the change as a diff; write nothing")
    install.add_argument(
        "--replace", action="store_true", help="replace an entry of that name that ncp-broker did not write"
    )
    install.add_argument(
        "--via",
        choices=["proxy", "headers"],
        default="proxy",
        help="claude-code only: `headers` writes an HTTP entry whose headersHelper runs "
        "`ncp-token SERVER --headers-json` instead of the proxy (default: proxy)",
    )
    install.set_defaults(func=cmd_install)

    uninstall = actions.add_parser(
        "uninstall",
        help="remove the entries ncp-broker wrote for SERVERs",
        description="Remove from HOST's config file the entries that run `ncp-broker proxy SERVER` (or, "
        "for Claude Code, `ncp-token SERVER`). Entries ncp-broker did not write are never touched.",
    )
    uninstall.add_argument("host", metavar="HOST", choices=ids)
    uninstall.add_argument("servers", metavar="SERVER", nargs="+")
    _location_options(uninstall)
    uninstall.add_argument("--dry-run", action="store_true", help="print the change as a diff; write nothing")
    uninstall.set_defaults(func=cmd_uninstall)


def _location_options(p: argparse.ArgumentParser, *, with_name: bool = True) -> None:
    p.add_argument("--scope", help="user (default), project, or for claude-code also local")
    p.add_argument(
        "--config-file", type=Path, help="the host's config file (default: where the host keeps it)"
    )
    p.add_argument("--project-dir", type=Path, help="the project for --scope project/local (default: .)")
    p.add_argument("--profile", default="all", help="ncp only: the NCP profile (default: all)")
    if with_name:
        p.add_argument("--name", help="the entry's name in the host (default: SERVER)")


# ---- shared ---------------------------------------------------------------------------------------


def _hosts() -> Any:
    import brokerd.hosts

    return brokerd.hosts


def _context(args: argparse.Namespace) -> Any:
    h = _hosts()
    project = (args.project_dir or Path.cwd()).expanduser().absolute()
    return h.Context(home=Path.home(), project=project, ncp_profile=args.profile)


def _location(args: argparse.Namespace, host: Any, ctx: Any) -> tuple[str, Any]:
    scope = args.scope or next(iter(host.scopes))
    if scope not in host.scopes:
        raise CliError(f"{host.id} has no {scope!r} scope; it has: {', '.join(host.scopes)}", EXIT_USAGE)
    location = host.scopes[scope](ctx)
    if args.config_file is not None:
        location = _hosts().Location(args.config_file.expanduser().absolute(), location.container)
    return scope, location


def _brokered(cfg: config.Config, wanted: str, args: argparse.Namespace) -> config.Server:
    server = cfg.servers.get(wanted)
    if server is None and "://" in wanted:
        server = next((s for s in cfg.find_by_url(wanted) if s.kind != "none"), None)
    if server is not None and server.kind != "none":
        return server
    names = sorted(name for name, s in cfg.servers.items() if s.kind != "none")
    why = f"{wanted!r} is not brokered ({server.reason})" if server else f"no server named {wanted!r}"
    listed = f"configured: {', '.join(names)}" if names else "no server is configured yet"
    raise CliError(f"{why} in {args.config}; {listed}\n  add one with: ncp-broker add NAME URL --oauth", 4)


def _wanted(args: argparse.Namespace, host: Any, server: config.Server, via: str) -> Any:
    h = _hosts()
    name = args.name or server.name
    if via == "headers":
        url = server.url or ""
        if urlsplit(url).query:
            raise CliError(
                f"{server.name}'s URL has a query string, which may carry a key, and a header-helper entry "
                "would copy it into the host's file; use the proxy (the default) instead"
            )
        helper = h.ncp_token_command(server.name, socket=args.socket, config=args.config)
        entry = {"type": "http", "url": url, "headersHelper": helper}
    else:
        entry = host.entry(h.launch_for(server.name, socket=args.socket, config=args.config), name)
    return h.Wanted(server.name, name, entry)


def _check_name(args: argparse.Namespace) -> None:
    if args.name is not None:
        if len(args.servers) > 1:
            raise CliError("--name names one entry; give one SERVER with it", EXIT_USAGE)
        if not args.name.strip() or any(ord(c) < 32 for c in args.name):
            raise CliError("--name must be a non-empty name without control characters", EXIT_USAGE)


def _read(location: Any) -> Any:
    h = _hosts()
    try:
        return h.read(location.path)
    except h.HostsError as exc:
        raise CliError(str(exc)) from None


def _not_the_broker_config(args: argparse.Namespace, host: Any, target: Path) -> None:
    mine = args.config.expanduser()
    try:
        same = os.path.samefile(mine, target)  # hard links and symlinked directories included
    except OSError:  # one of them does not exist yet
        same = mine.resolve() == target.resolve()
    if not same:
        return
    if host.id == "ncp":
        raise CliError(
            f"{target} is the broker's own config: the entry the broker reads must stay a URL it logs in "
            "to, never a proxy of itself, and NCP would keep doing its own OAuth for the same server.\n"
            "  give the broker its own config (ncp-broker --config ~/.config/ncp-broker/config.json add …, "
            "or copy the entries there), then: ncp-broker hosts install ncp SERVER --replace"
        )
    raise CliError(f"{target} is the broker's own config file; choose the host's file with --config-file")


# ---- commands -------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    h = _hosts()
    if not hasattr(args, "scope"):
        args.scope = args.config_file = args.project_dir = None
        args.profile = "all"
    ctx = _context(args)
    configured = {n for n, s in load_config(args).servers.items() if s.kind != "none"}
    rows = []
    for host in h.HOSTS.values():
        for scope, locate in host.scopes.items():
            location = locate(ctx)
            default = scope == next(iter(host.scopes))
            current = _safe_read(h, location.path)
            if not default and (current is None or current.data is None):
                continue
            rows.append(
                (
                    f"{host.id}" + ("" if default else f" ({scope})"),
                    location.path,
                    *_state(h, host, location, current, configured),
                )
            )
    home = str(Path.home())
    width = max(len(r[0]) for r in rows)
    for label, path, state, servers in rows:
        shown = str(path).replace(home, "~", 1) if str(path).startswith(home + "/") else str(path)
        print(
            f"{label:<{width}}  {state:<10}  {shown}"
            + (f"\n{'':<{width}}  {'':<10}  installed: {servers}" if servers else "")
        )
    print("\ninstall with: ncp-broker hosts install HOST SERVER   (see: ncp-broker hosts show HOST SERVER)")
    return EXIT_OK


def _safe_read(h: Any, path: Path) -> Any:
    try:
        return h.read(path)
    except h.HostsError:
        return None


def _state(h: Any, host: Any, location: Any, current: Any, configured: set[str]) -> tuple[str, str]:
    if current is None:
        return "unreadable", ""
    if current.data is None:
        return "missing", ""
    try:
        found = h.installed(current.text, host, location, str(location.path))
    except h.MissingLibrary:
        return "exists", "(pip install 'ncp-broker[hosts]' to read it)"
    except h.HostsError:
        return "invalid", "(does not parse; install would refuse it)"
    servers = [s if s in configured else f"{s} (not configured)" for s in sorted(set(found.values()))]
    return "exists", ", ".join(servers)


def cmd_show(args: argparse.Namespace) -> int:
    h = _hosts()
    if args.host == "all":
        for n, host_id in enumerate(h.HOSTS):
            print("\n" if n else "", end="")
            try:
                _show(args, h.HOSTS[host_id])
            except CliError as exc:
                if exc.status != EXIT_USAGE:  # a scope this host lacks is skipped; the rest is an error
                    raise
                print(f"# {host_id}: {exc}")
        return EXIT_OK
    _show(args, h.HOSTS[args.host])
    return EXIT_OK


def _show(args: argparse.Namespace, host: Any) -> None:
    h = _hosts()
    ctx = _context(args)
    scope, location = _location(args, host, ctx)
    server = _brokered(load_config(args), args.server, args)
    variants = ["proxy", "headers"] if host.id == "claude-code" else ["proxy"]
    key = " > ".join(location.container)
    print(f"# {host.title} ({host.id}), {scope} scope: {location.path}, under {key}")
    for via in variants:
        try:
            want = _wanted(args, host, server, via)
        except CliError as exc:
            print(f"\n# via {via}: not possible: {exc}")
            continue
        try:
            text, _ = h.plan_install("", host, location, [want], replace=False, where="(new file)")
        except h.MissingLibrary as exc:
            raise CliError(str(exc)) from None
        if len(variants) > 1:
            print(f"\n# via {via}" + (" (the default)" if via == "proxy" else ""))
        print(text.rstrip("\n"))
        if host.id == "claude-code":
            add = {"user": "user", "project": "project", "local": "local"}[scope]
            print(
                f"# or: claude mcp add-json --scope {add} {shlex.quote(want.name)} "
                f"{shlex.quote(json.dumps(want.entry))}"
            )
    print(f"# check: {host.check}")


def cmd_install(args: argparse.Namespace) -> int:
    h = _hosts()
    host = h.HOSTS[args.host]
    _check_name(args)
    if args.via == "headers" and host.id != "claude-code":
        raise CliError("--via headers is for claude-code only (its headersHelper)", EXIT_USAGE)
    ctx = _context(args)
    _, location = _location(args, host, ctx)
    cfg = load_config(args)
    wanted = [_wanted(args, host, _brokered(cfg, s, args), args.via) for s in args.servers]
    current = _read(location)
    _not_the_broker_config(args, host, current.path)
    original = current.text if current.text is not None else h.start_text(host, ctx)
    try:
        text, outcomes = h.plan_install(
            original, host, location, wanted, replace=args.replace, where=str(location.path)
        )
    except (h.HostsError, h.MissingLibrary) as exc:
        raise CliError(str(exc)) from None
    verbs = {"added": "added", "updated": "updated", "replaced": "replaced (it was not ncp-broker's)"}
    if args.dry_run:
        verbs = {k: f"would have {v}" for k, v in verbs.items()}
    for o in outcomes:
        arrow = "" if o.name == o.server else f" (proxy for {o.server})"
        if o.action == "unchanged":
            print(f"{o.name}{arrow}: already in {host.title}'s {current.path}; nothing changed")
        else:
            print(f"{verbs[o.action]} {o.name}{arrow} in {host.title}'s {current.path}")
    return _finish(args, host, current, text, check=True)


def cmd_uninstall(args: argparse.Namespace) -> int:
    h = _hosts()
    host = h.HOSTS[args.host]
    _check_name(args)
    ctx = _context(args)
    _, location = _location(args, host, ctx)
    current = _read(location)
    if current.text is None:
        print(f"{current.path} does not exist; nothing to remove")
        return EXIT_OK
    try:
        text, outcomes = h.plan_uninstall(
            current.text, host, location, args.servers, name=args.name, where=str(location.path)
        )
    except (h.HostsError, h.MissingLibrary) as exc:
        raise CliError(str(exc)) from None
    for o in outcomes:
        if o.action == "removed":
            arrow = "" if o.name == o.server else f" (proxy for {o.server})"
            print(f"removed {o.name}{arrow} from {host.title}'s {current.path}")
        elif o.action == "foreign":
            print(f"{o.name}: the entry in {current.path} was not written by ncp-broker; left as it is")
        else:
            print(f"{o.server}: no entry of ncp-broker's for it in {current.path}; nothing to remove")
    return _finish(args, host, current, text, check=False)


def _finish(args: argparse.Namespace, host: Any, current: Any, text: str, *, check: bool) -> int:
    h = _hosts()
    if current.text is not None and text == current.text:
        return EXIT_OK
    if args.dry_run:
        print(h.diff(current, text), end="")
        print("(dry run: nothing was written)")
        return EXIT_OK
    try:
        backup = h.replace(current, text)
    except h.HostsError as exc:
        raise CliError(str(exc)) from None
    print(f"  backup of the previous file: {backup}" if backup else f"  created {current.path}")
    if check:
        print(f"  check: {host.check}")
    return EXIT_OK
