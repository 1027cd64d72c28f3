"""Compare the transport scenarios run direct and through the proxy (run_transport.sh's results).

    report_transport.py RESULTS_DIR VERSION...

Reads ``RESULTS_DIR/VERSION/expected.txt`` and the suite's ``checks.json`` under ``RESULTS_DIR/VERSION/
direct/`` and ``…/proxy/``. A run passes when no check has status ``FAILURE``. The proxy fails a scenario
when the host passes it direct and not through the proxy; a scenario the host fails direct is listed as
``host fails`` and not counted. Prints a table, the failed checks, and ``transport conformance: N passed,
M failed``; exit status 1 when the proxy failed one.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]

_STAMP = re.compile(r"-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d+Z$")


def _checks(directory: Path) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(directory.rglob("checks.json")):
        name = _STAMP.sub("", path.parent.relative_to(directory).as_posix())
        found[name] = json.loads(path.read_text(encoding="utf-8"))
    return found


def _failed(checks: list[dict[str, Any]] | None) -> list[str]:
    if checks is None:
        return ["(no results: the suite did not finish the scenario)"]
    return [
        f"{c.get('id')}: {c.get('errorMessage') or c.get('description')}"
        for c in checks
        if c.get("status") == "FAILURE"
    ]


def _word(failures: list[str]) -> str:
    return "fail" if failures else "pass"


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write("usage: report_transport.py RESULTS_DIR VERSION...\n")
        return 2
    out, versions = Path(argv[1]), argv[2:]
    rows: list[tuple[str, str, str, str, str]] = []
    details: list[str] = []
    passed = failed = 0
    for version in versions:
        vdir = out / version
        direct, proxy = _checks(vdir / "direct"), _checks(vdir / "proxy")
        for scenario in (vdir / "expected.txt").read_text(encoding="utf-8").split():
            d: list[str] = _failed(direct.get(scenario))
            p: list[str] = _failed(proxy.get(scenario))
            if d:
                verdict = "host fails"
                details += [f"{version} {scenario} direct: {line}" for line in d]
            elif p:
                verdict = "FAIL"
                failed += 1
            else:
                verdict = "pass"
                passed += 1
            details += [f"{version} {scenario} proxy: {line}" for line in p]
            rows.append((version, scenario, _word(d), _word(p), verdict))
    width = max(len(r[1]) for r in rows)
    print(f"\n{'version':<11} {'scenario':<{width}}  direct  proxy  verdict")
    for version, scenario, direct_word, proxy_word, verdict in rows:
        print(f"{version:<11} {scenario:<{width}}  {direct_word:<6}  {proxy_word:<5}  {verdict}")
    if details:
        print("\n" + "\n".join(details))
    print(f"\ntransport conformance: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
