"""Filesystem built-ins: confinement to the work folder (a corpus of escape attempts) and ordinary behaviour."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from agentmaestro.core.risk import RiskLevel
from agentmaestro.tools import Tool, ToolResult
from agentmaestro.tools.builtin import (
    BUILTIN_TOOLS,
    append_file,
    delete_file,
    list_directory,
    read_file,
    search_codebase,
    write_file,
)
from agentmaestro.tools.context import ToolContext

SECRET = "TOP-SECRET-4f1c9e0b7a"


def call(t: Tool, ctx: ToolContext | None, **arguments: Any) -> ToolResult:
    return asyncio.run(t.invoke(arguments, context=ctx))


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under root (not following symlinks): file contents and link targets."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = p.read_bytes()
            else:
                out[rel] = "dir"
    return out


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """A work folder full of traps next to an 'outside' folder holding a secret."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET + "\n")
    (outside / "fake_etc").mkdir()
    (outside / "fake_etc" / "passwd").write_text(SECRET + " passwd\n")
    work = tmp_path / "work"
    (work / "sub" / "deeper").mkdir(parents=True)
    (work / "hello.txt").write_text("hello world\n")
    (work / "sub" / "inner.txt").write_text("inner needle\n")
    (work / "sub" / "deeper" / "deep.txt").write_text("deep needle\n")
    os.symlink("../outside/secret.txt", work / "link_out")
    os.symlink(str(outside / "secret.txt"), work / "link_abs")
    os.symlink("../outside", work / "dir_out")
    os.symlink("chain2", work / "chain1")
    os.symlink("chain3", work / "chain2")
    os.symlink("../outside/secret.txt", work / "chain3")
    os.symlink("loop_b", work / "loop_a")
    os.symlink("loop_a", work / "loop_b")
    os.symlink("..", work / "sub" / "up")  # points at the work folder: harmless
    os.symlink("../..", work / "sub" / "upup")  # points above it
    os.symlink("../../outside", work / "sub" / "link_dir_out")
    os.symlink(str(outside / "fake_etc"), work / "dir_etc")
    os.symlink("../outside/new_file.txt", work / "dangling_out")
    os.symlink("hello.txt", work / "link_in")
    os.symlink("sub/up/sub/up/hello.txt", work / "link_in_chain")
    os.link(outside / "secret.txt", work / "hard_secret")
    os.mkfifo(work / "fifo")
    return {"root": tmp_path, "work": work, "outside": outside}


@pytest.fixture
def ctx(world: dict[str, Path]) -> ToolContext:
    return ToolContext(run_id="run-1", workspace_id="ws", agent="tester", workdir=world["work"])


# --- the corpus -------------------------------------------------------------------------------------------------------

# Paths that must never reach outside the work folder. "{OUT}" is the absolute path of the outside folder.
ESCAPES: list[str] = [
    "../outside/secret.txt",
    "../../etc/passwd",
    "./../outside/secret.txt",
    "sub/../../outside/secret.txt",
    "sub/deeper/../../../outside/secret.txt",
    "..",
    "../",
    "..//outside//secret.txt",
    "./././../outside/secret.txt",
    "sub/./../..",
    "{OUT}/secret.txt",
    "{OUT}",
    "//{OUT}/secret.txt",
    "/./{OUT}/secret.txt",
    "~/.bashrc",
    "~root/.ssh/id_rsa",
    "secret.txt\x00",
    "hello.txt\x00../../outside/secret.txt",
    "..\\outside\\secret.txt",
    "sub\\..\\..\\outside",
    "%2e%2e/outside/secret.txt",
    "%2E%2E%2Foutside%2Fsecret.txt",
    "..%2foutside%2fsecret.txt",
    "%252e%252e/outside/secret.txt",
    "\uff0e\uff0e/outside/secret.txt",  # full-width dots
    "..\u2215outside\u2215secret.txt",  # division slash
    "\u2024\u2024/outside/secret.txt",  # one-dot leaders
    "..\u200b/outside/secret.txt",  # zero-width space
    "\u202e../outside/secret.txt",  # right-to-left override
    "sub/\n../../outside/secret.txt",
    "..\t/outside/secret.txt",
    "link_out",
    "link_abs",
    "dir_out/secret.txt",
    "dir_out",
    "chain1",
    "loop_a",
    "sub/upup/outside/secret.txt",
    "sub/up/../outside/secret.txt",
    "sub/link_dir_out/secret.txt",
    "dir_etc/passwd",
    "hard_secret",
    "fifo",
    "dangling_out",
]
READ_ONLY_ESCAPES = ["/etc/passwd", "/proc/self/root/etc/passwd", "/proc/self/environ", "/"]
WRITING_TOOLS = {"write_file", "append_file", "delete_file"}


