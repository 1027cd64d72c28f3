"""The clone explains itself: every requirement ID, design rule and repository path cited resolves inside it.

The code and the tests cite requirement IDs (D3, A5, T5, …: docs/requirements.md) and design rules
("DESIGN.md rule 3": docs/design.md), and the docs name files. A newcomer with only this repository must be
able to look every one of them up.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITING = ("brokerd", "client", "tests", "bench", "docs", ".ci")
SUFFIXES = {".py", ".md", ".mjs", ".sh", ".toml", ".txt", ".json"}
REQUIREMENTS = ROOT / "docs" / "requirements.md"
DESIGN = ROOT / "docs" / "design.md"

# An ID is a letter of the checklist's groups and one or two digits, standing alone: "A1", "T3-T6",
# "(D7, T2)", never inside a word or a longer number ("S256", "0xA1", "2025-01-01T10").
DASH = "-\u2013"  # a hyphen or an en dash, as in "T3\u2013T6"
ID = re.compile(rf"(?<![\w.-])([DRASTE])(\d{{1,2}})(?:\s*[{DASH}]\s*\1?(\d{{1,2}}))?(?![\w])")
RULE = re.compile(rf"DESIGN(?:\.md)?\s+rules?\s+(\d+(?:\s*(?:,|and|[{DASH}])\s*\d+)*)")
# Files that hold no citations: lockfiles and fetched packages.
SKIP_PARTS = {"node_modules", "results", "__pycache__"}
SKIP_NAMES = {"package-lock.json", "package.json", "floors.txt", "requirements.md"}


def _sources() -> Iterator[Path]:
    yield ROOT / "README.md"
    for top in CITING:
        for path in sorted((ROOT / top).rglob("*")):
            if (
                path.is_file()
                and path.suffix in SUFFIXES
                and not SKIP_PARTS & set(path.parts)
                and path.name not in SKIP_NAMES
            ):
                yield path


def _cited_ids(text: str) -> Iterator[str]:
    for match in ID.finditer(text):
        group, first, last = match.group(1), int(match.group(2)), match.group(3)
        for number in range(first, int(last) + 1 if last else first + 1):
            yield f"{group}{number}"


def _defined_ids() -> set[str]:
    return set(re.findall(r"^### ([DRASTE]\d{1,2}) — ", REQUIREMENTS.read_text(), re.M))


def _cited_rules(text: str) -> Iterator[int]:
    for match in RULE.finditer(text):
        numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
        if re.search(f"[{DASH}]", match.group(1)) and len(numbers) == 2:
            numbers = list(range(numbers[0], numbers[1] + 1))
        yield from numbers


def test_every_cited_requirement_id_is_defined() -> None:
    """Each ID cited in the code, tests, bench and docs has its own section in docs/requirements.md."""
    defined = _defined_ids()
    undefined = []
    for path in _sources():
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            undefined += [
                f"{path.relative_to(ROOT)}:{line_no}: {i}" for i in _cited_ids(line) if i not in defined
            ]
    assert not undefined, "cited but not defined in docs/requirements.md:\n" + "\n".join(undefined)


def test_the_checklist_ids_are_all_defined() -> None:
    """docs/requirements.md defines every ID of the checklist, including those nothing cites yet."""
    expected = (
        {f"D{n}" for n in range(1, 9)}
        | {f"R{n}" for n in range(1, 5)}
        | {f"A{n}" for n in range(1, 10)}
        | {f"T{n}" for n in range(1, 8)}
        | {"S1", "S2"}
        | {f"E{n}" for n in range(1, 5)}
    )
    assert _defined_ids() == expected


def test_each_requirement_says_where_it_comes_from() -> None:
    """Every section of docs/requirements.md has a Source line naming an RFC, the MCP spec or a SEP."""
    sections = re.split(r"^### ", REQUIREMENTS.read_text(), flags=re.M)[1:]
    for section in sections:
        source = re.search(r"^Source: (.*?)(?:^Code:|^\*\*|\Z)", section, re.M | re.S)
        assert source, section.splitlines()[0]
        assert re.search(r"RFC \d+|MCP 20\d\d-\d\d-\d\d|SEP-\d+", source.group(1)), section.splitlines()[0]


def test_id_pattern_finds_citations_and_skips_lookalikes() -> None:
    """The ID pattern reads ranges and lists, and leaves S256, hex and timestamps alone."""
    text = "(D2-D7, S1) T3\u2013T6 A1-no-S256 code_challenge S256 0xA1 2025-01-01T10:00 R1-R4 rule D8."
    assert list(_cited_ids(text)) == [
        *("D2", "D3", "D4", "D5", "D6", "D7"),
        "S1",
        *("T3", "T4", "T5", "T6"),
        "A1",
        *("R1", "R2", "R3", "R4"),
        "D8",
    ]


def test_every_cited_design_rule_exists() -> None:
    """Each "DESIGN.md rule N" in the code, tests and docs is a numbered rule of docs/design.md."""
    rules = {int(n) for n in re.findall(r"^(\d+)\. \*\*", DESIGN.read_text(), re.M)}
    assert rules == set(range(1, 14))
    missing = []
    for path in _sources():
        text = path.read_text()
        missing += [f"{path.relative_to(ROOT)}: rule {n}" for n in _cited_rules(text) if n not in rules]
    assert not missing, "\n".join(missing)
    assert list(_cited_rules("DESIGN.md rules 2-5 and DESIGN rule 9, DESIGN.md\nrules 7 and 9")) == [
        *(2, 3, 4, 5),
        9,
        *(7, 9),
    ]


PATH = re.compile(r"(?<![\w/.-])((?:brokerd|client|tests|docs|contrib|bench|\.ci)/[\w./*<>-]*)")
OUTSIDE = re.compile(r"\.\./|\bshared/|MCP-AUTH-CHECKLIST|REAL-SERVERS|(?<![\w/])DESIGN\.md(?! rule)")


def _docs() -> Iterator[Path]:
    yield ROOT / "README.md"
    yield from sorted((ROOT / "docs").glob("*.md"))


def test_paths_named_in_the_docs_exist() -> None:
    """Every repository path docs/*.md and README.md name (brokerd/…, docs/…, tests/…) exists."""
    missing = []
    for doc in _docs():
        for line_no, line in enumerate(doc.read_text().splitlines(), 1):
            for match in PATH.finditer(line):
                name = match.group(1).rstrip(".,:;)")
                if "<" in name:  # a pattern such as results/<version>/
                    name = name[: name.index("<")]
                if not any(ROOT.glob(name)) and not (ROOT / name).exists():
                    missing.append(f"{doc.relative_to(ROOT)}:{line_no}: {name}")
    assert not missing, "named but not in the repository:\n" + "\n".join(missing)


def test_docs_point_at_nothing_outside_the_repository() -> None:
    """No doc sends the reader to a file outside the clone (../shared/DESIGN.md, the checklist, …)."""
    outside = []
    for doc in _docs():
        for line_no, line in enumerate(doc.read_text().splitlines(), 1):
            if OUTSIDE.search(line):
                outside.append(f"{doc.relative_to(ROOT)}:{line_no}: {line.strip()}")
    assert not outside, "\n".join(outside)


def test_markdown_links_resolve() -> None:
    """Every relative Markdown link in the docs points at a file of the repository."""
    broken = []
    for doc in _docs():
        for target in re.findall(r"\]\(([^)#\s]+)", doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, "\n".join(broken)
