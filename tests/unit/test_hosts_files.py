"""Writing a host's file: backup 0600, modes kept, symlinks followed, a concurrent change stops us."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from brokerd.hosts import HostsError, diff, read, replace


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_missing_file_is_created_private_with_its_directory(tmp_path: Path) -> None:
    """A host file that does not exist yet is created 0600, its parent directory too; no backup."""
    path = tmp_path / "home" / ".cursor" / "mcp.json"
    current = read(path)
    assert current.data is None
    assert current.text is None
    assert replace(current, "{}\n") is None
    assert path.read_text() == "{}\n"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700


@pytest.mark.parametrize("original_mode", [0o600, 0o644])
def test_backup_holds_the_old_bytes_mode_0600(tmp_path: Path, original_mode: int) -> None:
    """The previous content is copied beside the file, private; the file keeps its own mode."""
    path = tmp_path / "mcp.json"
    path.write_bytes(b'{"mcpServers": {}}  \n')
    path.chmod(original_mode)
    backup = replace(read(path), '{"mcpServers": {"a": 1}}\n')
    assert backup is not None
    assert backup.parent == tmp_path
    assert backup.name.startswith("mcp.json.")
    assert backup.name.endswith(".ncp-broker.bak")
    assert backup.read_bytes() == b'{"mcpServers": {}}  \n'
    assert mode(backup) == 0o600
    assert mode(path) == original_mode
    second = replace(read(path), "{}\n")
    assert second is not None
    assert second != backup


def test_a_symlinked_file_is_edited_where_it_points(tmp_path: Path) -> None:
    """A dotfiles symlink stays a symlink; its target gets the new content."""
    target = tmp_path / "dotfiles" / "settings.json"
    target.parent.mkdir()
    target.write_text("{}\n")
    link = tmp_path / "settings.json"
    link.symlink_to(target)
    replace(read(link), '{"a": 1}\n')
    assert link.is_symlink()
    assert target.read_text() == '{"a": 1}\n'


def test_a_file_changed_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    """If the host rewrote the file after we read it, we stop and its change survives."""
    path = tmp_path / "claude.json"
    path.write_text('{"numStartups": 1}\n')
    current = read(path)
    path.write_text('{"numStartups": 2}\n')
    with pytest.raises(HostsError, match="changed while it was being edited"):
        replace(current, '{"mine": true}\n')
    assert path.read_text() == '{"numStartups": 2}\n'


def test_non_utf8_and_unreadable_files_are_refused(tmp_path: Path) -> None:
    """Bytes that are not UTF-8, or a file we may not read, are errors that name the file."""
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(HostsError, match=r"config.toml is not UTF-8"):
        read(path)
    if os.geteuid() != 0:  # root reads everything
        path.write_text("x")
        path.chmod(0)
        with pytest.raises(HostsError, match="cannot read"):
            read(path)


def test_diff_shows_the_change(tmp_path: Path) -> None:
    """--dry-run prints a unified diff naming the file."""
    path = tmp_path / "mcp.json"
    path.write_text('{\n  "a": 1\n}\n')
    out = diff(read(path), '{\n  "a": 1,\n  "b": 2\n}\n')
    assert out.startswith(f"--- {path}\n+++ {path}\n")
    assert '+  "b": 2\n' in out
    assert '-  "a": 1\n' in out