def _cases() -> list[Any]:
    cases = []
    for tool_name in ("read_file", "list_directory", "write_file", "append_file", "delete_file", "search_codebase"):
        paths = ESCAPES + ([] if tool_name in WRITING_TOOLS else READ_ONLY_ESCAPES)
        cases += [pytest.param(tool_name, p, id=f"{tool_name}-{i}") for i, p in enumerate(paths)]
    return cases


CASES = _cases()


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 100


@pytest.mark.parametrize(("tool_name", "raw_path"), CASES)
def test_escape_attempts_never_escape(tool_name: str, raw_path: str, world: dict[str, Path], ctx: ToolContext) -> None:
    path = raw_path.replace("{OUT}", str(world["outside"]))
    before = snapshot(world["outside"])
    t = BUILTIN_TOOLS[tool_name]
    args: dict[str, Any] = {"path": path}
    if tool_name in ("write_file", "append_file"):
        args["content"] = "PWNED"
    if tool_name == "search_codebase":
        args["pattern"] = "SECRET"
    result = call(t, ctx, **args)

    assert SECRET not in result.content
    assert "PWNED" not in (world["outside"] / "secret.txt").read_text()
    assert snapshot(world["outside"]) == before, "something outside the work folder changed"
    assert not (world["outside"] / "new_file.txt").exists()
    if tool_name == "delete_file" and raw_path in {"link_out", "link_abs", "chain1", "loop_a", "hard_secret"}:
        # Deleting a link *itself* is inside the work folder: allowed; its target is untouched (checked above).
        return
    if tool_name == "delete_file" and raw_path in {"fifo", "dangling_out", "dir_out"}:
        return
    assert result.is_error, f"{tool_name}({path!r}) was not refused: {result.content[:200]!r}"


def test_refusals_say_why(ctx: ToolContext) -> None:
    cases = {
        "../outside/secret.txt": "'..' is not allowed",
        "/etc/passwd": "absolute paths are not allowed",
        "a\x00b": "NUL byte",
        "link_out": "resolves outside the work folder",
        "dir_out/secret.txt": "resolves outside the work folder",
        "%2e%2e/x": "percent-encoded",
        "\uff0e\uff0e/x": "look-alike",
        "hard_secret": "hard links",
        "fifo": "not a regular file",
        "a\\b": "backslashes",
        "~/x": "'~' is not expanded",
    }
    for path, reason in cases.items():
        result = call(read_file, ctx, path=path)
        assert result.is_error
        assert reason in result.content, (path, result.content)
        assert result.content.startswith("read_file failed: ")


def test_search_never_follows_links_out(ctx: ToolContext) -> None:
    result = call(search_codebase, ctx, pattern="SECRET")
    assert not result.is_error
    assert SECRET not in result.content
    assert "[0 matches" in result.content


def test_missing_context_is_an_error_result() -> None:
    result = call(read_file, None, path="hello.txt")
    assert result.is_error
    assert "needs a ToolContext" in result.content


def test_context_is_not_in_the_schema() -> None:
    for t in BUILTIN_TOOLS.values():
        assert "ctx" not in t.parameters["properties"]
        assert t.needs_context
    smuggled = asyncio.run(read_file.invoke({"path": "hello.txt", "ctx": "x"}, context=None))
    assert smuggled.is_error


# --- ordinary behaviour -----------------------------------------------------------------------------------------------


def test_risk_levels_and_idempotency() -> None:
    expected = {
        "read_file": (RiskLevel.SAFE, True),
        "list_directory": (RiskLevel.SAFE, True),
        "search_codebase": (RiskLevel.SAFE, True),
        "write_file": (RiskLevel.ELEVATED, False),
        "append_file": (RiskLevel.ELEVATED, False),
        "delete_file": (RiskLevel.DANGEROUS, False),
    }
    for name, (risk, idempotent) in expected.items():
        assert (BUILTIN_TOOLS[name].risk, BUILTIN_TOOLS[name].idempotent) == (risk, idempotent)


