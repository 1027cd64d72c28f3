"""``ncp-broker status`` and ``list``: what the daemon holds, never a token."""

from __future__ import annotations

import argparse
import json
from typing import Any

from brokerd.cli._common import EXIT_NOT_RUNNING, EXIT_OK, CliError, call, fmt_time, load_config

__all__ = ["register"]


def cmd_status(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"op": "status"}
    if args.server:
        request["server"] = args.server
    try:
        status = call(args, request)
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
    stopping = " — stopping: finishing what is in flight" if d.get("stopping") else ""
    print(f"ncp-broker {d['version']} (pid {d['pid']}) since {fmt_time(d['started_at'])}{stopping}")
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
        (label, fmt_time(s[key]))
        for label, key in (
            ("expires", "expires_at"),
            ("last refresh", "last_refresh"),
            ("next refresh", "next_refresh"),
            ("retry at", "retry_at"),
        )
        if s.get(key)
    ]
    if s.get("grant_type") and s.get("grant_type") != "authorization_code":
        details.append(("grant", str(s["grant_type"])))
    if s.get("dpop_bound"):
        details.append(("DPoP", "the token is bound to the daemon's key"))
    if s.get("aliases"):
        details.append(("same grant as", ", ".join(s["aliases"])))
    if s.get("last_error"):
        details.append(("last error", f"[{s.get('last_error_class') or 'error'}] {s['last_error']}"))
    if s.get("unanswered_refresh"):
        details.append(("unanswered", str(s["unanswered_refresh"])))
    if s.get("login_url"):
        details.append(("login URL", str(s["login_url"])))
    if s.get("hint"):
        details.append(("to fix", str(s["hint"])))
    return details


def cmd_list(args: argparse.Namespace) -> int:
    """The config's entries, one per line: name, URL, how it is brokered, and the other names of its grant
    (entries that name one server share one grant; entries that disagree about its settings are refused)."""
    cfg = load_config(args)
    grants = {name: g for g in cfg.grants() for name in g.names}
    for server in cfg.servers.values():
        what = server.kind if server.kind != "none" else f"not brokered: {server.reason}"
        group = grants.get(server.name)
        if group is not None and len(group.names) > 1:
            others = ", ".join(n for n in group.names if n != server.name)
            if group.conflicts:
                what += f"; refused: same server as {others} with different {', '.join(group.conflicts)}"
            else:
                what += f"; same grant as {others}"
        print(f"{server.name}\t{server.url or '-'}\t{what}")
    return EXIT_OK


def register(sub: Any) -> None:
    s = sub.add_parser("status", help="the daemon and every server's state")
    s.add_argument("server", nargs="?", help="only this server")
    s.add_argument("--json", action="store_true", help="machine-readable (never contains a token)")
    s.set_defaults(func=cmd_status)
    sub.add_parser("list", help="configured servers, from the config file").set_defaults(func=cmd_list)
