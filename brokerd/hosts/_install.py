"""Adding and removing our entries in a host's config text: no I/O, text in and text out.

Rules, the same for every host:

* a missing entry is added; an entry of ours that differs (another executable path, other locations) is
  updated, keeping any key the user added to it (e.g. Gemini's ``trust``); an equal one is left alone, so
  a second install changes nothing;
* an entry with the same name that ncp-broker did not write is refused unless ``replace`` (e.g. to swap
  an ``mcp-remote`` entry for the proxy);
* uninstall removes only entries of ours for the given servers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from brokerd.hosts._formats import Document, parse
from brokerd.hosts._table import Context, Host, Location

__all__ = ["HostsError", "Outcome", "Wanted", "installed", "plan_install", "plan_uninstall", "start_text"]


class HostsError(Exception):
    """A host's file cannot be used or changed as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Wanted:
    server: str  # the broker's name for it
    name: str  # the entry's name in the host
    entry: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    server: str
    name: str
    action: Literal["added", "updated", "replaced", "unchanged", "removed", "absent", "foreign"]


def start_text(host: Host, ctx: Context) -> str:
    """What a missing file starts as."""
    if host.new_document is not None:
        return json.dumps(host.new_document(ctx), indent=2) + "\n"
    return ""


def _document(text: str, host: Host, where: str) -> Document:
    from brokerd.hosts._formats import FormatError

    try:
        return parse(text, host.fmt)
    except FormatError as exc:
        raise HostsError(f"{where}: {exc}; it was left untouched (fix it, or give --config-file)") from None


def installed(text: str, host: Host, location: Location, where: str) -> dict[str, str]:
    """Entry name -> SERVER for every entry of ours in the file."""
    entries = _document(text, host, where).get(location.container)
    if not isinstance(entries, dict):
        return {}
    found = {}
    for name, entry in entries.items():
        server = host.server_of(entry)
        if server is not None:
            found[str(name)] = server
    return found


def plan_install(
    text: str, host: Host, location: Location, wanted: list[Wanted], *, replace: bool, where: str
) -> tuple[str, list[Outcome]]:
    """The new text and what happened to each entry.

    Raises:
        HostsError: the text does not parse, the entries' key holds something else, or an entry that
            ncp-broker did not write has the name and ``replace`` is false.
    """
    from brokerd.hosts._formats import FormatError

    doc = _document(text, host, where)
    outcomes: list[Outcome] = []
    foreign: list[str] = []
    for want in wanted:
        path = (*location.container, host.key(want.name))
        existing = doc.get(path)
        if existing is None:
            action: Literal["added", "updated", "replaced", "unchanged"] = "added"
            new = want.entry
        elif host.server_of(existing) is None:
            if not replace:
                foreign.append(path[-1])
                continue
            action, new = "replaced", want.entry
        else:
            extras = {k: v for k, v in existing.items() if k not in host.owned and k not in want.entry}
            new = {**want.entry, **extras}
            action = "unchanged" if new == existing else "updated"
        if action != "unchanged":
            try:
                doc.set(path, new)
            except FormatError as exc:
                raise HostsError(f"{where}: {exc}; it was left untouched") from None
        outcomes.append(Outcome(want.server, want.name, action))
    if foreign:
        names = ", ".join(repr(n) for n in foreign)
        raise HostsError(
            f"{where} already has an entry named {names} that ncp-broker did not write; nothing was changed\n"
            "  give the proxy another name with --name NAME, or swap that entry for it with --replace "
            "(a backup of the file is kept)"
        )
    return doc.dump(), outcomes


def plan_uninstall(
    text: str, host: Host, location: Location, servers: list[str], *, name: str | None, where: str
) -> tuple[str, list[Outcome]]:
    """The text without our entries for ``servers`` (only the one called ``name`` when given)."""
    doc = _document(text, host, where)
    entries = doc.get(location.container)
    entries = entries if isinstance(entries, dict) else {}
    outcomes = []
    for server in servers:
        removed = False
        for key, entry in list(entries.items()):
            if host.server_of(entry) == server and (name is None or key == host.key(name)):
                doc.remove((*location.container, key))
                outcomes.append(Outcome(server, key, "removed"))
                removed = True
        if not removed:
            key = host.key(name or server)
            action: Literal["foreign", "absent"] = "foreign" if key in entries else "absent"
            outcomes.append(Outcome(server, key, action))
    return doc.dump(), outcomes
