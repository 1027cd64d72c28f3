"""README.md starts with the two fresh-machine commands, and CI runs the second one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None, "README.md has no ```sh block"
    assert text.index(block.group(0)) < text.index("---"), "the commands must come first"
    return block.group(1).strip().splitlines()


def test_readme_has_exactly_two_commands() -> None:
    """One line installs and runs the broker; one installs test dependencies and runs the tests."""
    run, test = readme_commands()
    assert "ncp-broker start" in run
    assert "pytest" in test


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run runs exactly the README's test command."""
    _, test = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert f'TEST_COMMAND="{test}"' in ci
    assert 'bash -c "$TEST_COMMAND"' in ci


def test_ci_is_a_new_user() -> None:
    """.ci/run makes a fresh venv before the README's test command, and a second one for the floors."""
    ci = (ROOT / ".ci" / "run").read_text()
    fresh = ci.index('fresh_venv "$work/latest"')
    assert "python3 -m venv" in ci
    assert 'mktemp -d "${TMPDIR:-/tmp}/' in ci  # outside the checkout
    assert fresh < ci.index('bash -c "$TEST_COMMAND"')
    floors = ci.index('fresh_venv "$work/floors"')
    assert (
        floors
        < ci.index("pip install --quiet -c .ci/floors.txt -e '.[test]'")
        < ci.index("python -m pytest -q")
    )
    for step in ("python -m ruff check .", "python -m mypy", "bash tests/conformance/run.sh"):
        assert fresh < ci.index(step) < floors, step
