"""Git isolation for objective tasks: one worktree and branch per task attempt, merges into the main branch.

Everything goes through the ``git`` command line (``subprocess``, no shell). A failing command raises
:class:`GitError` with the command and git's own message.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from agentmaestro.errors import MaestroError

__all__ = ["GitError", "MergeResult", "Repo"]

_ENV = {
    "GIT_AUTHOR_NAME": "AgentMaestro",
    "GIT_AUTHOR_EMAIL": "maestro@localhost",
    "GIT_COMMITTER_NAME": "AgentMaestro",
    "GIT_COMMITTER_EMAIL": "maestro@localhost",
    "GIT_TERMINAL_PROMPT": "0",
}


class GitError(MaestroError):
    """A git command failed."""


@dataclass(frozen=True, kw_only=True)
class MergeResult:
    """The outcome of merging a task branch."""

    merged: bool
    """True when the branch is now part of the main branch."""
    commit: str | None = None
    """The main branch's commit after the merge."""
    diff: str = ""
    """On a conflict: the conflicting diff (``git diff`` during the merge)."""
    conflicts: tuple[str, ...] = ()
    """On a conflict: the conflicting paths."""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:60]


class Repo:
    """A git repository in which an objective's tasks work (``path`` is its main checkout)."""

    def __init__(self, path: str | Path, *, run_id: str, base_branch: str | None = None) -> None:
        self.path = Path(path).resolve()
        self.run_id = run_id
        if not self.path.is_dir():
            raise GitError(f"repository {str(self.path)!r} does not exist")
        if self._git("rev-parse", "--is-inside-work-tree", check=False).returncode != 0:
            raise GitError(f"{str(self.path)!r} is not a git repository")
        self.base_branch = base_branch or self.current_branch()
        self.worktrees_root = self.path.parent / f".{self.path.name}.maestro-worktrees" / _safe(run_id)

    # ------------------------------------------------------------------------------ plumbing

    def _git(self, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **_ENV}
        try:
            proc = subprocess.run(
                ["git", *args],
                cwd=str(cwd or self.path),
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
                check=False,
            )
        except FileNotFoundError:
            raise GitError("git is not installed (no 'git' on PATH)") from None
        except subprocess.TimeoutExpired:
            raise GitError(f"git {' '.join(args)} timed out") from None
        if check and proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise GitError(f"git {' '.join(args)} failed: {msg[-1] if msg else f'exit {proc.returncode}'}")
        return proc

    def current_branch(self) -> str:
        """The branch checked out in the main checkout."""
        name = self._git("rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
        if name == "HEAD":
            raise GitError(f"{str(self.path)!r} has a detached HEAD; check out a branch first")
        return name

    def branch_name(self, task_id: str, attempt: int) -> str:
        """The branch of one task attempt."""
        return f"maestro/{_safe(self.run_id)}/{_safe(task_id)}-{attempt}"

    # ------------------------------------------------------------------------------ worktrees

    def add_worktree(self, task_id: str, attempt: int) -> Path:
        """Create (or re-create) the worktree of a task attempt on a new branch from the main branch."""
        branch = self.branch_name(task_id, attempt)
        path = self.worktrees_root / f"{_safe(task_id)}-{attempt}"
        if path.exists():
            self._git("worktree", "remove", "--force", str(path), check=False)
            shutil.rmtree(path, ignore_errors=True)
        self._git("worktree", "prune")
        self._git("branch", "-D", branch, check=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._git("worktree", "add", "-b", branch, str(path), self.base_branch)
        return path

    def commit_all(self, worktree: Path, message: str) -> str | None:
        """Commit every change in a worktree; the new commit, or None when nothing changed."""
        self._git("add", "-A", cwd=worktree)
        if self._git("diff", "--cached", "--quiet", cwd=worktree, check=False).returncode == 0:
            return None
        self._git("commit", "-q", "-m", message, cwd=worktree)
        return self._git("rev-parse", "HEAD", cwd=worktree).stdout.strip()

    def diff(self, worktree: Path, limit: int = 20_000) -> str:
        """What the task's branch changed relative to the main branch (truncated to ``limit`` characters)."""
        text = self._git("diff", f"{self.base_branch}...HEAD", cwd=worktree).stdout
        return text if len(text) <= limit else text[:limit] + "\n[diff truncated]"

    def merge(self, task_id: str, attempt: int, message: str) -> MergeResult:
        """Merge a task attempt's branch into the main branch (in the main checkout)."""
        branch = self.branch_name(task_id, attempt)
        if self.current_branch() != self.base_branch:
            self._git("checkout", "-q", self.base_branch)
        proc = self._git("merge", "--no-ff", "--no-edit", "-m", message, branch, check=False)
        if proc.returncode == 0:
            return MergeResult(merged=True, commit=self._git("rev-parse", "HEAD").stdout.strip())
        conflicts = tuple(
            p for p in self._git("diff", "--name-only", "--diff-filter=U", check=False).stdout.split() if p
        )
        diff = self._git("diff", check=False).stdout
        self._git("merge", "--abort", check=False)
        if not conflicts:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise GitError(f"git merge {branch} failed: {msg[-1] if msg else 'unknown error'}")
        return MergeResult(merged=False, diff=diff[:20_000], conflicts=conflicts)

    def remove_worktree(self, task_id: str, attempt: int) -> None:
        """Remove one attempt's worktree and branch (missing ones are fine)."""
        path = self.worktrees_root / f"{_safe(task_id)}-{attempt}"
        self._git("worktree", "remove", "--force", str(path), check=False)
        shutil.rmtree(path, ignore_errors=True)
        self._git("branch", "-D", self.branch_name(task_id, attempt), check=False)

    def cleanup(self) -> None:
        """Remove every worktree and branch of this objective."""
        prefix = f"maestro/{_safe(self.run_id)}/"
        out = self._git("worktree", "list", "--porcelain", check=False).stdout
        for line in out.splitlines():
            if line.startswith("worktree ") and str(self.worktrees_root) in line:
                self._git("worktree", "remove", "--force", line[len("worktree ") :], check=False)
        shutil.rmtree(self.worktrees_root, ignore_errors=True)
        self._git("worktree", "prune", check=False)
        branches = self._git("branch", "--list", f"{prefix}*", "--format=%(refname:short)", check=False).stdout
        for b in branches.split():
            self._git("branch", "-D", b, check=False)
        try:
            self.worktrees_root.parent.rmdir()
        except OSError:
            pass
