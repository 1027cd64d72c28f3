"""Host config documents: one entry added, replaced and removed, every other byte kept."""

from __future__ import annotations

import json
from typing import Any

import pytest

from brokerd.hosts._formats import FormatError, parse
from brokerd.hosts._jsonedit import JsonDocument, JsonEditError

ENTRY: dict[str, Any] = {"command": "/opt/bin/ncp-broker", "args": ["proxy", "neus"], "env": {"A": "b"}}
PATH = ("mcpServers", "neus")


def roundtrip(text: str, fmt: str, path: tuple[str, ...] = PATH, entry: Any = ENTRY) -> tuple[str, str]:
    """Install, check, install again, uninstall: returns (installed text, text after uninstall)."""
    doc = parse(text, fmt)
    doc.set(path, entry)
    installed = doc.dump()
    again = parse(installed, fmt)
    assert again.get(path) == entry
    again.set(path, entry)
    assert again.dump() == installed, "setting an equal value must change nothing"
    assert again.remove(path)
    return installed, again.dump()


JSON_CASES = {
    "four spaces, other entries and keys": (
        '{\n    "mcpServers": {\n        "a": {"command": "x"}\n    },\n    "theme": "dark"\n}\n',
        "json",
    ),
    "tabs and CRLF": ('{\r\n\t"mcpServers": {\r\n\t\t"a": 1\r\n\t}\r\n}\r\n', "json"),
    "one-line file": ('{"mcpServers": {"a": 1}, "b": [1, 2]}', "json"),
    "comments everywhere": (
        '{\n  // mine\n  "mcpServers": {\n    /* first */ "a": 1 // note\n  }, // end\n}\n',
        "jsonc+commas",
    ),
    "trailing commas": ('{\n  "mcpServers": {\n    "a": 1,\n  },\n}\n', "jsonc+commas"),
    "empty container": ('{\n  "x": 1,\n  "mcpServers": {}\n}\n', "json"),
    "a byte order mark": ('\ufeff{\n  "mcpServers": {\n    "a": 1\n  }\n}\n', "json"),
}


@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_json_uninstall_restores_the_file(case: str) -> None:
    """Install then uninstall gives back the original bytes; the install changes nothing else."""
    text, fmt = JSON_CASES[case]
    installed, restored = roundtrip(text, fmt)
    assert restored == text
    # Everything before the container's closing brace is still there, untouched.
    assert installed.startswith(text[: text.index('"mcpServers"')])


def test_json_new_member_copies_the_files_indentation() -> None:
    """The entry is indented with the file's own unit and line ending."""
    installed, _ = roundtrip('{\r\n\t"mcpServers": {\r\n\t\t"a": 1\r\n\t}\r\n}\r\n', "json")
    assert '\r\n\t\t"neus": {\r\n\t\t\t"command": "/opt/bin/ncp-broker",' in installed
    assert installed.count("\n") == installed.count("\r\n")
    installed, _ = roundtrip('{\n    "mcpServers": {}\n}\n', "json")
    assert '\n        "neus": {\n            "command"' in installed


def test_json_missing_file_and_missing_container() -> None:
    """An empty document gets the container, with two-space indentation."""
    doc = parse("", "json")
    doc.set(PATH, ENTRY)
    assert json.loads(doc.dump()) == {"mcpServers": {"neus": ENTRY}}
    doc = parse('{\n    "projects": {}\n}\n', "json")
    doc.set(("projects", "/p", "mcpServers", "neus"), ENTRY)
    assert json.loads(doc.dump())["projects"] == {"/p": {"mcpServers": {"neus": ENTRY}}}
    assert doc.dump().startswith('{\n    "projects": {\n        "/p": {')


def test_json_keeps_a_comment_after_the_last_member_with_that_member() -> None:
    """A line comment ending the last entry's line stays there, not after ours."""
    installed, _ = roundtrip('{\n  "mcpServers": {\n    "a": 1 // note\n  }\n}\n', "jsonc")
    assert '"a": 1, // note\n    "neus": {' in installed


def test_json_replace_keeps_the_neighbours() -> None:
    """Replacing a member's value changes that value only."""
    text = '{\n  "mcpServers": {\n    "neus": {"command": "old"},\n    "b": 2 // keep\n  }\n}\n'
    doc = parse(text, "jsonc")
    doc.set(PATH, ENTRY)
    out = doc.dump()
    assert out.endswith('\n    "b": 2 // keep\n  }\n}\n')
    assert json.loads(out.replace("// keep", ""))["mcpServers"]["neus"] == ENTRY


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ('{\n  "mcpServers": {\n    "neus": {"q": 1},\n    "b": 2\n  }\n}\n', "json"),
        ('{\n  "mcpServers": {\n    "b": 2,\n    // c\n    "neus": {"q": 1}\n  }\n}\n', "jsonc"),
        ('{\n  "mcpServers": {\n    // only one\n    "neus": {"q": 1}\n  }\n}\n', "jsonc"),
        ('{"mcpServers": {"neus": 1, "b": 2}}', "json"),
    ],
)
def test_json_remove_leaves_valid_json_and_the_comments(text: str, fmt: str) -> None:
    """Removing a member anywhere keeps the document valid and its comments."""
    doc = parse(text, fmt)
    assert doc.remove(PATH)
    out = doc.dump()
    again = parse(out, fmt)
    assert again.get(PATH) is None
    assert out.count("//") == text.count("//")
    if "b" in text:
        assert again.get(("mcpServers", "b")) == 2


