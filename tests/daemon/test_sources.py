"""Workload and ID tokens from a file or a command (brokerd.grant._sources), with real files and real
processes; trio's MockClock makes the command timeout instant."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from brokerd import config, keys, oauth
from brokerd.grant._sources import MAX_TOKEN, CredentialError, TokenSource
from brokerd.secret import Secret


def source(*, file: Path | None = None, command: list[str] | None = None) -> TokenSource:
    spec = config.TokenSource(file=file, command=tuple(command) if command else None)
    return TokenSource(spec, what="the workload token", key="auth.oauth21.workloadToken", server="ci")


def jwt_with_exp(exp: float) -> str:
    return oauth.compact_jws({"typ": "JWT"}, {"sub": "w", "exp": int(exp)}, keys.new_dpop_key().signer())


async def test_a_file_is_read_again_only_when_it_changes(tmp_path: Path) -> None:
    """The file's content is the token (stripped); a rewrite is seen on the next read."""
    path = tmp_path / "token"
    path.write_text("first-token-value\n")
    s = source(file=path)
    assert await s.read(now=time.time()) == Secret("first-token-value")
    path.write_text("second-token-value")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert await s.read(now=time.time()) == Secret("second-token-value")


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "holds no token"), (b"two words", "holds no token"), (b"\xff\xfe", "holds no token")],
)
async def test_a_file_without_a_token_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    """Empty, several words, not UTF-8: a clear error naming the file and the config key."""
    path = tmp_path / "token"
    path.write_bytes(content)
    with pytest.raises(CredentialError, match=message) as err:
        await source(file=path).read(now=time.time())
    assert str(path) in err.value.message
    assert err.value.hint is not None
    assert "auth.oauth21.workloadToken.file" in err.value.hint


async def test_a_too_big_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"x" * (MAX_TOKEN + 1))
    with pytest.raises(CredentialError, match="larger than"):
        await source(file=path).read(now=time.time())


async def test_an_expired_jwt_is_not_offered(tmp_path: Path) -> None:
    """A JWT past its exp (or within seconds of it) is refused before anything is sent; a fresh one is not."""
    path = tmp_path / "token"
    path.write_text(jwt_with_exp(time.time() - 1))
    with pytest.raises(CredentialError, match="expired at"):
        await source(file=path).read(now=time.time())
    path.write_text(jwt_with_exp(time.time() + 300))
    assert await source(file=path).read(now=time.time())


async def test_a_refused_token_is_never_offered_again(tmp_path: Path) -> None:
    """After a refusal the same token is refused here; a different one is offered."""
    path = tmp_path / "token"
    path.write_text("refused-token-value")
    s = source(file=path)
    s.note_refused(await s.read(now=time.time()))
    with pytest.raises(CredentialError, match="refused") as err:
        await s.read(now=time.time())
    assert err.value.hint is not None
    assert "ncp-broker login ci" in err.value.hint
    path.write_text("a-new-token-value")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert await s.read(now=time.time()) == Secret("a-new-token-value")


async def test_a_command_prints_the_token() -> None:
    """The command runs without a shell; its standard output, stripped, is the token."""
    s = source(command=[sys.executable, "-c", "print('  token-from-command  ')"])
    assert await s.read(now=time.time()) == Secret("token-from-command")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("import sys; sys.exit(4)", "failed (exit status 4)"),
        ("pass", "printed nothing"),
        (f"print('x' * {MAX_TOKEN + 10})", "printed more than"),
        ("import sys; sys.stderr.write('secret-on-stderr'); sys.exit(1)", "failed (exit status 1)"),
    ],
)
async def test_a_failing_command_says_how(code: str, message: str) -> None:
    """Exit status, silence, too much output: each its own message; standard error is never quoted."""
    with pytest.raises(CredentialError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        await source(command=[sys.executable, "-c", code]).read(now=time.time())
    assert "secret-on-stderr" not in err.value.message
    assert err.value.hint is not None
    assert "auth.oauth21.workloadToken.command" in err.value.hint


async def test_a_missing_command_is_named() -> None:
    with pytest.raises(CredentialError, match="was not found"):
        await source(command=["/nonexistent/helper"]).read(now=time.time())


async def test_a_command_that_hangs_is_stopped(autojump_clock: trio.testing.MockClock) -> None:
    """A command that does not finish within COMMAND_TIMEOUT is killed (on MockClock: at once)."""
    with pytest.raises(CredentialError, match="did not finish"):
        await source(command=[sys.executable, "-c", "import time; time.sleep(600)"]).read(now=time.time())
