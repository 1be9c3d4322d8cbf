"""Git tools for the repository in the run's work folder.

``git`` runs through :func:`~agentmaestro.tools.sandbox.run_sandboxed` (limits, scrubbed environment, bubblewrap when
usable) and is hardened against repositories that try to run code: no hooks (``core.hooksPath=/dev/null``), no
fsmonitor, external diff, textconv, pager or signing program, no system or global config, and no discovery of a
repository *above* the work folder (``GIT_CEILING_DIRECTORIES``). File tools cannot write inside ``.git``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from agentmaestro.core.reconcile import Reconciled
from agentmaestro.core.risk import RiskLevel
from agentmaestro.errors import ToolError
from agentmaestro.tools import sandbox
from agentmaestro.tools.builtin.filesystem import resolve_in_workdir
from agentmaestro.tools.context import ToolContext
from agentmaestro.tools.registry import tool

__all__ = ["git_commit", "git_diff", "git_log", "git_status"]

OUTPUT_CHARS = 40_000
_HARDENING = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.pager=cat",
    "-c",
    "diff.external=",
    "-c",
    "commit.gpgSign=false",
    "-c",
    "tag.gpgSign=false",
    "-c",
    "gpg.program=false",
    "-c",
    "core.sshCommand=false",
    "-c",
    "protocol.allow=never",
    "-c",
    "color.ui=false",
    "-c",
    "advice.detachedHead=false",
)


async def _git(ctx: ToolContext, *args: str) -> str:
    """Run ``git <args>`` in the work folder; answer stdout (and stderr), or raise with git's message."""
    workdir = Path(os.path.realpath(ctx.workdir))
    if not workdir.is_dir():
        raise ToolError(f"the run's work folder {str(ctx.workdir)!r} does not exist")
    dotgit = workdir / ".git"
    if dotgit.is_symlink() or (dotgit.exists() and not dotgit.is_dir()):
        raise ToolError("refused: .git in the work folder is not a plain directory (a link to another repository?)")
    if not dotgit.is_dir():
        raise ToolError("the work folder is not a git repository (no .git folder at its top)")
    env = {
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CEILING_DIRECTORIES": str(workdir.parent),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_OPTIONAL_LOCKS": "0",
        "GIT_AUTHOR_NAME": ctx.agent or "agent",
        "GIT_AUTHOR_EMAIL": f"{ctx.agent or 'agent'}@agentmaestro.invalid",
        "GIT_COMMITTER_NAME": "AgentMaestro",
        "GIT_COMMITTER_EMAIL": "agentmaestro@agentmaestro.invalid",
        **ctx.env,
    }
    limits = sandbox.SandboxLimits(wall_s=30, output_chars=OUTPUT_CHARS)
    result = await sandbox.run_sandboxed(["git", *_HARDENING, *args], workdir=workdir, limits=limits, env=env)
    if result.timed_out:
        raise ToolError("git timed out")
    if result.exit_code != 0:
        message = (result.stderr or result.stdout).strip() or f"git exited with status {result.exit_code}"
        raise ToolError(message)
    return result.stdout


@tool(risk=RiskLevel.SAFE, idempotent=True, redact_output=True, max_output_chars=OUTPUT_CHARS + 500)
async def git_status(ctx: ToolContext) -> str:
    """Show the branch and changed files of the work folder's git repository (git status --short --branch).

    Args:
        ctx: Call context (injected).
    """
    out = await _git(ctx, "status", "--short", "--branch", "--untracked-files=all")
    return out or "(clean)"


@tool(risk=RiskLevel.SAFE, idempotent=True, redact_output=True, max_output_chars=OUTPUT_CHARS + 500)
async def git_diff(ctx: ToolContext, path: str | None = None, staged: bool = False) -> str:
    """Show uncommitted changes as a unified diff, optionally for one path.

    Args:
        ctx: Call context (injected).
        path: File or folder relative to the work folder; all changes when omitted.
        staged: Show changes staged for commit (git diff --cached) instead of unstaged ones.
    """
    args = ["diff", "--no-ext-diff", "--no-textconv", "--no-color"]
    if staged:
        args.append("--cached")
    if path is not None:
        comps = resolve_in_workdir(ctx, path, follow_last=False)
        args += ["--", "/".join(comps) or "."]
    out = await _git(ctx, *args)
    return out or "(no changes)"


@tool(risk=RiskLevel.SAFE, idempotent=True, redact_output=True, max_output_chars=OUTPUT_CHARS + 500)
async def git_log(ctx: ToolContext, max_count: Annotated[int, Field(ge=1, le=200)] = 20) -> str:
    """Show recent commits, one per line: short hash, date, author, subject.

    Args:
        ctx: Call context (injected).
        max_count: Commits to show at most.
    """
    out = await _git(
        ctx,
        "log",
        f"--max-count={max_count}",
        "--no-color",
        "--no-show-signature",
        "--format=%h %ad %an: %s",
        "--date=short",
    )
    return out or "(no commits)"


def _message_as_stored(message: str) -> str:
    """A message as ``git commit -m`` stores it: no trailing spaces or outer blank lines, blank runs as one."""
    lines = [line.rstrip() for line in message.replace("\r\n", "\n").split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


async def _commit_reconcile(arguments: dict[str, Any], key: str, ctx: ToolContext) -> Reconciled:
    """After a crash: the commit happened when HEAD has this message and the tree it would commit (nothing left).

    HEAD with another message: it did not happen. HEAD with this message but changes left to commit: cannot tell.
    """
    message, add_all = arguments.get("message"), arguments.get("add_all", True)
    if not isinstance(message, str) or not isinstance(add_all, bool):
        return Reconciled.cannot_tell("the arguments are not a message and a flag")
    try:
        head = await _git(ctx, "log", "-1", "--format=%H%x00%B")
    except ToolError as exc:
        if "does not have any commits" in str(exc):
            return Reconciled.did_not_happen("the repository has no commits")
        return Reconciled.cannot_tell(f"git log failed: {exc}")
    commit, _, body = head.partition("\x00")
    if _message_as_stored(body) != _message_as_stored(message):
        return Reconciled.did_not_happen("the last commit has another message")
    try:
        if add_all:
            left = (await _git(ctx, "status", "--porcelain", "--untracked-files=all")).strip()
        else:
            left = (await _git(ctx, "diff", "--cached", "--name-only")).strip()
        shown = await _git(ctx, "show", "--stat", "--format=[%h] %s", "HEAD")
    except ToolError as exc:
        return Reconciled.cannot_tell(f"git failed: {exc}")
    if left:
        return Reconciled.cannot_tell("the last commit has this message, but there are changes it does not include")
    return Reconciled.happened(
        shown.strip(), reason=f"HEAD {commit.strip()[:12]} has this message and the tree the call would commit"
    )


@tool(risk=RiskLevel.ELEVATED, idempotent=False, redact_output=True, reconcile=_commit_reconcile)
async def git_commit(message: str, ctx: ToolContext, add_all: bool = True) -> str:
    """Commit changes in the work folder's git repository (by default staging every change first, git add -A).

    Args:
        message: Commit message.
        ctx: Call context (injected).
        add_all: Stage all changes, including new and deleted files, before committing.
    """
    if not message.strip():
        raise ToolError("the commit message must not be empty")
    if len(message) > 10_000:
        raise ToolError("the commit message is too long (at most 10000 characters)")
    if add_all:
        await _git(ctx, "add", "--all")
    out = await _git(ctx, "commit", "--no-verify", "--no-gpg-sign", "-m", message)
    return out.strip()