def test_read_write_append_delete_roundtrip(world: dict[str, Path], ctx: ToolContext) -> None:
    assert call(read_file, ctx, path="hello.txt").content == "hello world\n"
    assert call(read_file, ctx, path="./sub//inner.txt").content == "inner needle\n"
    assert call(read_file, ctx, path="link_in").content == "hello world\n"  # a link that stays inside is fine
    assert call(read_file, ctx, path="link_in_chain").content == "hello world\n"
    assert call(read_file, ctx, path="sub/up/hello.txt").content == "hello world\n"

    r = call(write_file, ctx, path="new/dir/note.md", content="one\n")
    assert not r.is_error, r.content
    assert (world["work"] / "new" / "dir" / "note.md").read_text() == "one\n"
    assert not call(append_file, ctx, path="new/dir/note.md", content="two\n").is_error
    assert call(read_file, ctx, path="new/dir/note.md").content == "one\ntwo\n"
    assert not call(write_file, ctx, path="new/dir/note.md", content="three").is_error
    assert (world["work"] / "new" / "dir" / "note.md").read_text() == "three"

    r = call(delete_file, ctx, path="new/dir/note.md")
    assert not r.is_error and r.content == "deleted new/dir/note.md"
    assert not (world["work"] / "new" / "dir" / "note.md").exists()
    assert (
        call(delete_file, ctx, path="new/dir/note.md").content == "delete_file failed: no such file: 'new/dir/note.md'"
    )
    assert "is a directory" in call(delete_file, ctx, path="sub").content
    assert call(delete_file, ctx, path=".").is_error


def test_write_through_an_inside_link_writes_the_target(world: dict[str, Path], ctx: ToolContext) -> None:
    assert not call(write_file, ctx, path="link_in", content="via link").is_error
    assert (world["work"] / "hello.txt").read_text() == "via link"
    assert (world["work"] / "link_in").is_symlink()


def test_git_internals_are_not_writable(world: dict[str, Path], ctx: ToolContext) -> None:
    (world["work"] / ".git" / "hooks").mkdir(parents=True)
    (world["work"] / ".git" / "config").write_text("[core]\n")
    for t in (write_file, append_file):
        r = call(t, ctx, path=".git/hooks/pre-commit", content="#!/bin/sh\ntouch /tmp/pwned\n")
        assert r.is_error and "version-control" in r.content
        assert call(t, ctx, path=".git/config", content="[core]\nfsmonitor=evil\n").is_error
    assert call(delete_file, ctx, path=".git/config").is_error
    assert call(write_file, ctx, path="sub/.GIT/config", content="x").is_error
    assert not (world["work"] / ".git" / "hooks" / "pre-commit").exists()
    assert call(read_file, ctx, path=".git/config").content == "[core]\n"  # reading is fine


def test_read_caps_and_binary(world: dict[str, Path], ctx: ToolContext) -> None:
    (world["work"] / "big.txt").write_text("x" * 50_000)
    r = call(read_file, ctx, path="big.txt", max_chars=100)
    assert r.content.startswith("x" * 100 + "\n[file truncated: 50000 bytes in total")
    (world["work"] / "blob.bin").write_bytes(b"\x00\x01\x02" * 10)
    r = call(read_file, ctx, path="blob.bin")
    assert r.is_error and "binary file" in r.content
    assert call(read_file, ctx, path="missing.txt").content == "read_file failed: no such file: 'missing.txt'"
    assert "is a directory" in call(read_file, ctx, path="sub").content
    assert call(read_file, ctx, path="hello.txt", max_chars=0).is_error  # schema: ge=1


def test_write_size_cap(ctx: ToolContext) -> None:
    r = call(write_file, ctx, path="huge.txt", content="x" * 5_000_001)
    assert r.is_error and "too large" in r.content


def test_secrets_in_files_are_redacted(world: dict[str, Path], ctx: ToolContext) -> None:
    (world["work"] / "config.env").write_text("OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwxyz012345\n")
    r = call(read_file, ctx, path="config.env")
    assert "sk-proj-abcdef" not in r.content
    assert "OPENAI_API_KEY=[REDACTED]" in r.content


def test_list_directory(world: dict[str, Path], ctx: ToolContext) -> None:
    out = call(list_directory, ctx).content.splitlines()
    assert "hello.txt (12 bytes)" in out
    assert "sub/" in out
    assert "link_out (symlink)" in out
    assert "fifo (special file)" in out
    assert call(list_directory, ctx, path="sub").content.splitlines() == [
        "deeper/",
        "inner.txt (13 bytes)",
        "link_dir_out (symlink)",
        "up (symlink)",
        "upup (symlink)",
    ]
    assert call(list_directory, ctx, path="sub/up").content == call(list_directory, ctx).content
    assert call(list_directory, ctx, path="hello.txt").is_error
    (world["work"] / "empty").mkdir()
    assert call(list_directory, ctx, path="empty").content == "(empty folder)"


