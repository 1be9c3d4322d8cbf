"""Git built-ins: status, diff, log, commit in the work folder, hardened against repositories that run code."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agentmaestro.core.risk import RiskLevel
from agentmaestro.tools import Tool, ToolResult
from agentmaestro.tools.builtin import BUILTIN_TOOLS, git_commit, git_diff, git_log, git_status
from agentmaestro.tools.context import ToolContext

GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def call(t: Tool, ctx: ToolContext, **arguments: Any) -> ToolResult:
    return asyncio.run(t.invoke(arguments, context=ctx))


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    wd = tmp_path / "work"
    wd.mkdir()
    git(wd, "init", "-q", "-b", "main")
    (wd / "a.txt").write_text("one\n")
    git(wd, "add", "a.txt")
    git(wd, "commit", "-q", "-m", "initial")
    return wd


@pytest.fixture
def ctx(repo: Path) -> ToolContext:
    return ToolContext(run_id="run-1", workspace_id="ws", agent="gitter", workdir=repo)


def test_risk_and_flags() -> None:
    expected = {
        "git_status": (RiskLevel.SAFE, True),
        "git_diff": (RiskLevel.SAFE, True),
        "git_log": (RiskLevel.SAFE, True),
        "git_commit": (RiskLevel.ELEVATED, False),
    }
    for name, (risk, idempotent) in expected.items():
        assert (BUILTIN_TOOLS[name].risk, BUILTIN_TOOLS[name].idempotent) == (risk, idempotent)


def test_status_diff_commit_log(repo: Path, ctx: ToolContext) -> None:
    assert call(git_status, ctx).content == "## main\n"
    (repo / "a.txt").write_text("one\ntwo\n")
    (repo / "new.txt").write_text("fresh\n")
    status = call(git_status, ctx).content
    assert " M a.txt" in status and "?? new.txt" in status

    diff = call(git_diff, ctx).content
    assert "+two" in diff and "a/a.txt" in diff
    assert call(git_diff, ctx, path="new.txt").content == "(no changes)"  # untracked
    assert "+two" in call(git_diff, ctx, path="a.txt").content

    r = call(git_commit, ctx, message="add two and new")
    assert not r.is_error, r.content
    assert "add two and new" in r.content
    assert call(git_status, ctx).content == "## main\n"
    log = call(git_log, ctx).content.splitlines()
    assert len(log) == 2
    assert log[0].endswith("gitter: add two and new") and log[1].endswith("t: initial")
    assert len(call(git_log, ctx, max_count=1).content.splitlines()) == 1
    assert git(repo, "show", "-s", "--format=%ae %ce", "HEAD").strip() == (
        "gitter@agentmaestro.invalid agentmaestro@agentmaestro.invalid"
    )


def test_commit_without_add_all_and_nothing_to_commit(repo: Path, ctx: ToolContext) -> None:
    (repo / "b.txt").write_text("b\n")
    r = call(git_commit, ctx, message="nothing staged", add_all=False)
    assert r.is_error and "nothing added to commit" in r.content
    git(repo, "add", "b.txt")
    assert "+b" in call(git_diff, ctx, staged=True).content
    assert not call(git_commit, ctx, message="b", add_all=False).is_error
    assert call(git_commit, ctx, message="again").is_error
    assert call(git_commit, ctx, message="  ").is_error


def test_messages_are_not_options(repo: Path, ctx: ToolContext) -> None:
    (repo / "c.txt").write_text("c\n")
    r = call(git_commit, ctx, message="--amend")
    assert not r.is_error, r.content
    assert git(repo, "log", "--format=%s").splitlines() == ["--amend", "initial"]


def test_hooks_and_fsmonitor_never_run(repo: Path, ctx: ToolContext, tmp_path: Path) -> None:
    """A repository prepared to run code (e.g. by an earlier approved shell command) runs none of it."""
    marker = tmp_path / "pwned"
    script = f"#!/bin/sh\ntouch {marker}\n"
    hooks = repo / ".git" / "hooks"
    for name in ("pre-commit", "commit-msg", "post-commit", "prepare-commit-msg"):
        (hooks / name).write_text(script)
        (hooks / name).chmod(0o755)
    evil = repo / "evil.sh"
    evil.write_text(script)
    evil.chmod(evil.stat().st_mode | stat.S_IXUSR)
    with (repo / ".git" / "config").open("a") as fh:
        fh.write(f"[core]\n\tfsmonitor = {evil}\n\tpager = {evil}\n[diff]\n\texternal = {evil}\n")
    (repo / "a.txt").write_text("changed\n")
    assert not call(git_status, ctx).is_error
    assert not call(git_diff, ctx).is_error
    assert not call(git_commit, ctx, message="with hooks present").is_error
    assert not call(git_log, ctx).is_error
    assert not marker.exists()


def test_no_repository_above_the_workdir_is_used(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    outer.mkdir()
    git(outer, "init", "-q", "-b", "main")
    wd = outer / "runs" / "run-1"
    wd.mkdir(parents=True)
    c = ToolContext(run_id="run-1", workspace_id="ws", agent="a", workdir=wd)
    for t in (git_status, git_log, git_diff):
        r = call(t, c)
        assert r.is_error and "not a git repository" in r.content
    (wd / "x.txt").write_text("x")
    assert call(git_commit, c, message="escape?").is_error
    assert "x.txt" not in git(outer, "status", "--short", "--untracked-files=no")


def test_linked_git_dir_is_refused(tmp_path: Path, repo: Path) -> None:
    wd = tmp_path / "linked"
    wd.mkdir()
    os.symlink(repo / ".git", wd / ".git")
    c = ToolContext(run_id="r", workspace_id="w", agent="a", workdir=wd)
    r = call(git_status, c)
    assert r.is_error and "not a plain directory" in r.content
    wd2 = tmp_path / "gitfile"
    wd2.mkdir()
    (wd2 / ".git").write_text(f"gitdir: {repo / '.git'}\n")
    assert call(git_status, ToolContext(run_id="r", workspace_id="w", agent="a", workdir=wd2)).is_error


def test_diff_paths_are_confined(ctx: ToolContext) -> None:
    for bad in ("../outside", "/etc/passwd", "a\x00b", "%2e%2e/x"):
        r = call(git_diff, ctx, path=bad)
        assert r.is_error and "refused" in r.content


def test_secrets_in_diffs_are_redacted(repo: Path, ctx: ToolContext) -> None:
    (repo / "a.txt").write_text("OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwx0123\n")
    out = call(git_diff, ctx).content
    assert "sk-abcdefghijkl" not in out
    assert "OPENAI_API_KEY=[REDACTED]" in out


def test_commit_reconciles_by_message_and_tree(repo: Path, ctx: ToolContext) -> None:
    def reconcile(**arguments: Any) -> tuple[str, str]:
        answer = asyncio.run(git_commit.reconcile(arguments, "k", ctx))
        return answer.outcome.value, str(answer.result or answer.reason)

    (repo / "b.txt").write_text("b\n")
    # not committed yet: HEAD has another message
    assert reconcile(message="add b") == ("did_not_happen", "the last commit has another message")
    assert not call(git_commit, ctx, message="add b  \n\n").is_error
    outcome, result = reconcile(message="add b  \n\n")
    assert outcome == "happened" and result.startswith("[") and "add b" in result and "b.txt" in result
    # the same message but changes left that the commit would have included: cannot tell
    (repo / "c.txt").write_text("c\n")
    assert reconcile(message="add b")[0] == "cannot_tell"
    assert reconcile(message="add b", add_all=False)[0] == "happened"  # nothing staged: the index is HEAD's tree
    empty = repo.parent / "empty"
    empty.mkdir()
    git(empty, "init", "-q", "-b", "main")
    fresh = ToolContext(run_id="run-1", workspace_id="ws", agent="gitter", workdir=empty)
    answer = asyncio.run(git_commit.reconcile({"message": "first"}, "k", fresh))
    assert answer.outcome.value == "did_not_happen"
