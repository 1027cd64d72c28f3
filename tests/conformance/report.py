"""Summarise a conformance run: one row per scenario and spec version, and the checks that failed.

    report.py RESULTS_DIR VERSION...

Reads ``RESULTS_DIR/VERSION/expected.txt`` (the ``auth/*`` scenarios the suite lists for that version)
and every ``RESULTS_DIR/VERSION/<scenario>-<timestamp>/checks.json`` the suite wrote. A scenario is
``FAIL`` when a check has status ``FAILURE`` or it left no results, ``warn`` when a check has status
``WARNING`` (a SHOULD the broker does not meet; the suite's own exit status counts these as failures,
this report does not), else ``pass``. For each failure it prints the failed checks and the first line the
adapter wrote to stderr. Exit status 1 when any scenario failed.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]

_STAMP = re.compile(r"-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d+Z$")


def _results(version_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for checks in sorted(version_dir.rglob("checks.json")):
        name = _STAMP.sub("", checks.parent.relative_to(version_dir).as_posix())
        found[name] = checks.parent  # the latest run of a scenario wins (sorted by timestamp)
    return found


def _adapter_line(run_dir: Path) -> str:
    try:
        lines = (run_dir / "stderr.txt").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return next((line for line in lines if line.startswith("adapter: ")), "")


def _verdict(checks: list[dict[str, Any]]) -> str:
    statuses = {str(c.get("status")) for c in checks}
    return "FAIL" if "FAILURE" in statuses else "warn" if "WARNING" in statuses else "pass"


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write("usage: report.py RESULTS_DIR VERSION...\n")
        return 2
    out, versions = Path(argv[1]), argv[2:]
    rows: dict[str, dict[str, str]] = {}
    details: list[str] = []
    for version in versions:
        vdir = out / version
        expected = (vdir / "expected.txt").read_text(encoding="utf-8").split()
        results = _results(vdir)
        for scenario in expected:
            run_dir = results.get(scenario)
            if run_dir is None:
                rows.setdefault(scenario, {})[version] = "FAIL"
                details.append(f"{version} {scenario}: no results (the suite did not run it; see {vdir}/)")
                continue
            checks: list[dict[str, Any]] = json.loads((run_dir / "checks.json").read_text(encoding="utf-8"))
            verdict = _verdict(checks)
            rows.setdefault(scenario, {})[version] = verdict
            if verdict == "pass":
                continue
            details.append(f"{version} {scenario}: {verdict}")
            for check in checks:
                if check.get("status") in ("FAILURE", "WARNING"):
                    text = check.get("errorMessage") or check.get("description")
                    details.append(f"    {check['status']} {check.get('id')}: {text}")
            if line := _adapter_line(run_dir):
                details.append(f"    {line}")
    width = max([len("scenario"), *map(len, rows)])
    print("\n" + "scenario".ljust(width) + "".join(f"  {v:<10}" for v in versions))
    for scenario, by_version in rows.items():
        print(scenario.ljust(width) + "".join(f"  {by_version.get(v, '-'):<10}" for v in versions))
    if details:
        print("\n" + "\n".join(details))
    verdicts = [v for by_version in rows.values() for v in by_version.values()]
    failed = verdicts.count("FAIL")
    warned = verdicts.count("warn")
    print(f"\n{warned} of the passing scenario runs have warnings (SHOULDs not met)")
    print(f"conformance: {len(verdicts) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
