"""A regular (non-editable) install holds every module of brokerd/ and client/: compare a built wheel.

    python .ci/check_wheel.py WHEEL

Exits 1 naming each .py file of the checkout's packages that the wheel lacks. An editable install finds
modules in the checkout whatever pyproject.toml's packages list says, so only a real wheel shows a gap.
"""

from __future__ import annotations

import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(wheel: str) -> int:
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    expected = set()
    for package, directory in package_dirs.items():
        base = ROOT / directory
        expected |= {f"{package}/{p.relative_to(base).as_posix()}" for p in base.rglob("*.py")}
    with zipfile.ZipFile(wheel) as archive:
        present = set(archive.namelist())
    missing = sorted(expected - present)
    for name in missing:
        print(f"check_wheel: {Path(wheel).name} lacks {name}", file=sys.stderr)
    print(f"check_wheel: {len(expected) - len(missing)} of {len(expected)} modules in {Path(wheel).name}")
    return 1 if missing else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python .ci/check_wheel.py WHEEL")
    sys.exit(main(sys.argv[1]))