def test_search_codebase(world: dict[str, Path], ctx: ToolContext) -> None:
    r = call(search_codebase, ctx, pattern=r"ne+dle")
    assert r.content.splitlines() == [  # files of a folder before its subfolders, names sorted
        "sub/inner.txt:1: inner needle",
        "sub/deeper/deep.txt:1: deep needle",
        "[2 matches for 'ne+dle' in 3 files searched, 1 skipped (binary, too large, linked or unreadable)]",
    ]
    r = call(search_codebase, ctx, pattern="needle", path="sub/deeper")
    assert r.content.splitlines()[0] == "sub/deeper/deep.txt:1: deep needle"
    r = call(search_codebase, ctx, pattern="needle", path="sub/inner.txt")
    assert r.content.splitlines()[0] == "sub/inner.txt:1: inner needle"
    r = call(search_codebase, ctx, pattern="needle", max_results=1)
    assert "stopped at max_results=1" in r.content
    r = call(search_codebase, ctx, pattern="(", literal=False)
    assert r.is_error and "literal=true" in r.content
    r = call(search_codebase, ctx, pattern="(", literal=True)
    assert not r.is_error and "[0 matches" in r.content
    (world["work"] / "bin.dat").write_bytes(b"needle\x00needle")
    (world["work"] / ".git").mkdir()
    (world["work"] / ".git" / "x").write_text("needle")
    r = call(search_codebase, ctx, pattern="needle")
    assert "bin.dat" not in r.content and ".git" not in r.content


def test_toctou_swap_of_a_directory_for_a_symlink_is_refused(
    world: dict[str, Path], ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the real-path check passes, 'sub' is swapped for a link out; the no-follow open must refuse."""
    from agentmaestro.tools.builtin import filesystem

    real_resolve = filesystem.resolve_in_workdir

    def resolve_then_swap(c: ToolContext, path: str, *, follow_last: bool = True) -> list[str]:
        comps = real_resolve(c, path, follow_last=follow_last)
        os.rename(world["work"] / "sub", world["work"] / "sub_moved")
        os.symlink(str(world["outside"]), world["work"] / "sub")
        return comps

    monkeypatch.setattr(filesystem, "resolve_in_workdir", resolve_then_swap)
    (world["outside"] / "inner.txt").write_text(SECRET)
    before = snapshot(world["outside"])
    r = call(write_file, ctx, path="sub/inner.txt", content="PWNED")
    assert r.is_error and "symlink" in r.content
    assert snapshot(world["outside"]) == before
    os.unlink(world["work"] / "sub")
    os.rename(world["work"] / "sub_moved", world["work"] / "sub")
    r = call(read_file, ctx, path="sub/inner.txt")
    assert r.is_error and SECRET not in r.content


def test_write_and_delete_reconcile_from_what_is_on_disk(world: dict[str, Path]) -> None:
    ctx = ToolContext(run_id="r", workspace_id="ws", agent="a", workdir=world["work"])

    def reconcile(t: Tool, **arguments: Any) -> tuple[str, str]:
        answer = asyncio.run(t.reconcile(arguments, "k", ctx))
        return answer.outcome.value, str(answer.result or answer.reason)

    assert reconcile(write_file, path="notes/a.md", content="hi\n") == ("did_not_happen", "'notes/a.md' does not exist")
    assert not call(write_file, ctx, path="notes/a.md", content="hi\n").is_error
    assert reconcile(write_file, path="notes/a.md", content="hi\n") == ("happened", "wrote 3 bytes to notes/a.md")
    assert reconcile(write_file, path="notes/a.md", content="hi\nthere\n")[0] == "did_not_happen"
    assert reconcile(write_file, path="notes/a.md", content="h")[0] == "did_not_happen"
    # confinement holds in reconcile too: nothing outside the work folder is read
    outcome, reason = reconcile(write_file, path="link_out", content=SECRET + "\n")
    assert outcome == "cannot_tell" and "refused" in reason
    assert reconcile(delete_file, path="notes/a.md") == ("did_not_happen", "'notes/a.md' still exists")
    assert not call(delete_file, ctx, path="notes/a.md").is_error
    assert reconcile(delete_file, path="notes/a.md") == ("happened", "deleted notes/a.md")
    assert reconcile(delete_file, path="gone/b.md")[0] == "happened"
    assert reconcile(delete_file, path="../x")[0] == "cannot_tell"
