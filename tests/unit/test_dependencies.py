"""What the code imports is declared in pyproject.toml, and a regular install contains every package.

A module that only arrives through another package (h11 through httpcore, once) works until that package
stops depending on it; and a package directory missing from ``[tool.setuptools] packages`` is absent from a
regular (non-editable) install while every editable checkout still finds it.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FIRST_PARTY = {"brokerd", "ncp_client", "tests", "bench"}


def _normal(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        assert match, requirement
        names.add(_normal(match.group(0)))
    return names


def _imports(tree: ast.AST) -> Iterator[tuple[str, int, bool]]:
    """(top-level module, line, at module level) for every absolute import, in functions too."""
    in_function: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            in_function.update(n for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.partition(".")[0], node.lineno, node not in in_function
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.partition(".")[0], node.lineno, node not in in_function


def _third_party(*dirs: str) -> Iterator[tuple[str, str, bool]]:
    """(module, place, at module level) for every third-party import under ``dirs``."""
    for top in dirs:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "node_modules" in path.parts:
                continue
            tree = ast.parse(path.read_text(), str(path))
            for module, line, top_level in _imports(tree):
                if module in sys.stdlib_module_names or module in FIRST_PARTY or module == "__future__":
                    continue
                yield module, f"{path.relative_to(ROOT)}:{line}", top_level


@functools.cache
def _installed() -> Mapping[str, list[str]]:
    return packages_distributions()


def _distributions(module: str) -> set[str]:
    found = _installed().get(module)
    assert found, f"{module} is imported but no installed distribution provides it"
    return {_normal(name) for name in found}


def _undeclared(dirs: tuple[str, ...], declared: set[str], lazily: set[str]) -> list[str]:
    missing = []
    for module, place, top_level in _third_party(*dirs):
        allowed = declared if top_level else declared | lazily
        if not _distributions(module) & allowed:
            missing.append(f"{place}: {module} ({', '.join(sorted(_distributions(module)))})")
    return missing


def test_runtime_imports_are_declared_dependencies() -> None:
    """Every third-party module brokerd/ and client/ import (in functions too) is a declared dependency;
    one imported only inside a function (httpx2 for broker_auth_for_httpx2) may come from an extra."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    lazily = set().union(*(_declared(reqs) for name, reqs in extras.items() if name != "test"))
    missing = _undeclared(("brokerd", "client"), _declared(PYPROJECT["project"]["dependencies"]), lazily)
    assert not missing, "imported but not in pyproject.toml's dependencies:\n" + "\n".join(missing)


def test_test_imports_are_declared_test_dependencies() -> None:
    """Every third-party module tests/ and bench/ import is a dependency or in the test extra, so the
    floors in .ci/floors.txt cover what the tests use."""
    project = PYPROJECT["project"]
    declared = _declared(project["dependencies"]) | _declared(project["optional-dependencies"]["test"])
    missing = _undeclared(("tests", "bench"), declared, lazily=set())
    assert not missing, "imported by tests but not declared:\n" + "\n".join(missing)


def test_import_walk_sees_imports_inside_functions() -> None:
    """The walk finds an import nested in a function, with its line and as not at module level."""
    tree = ast.parse("import a.b\n\ndef f():\n    from c.d import e\n    import g\n")
    assert sorted(_imports(tree)) == [("a", 1, True), ("c", 4, False), ("g", 5, False)]


def test_every_package_directory_is_in_the_packages_list() -> None:
    """[tool.setuptools] packages names every directory of .py files under brokerd/ and client/, and
    nothing else, so a regular install contains all of them (brokerd.cli once was missing)."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = set()
    for package, directory in setuptools["package-dir"].items():
        base = ROOT / directory
        for init in base.rglob("*.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join((package, *rel.parts)))
    for directory in {p.parent for p in (ROOT / "client").rglob("*.py")}:
        assert any(directory.is_relative_to(ROOT / d) for d in setuptools["package-dir"].values()), (
            f"{directory} holds Python files outside every package-dir"
        )
    assert found == listed, (
        f"missing from packages: {sorted(found - listed)}; stale: {sorted(listed - found)}"
    )
    for package in found:
        path = (
            ROOT
            / setuptools["package-dir"][package.partition(".")[0]]
            / package.partition(".")[2].replace(".", "/")
        )
        assert (path / "__init__.py").is_file(), f"{package} has no __init__.py"


def _floors_file() -> dict[str, str]:
    pins = {}
    for raw in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
        line = raw.partition("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f".ci/floors.txt: {line!r} is not NAME==VERSION"
            pins[_normal(name)] = version
    return pins


def _version_key(version: str) -> tuple[int, ...]:
    """``0.30`` and ``0.30.0`` are the same release."""
    parts = [int(part) for part in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def test_floors_file_pins_exactly_the_declared_floors() -> None:
    """.ci/floors.txt pins every dependency and extra at its ">=" floor (as X.Y.Z), and nothing else."""
    project = PYPROJECT["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    declared = {}
    for requirement in requirements:
        # A floor, and at most an upper bound after it (httpx-sse: the proxy uses its 0.4 decoders).
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?>=([0-9.]+)(,<[0-9.]+)?", requirement)
        assert match, f"pyproject.toml: {requirement!r} has no plain >= floor"
        declared[_normal(match.group(1))] = match.group(3)
    pins = _floors_file()
    assert set(pins) == set(declared)
    for name, floor in declared.items():
        assert _version_key(pins[name]) == _version_key(floor), f"{name}: floor {floor}, pinned {pins[name]}"