@pytest.mark.parametrize(
    ("text", "fmt", "problem"),
    [
        ('{\n  // a comment\n  "mcpServers": {}\n}', "json", "comment"),
        ('{"mcpServers": {"a": 1,}}', "jsonc", "not valid JSON"),
        ('{"mcpServers": {', "json", "not valid JSON"),
        ("[1, 2]", "json", "not a JSON object"),
        ('{"a": 1} /* open', "jsonc", "never closed"),
    ],
)
def test_json_refuses_what_the_host_would_not_read(text: str, fmt: str, problem: str) -> None:
    """Comments in a plain-JSON file, trailing commas where not allowed, broken JSON: refused."""
    with pytest.raises(FormatError, match=problem):
        parse(text, fmt)


def test_json_path_through_a_non_object_is_refused() -> None:
    """``"mcpServers": []`` is not silently replaced."""
    doc = parse('{"mcpServers": []}', "json")
    with pytest.raises(FormatError, match=r'\$\["mcpServers"\] is not an object'):
        doc.set(PATH, ENTRY)


def test_json_strings_with_comment_markers_are_not_comments() -> None:
    """``//`` inside a string is data."""
    doc = JsonDocument('{"url": "https://x//y", "mcpServers": {}}', comments=False)
    doc.set(PATH, ENTRY)
    assert json.loads(doc.dump())["url"] == "https://x//y"
    with pytest.raises(JsonEditError):
        JsonDocument('{"a": "x"} // trailing', comments=False)


CODEX = """# my codex config
model = "o3"   # a comment that must survive
notify = ["say", "done"]

[mcp_servers.node]
command = "node"
args = ["server.js"]

[features]
web_search = true
"""


def test_toml_keeps_comments_and_tables() -> None:
    """Codex's config.toml: the entry is a [mcp_servers.NAME] table; uninstall restores the file."""
    path = ("mcp_servers", "neus")
    installed, restored = roundtrip(CODEX, "toml", path)
    assert restored == CODEX
    assert '[mcp_servers.neus]\ncommand = "/opt/bin/ncp-broker"\nargs = ["proxy", "neus"]\n' in installed
    assert 'env = {A = "b"}' in installed
    assert installed.startswith(CODEX[: CODEX.index("[features]")])
    assert installed.endswith("\n\n[features]\nweb_search = true\n")
    new, restored = roundtrip("", "toml", path)
    assert new.startswith("[mcp_servers.neus]\n")
    assert restored == ""


def test_toml_refuses_invalid_and_non_table() -> None:
    """Broken TOML, or mcp_servers that is not a table, is refused."""
    with pytest.raises(FormatError, match="not valid TOML"):
        parse("[mcp_servers\n", "toml")
    with pytest.raises(FormatError, match="not a table"):
        parse('mcp_servers = "x"\n', "toml").set(("mcp_servers", "neus"), ENTRY)


GOOSE = """# goose config
GOOSE_PROVIDER: anthropic  # keep me
extensions:
  developer:
    bundled: true
    enabled: true
    name: developer
    timeout: 300
    type: builtin
  fs:
    args:
    - -y
    - '@modelcontextprotocol/server-filesystem'
    cmd: npx
    enabled: false
    type: stdio
GOOSE_MODE: smart_approve
"""


def test_yaml_keeps_comments_order_and_quotes() -> None:
    """Goose's config.yaml: a new extension; uninstall restores the file byte for byte."""
    path = ("extensions", "neus")
    entry = {"enabled": True, "type": "stdio", "cmd": "/opt/bin/ncp-broker", "args": ["proxy", "neus"]}
    installed, restored = roundtrip(GOOSE, "yaml", path, entry)
    assert restored == GOOSE
    assert "  neus:\n    enabled: true\n    type: stdio\n" in installed
    assert "    args:\n    - proxy\n    - neus\n" in installed
    assert installed.endswith("GOOSE_MODE: smart_approve\n")


def test_yaml_follows_the_files_indentation() -> None:
    """A four-space file with indented sequences stays that way."""
    text = "extensions:\n    dev:\n        args:\n          - a\n        type: builtin\n"
    entry = {"cmd": "x", "args": ["proxy", "neus"]}
    installed, restored = roundtrip(text, "yaml", ("extensions", "neus"), entry)
    assert restored == text
    assert "    neus:\n        cmd: x\n        args:\n          - proxy\n" in installed


def test_yaml_refuses_invalid_and_non_mapping() -> None:
    """Broken YAML or a list at the top is refused."""
    with pytest.raises(FormatError, match="not valid YAML"):
        parse("extensions: [\n", "yaml")
    with pytest.raises(FormatError, match="not a YAML mapping"):
        parse("- a\n- b\n", "yaml")
