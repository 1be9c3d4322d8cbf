"""Code execution tools: ``run_shell`` and ``run_python``, always through :mod:`agentmaestro.tools.sandbox`.

Both are DANGEROUS (the default gate asks a human first). They run in the run's work folder with resource limits and
a scrubbed environment; where bubblewrap works they also get no network, a minimal read-only root (no host file or
Unix socket beyond ``/usr`` and the interpreter) and, under a root worker, uid 65534. Without bubblewrap
they are refused, unless an operator explicitly allowed unsandboxed execution (``ToolContext.allow_unsandboxed`` or
``MAESTRO_ALLOW_UNSANDBOXED=1`` in the worker's environment).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from agentmaestro.core.risk import RiskLevel
from agentmaestro.errors import ToolError
from agentmaestro.tools import sandbox
from agentmaestro.tools.context import ToolContext
from agentmaestro.tools.registry import RiskRules, Tool, tool

__all__ = [
    "ALLOW_UNSANDBOXED_ENV",
    "python_risk_rules",
    "run_python",
    "run_shell",
    "shell_risk_rules",
    "unsandboxed_allowed",
]

ALLOW_UNSANDBOXED_ENV = "MAESTRO_ALLOW_UNSANDBOXED"
"""Set to ``1`` in the worker's environment to let code tools run without bubblewrap (rlimits only)."""
MAX_TIMEOUT_S = 120
OUTPUT_CHARS = 20_000

_SHELL_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\brm\s+(?:-\S+\s+)*-[a-zA-Z]*[rRf]"), "deletes recursively or forcibly (rm -r/-f)"),
    (re.compile(r"\b(?:sudo|doas|su)\b"), "tries to gain privileges (sudo/su)"),
    (re.compile(r"\b(?:curl|wget|fetch)\b[^\n]*\|\s*(?:sudo\s+)?(?:ba|z|da|k)?sh\b"), "pipes a download into a shell"),
    (re.compile(r"(?:>|\btee\b[^\n|;&]*\s)\s*/etc/|\b(?:cp|mv|install|ln)\b[^\n|;&]*\s/etc/"), "writes under /etc"),
    (re.compile(r"\bchmod\b[^\n|;&]*\b(?:[0-7]?777|a\+w|o\+w)\b"), "makes files world-writable"),
    (re.compile(r"\b(?:mkfs(?:\.\w+)?|fdisk|parted)\b|\bdd\b[^\n]*\bof=/dev/"), "writes to disks or partitions"),
    (re.compile(r":\s*\(\s*\)\s*\{[^}]*:\s*\|\s*:"), "looks like a fork bomb"),
    (re.compile(r"/dev/(?:tcp|udp)/|\b(?:nc|ncat|netcat|socat|ssh|scp|sftp|telnet)\b"), "opens network connections"),
    (re.compile(r"\b(?:curl|wget)\b"), "downloads or uploads over the network"),
    (re.compile(r"\bgit\s+push\b"), "pushes to a git remote"),
    (
        re.compile(r"\b(?:printenv|env)\b\s*(?:$|[|;&>])|\bcat\b[^\n]*/proc/[^\s]*/environ"),
        "reads environment variables",
    ),
    (re.compile(r"\beval\b|\bbase64\b[^\n]*(?:-d|--decode)[^\n]*\|"), "runs obfuscated or generated code"),
    (re.compile(r"(?:~|\$HOME|/root)/\.(?:ssh|aws|config|gnupg|netrc|docker)\b"), "touches credential files"),
)
_PYTHON_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bsubprocess\b|\bos\.(?:system|popen|exec\w*|spawn\w*)\b"), "starts other programs"),
    (re.compile(r"\bshutil\.rmtree\b|\bos\.(?:remove|unlink|rmdir)\b"), "deletes files"),
    (re.compile(r"\b(?:socket|urllib|requests|httpx|http\.client|aiohttp)\b"), "uses the network"),
    (re.compile(r"\bos\.environ\b|\bgetenv\b"), "reads environment variables"),
    (re.compile(r"\b(?:exec|eval|compile)\s*\(|\b__import__\b|\bctypes\b"), "runs dynamic code or native calls"),
    (re.compile(r"['\"]/etc/|['\"]~?/\.(?:ssh|aws)"), "touches system or credential files"),
)


def unsandboxed_allowed(ctx: ToolContext) -> bool:
    """Whether an operator allowed code execution without bubblewrap for this call."""
    return ctx.allow_unsandboxed or os.environ.get(ALLOW_UNSANDBOXED_ENV, "").strip() == "1"


def _reasons(text: Any, patterns: tuple[tuple[re.Pattern[str], str], ...]) -> list[str]:
    if not isinstance(text, str):
        return []
    return [reason for pattern, reason in patterns if pattern.search(text)]


def shell_risk_rules(arguments: Mapping[str, Any], context: ToolContext | None) -> tuple[RiskLevel, list[str]]:
    """Risk rules of ``run_shell``: always DANGEROUS, with reasons naming notable patterns for approvers.

    Args:
        arguments: The proposed arguments (``command`` is inspected).
        context: The call's context (unused).

    Returns:
        ``(RiskLevel.DANGEROUS, reasons)``, e.g. ``["deletes recursively or forcibly (rm -r/-f)"]``.
    """
    return RiskLevel.DANGEROUS, _reasons(arguments.get("command"), _SHELL_PATTERNS)


def python_risk_rules(arguments: Mapping[str, Any], context: ToolContext | None) -> tuple[RiskLevel, list[str]]:
    """Risk rules of ``run_python``: always DANGEROUS, with reasons naming notable patterns for approvers.

    Args:
        arguments: The proposed arguments (``code`` is inspected).
        context: The call's context (unused).

    Returns:
        ``(RiskLevel.DANGEROUS, reasons)``.
    """
    return RiskLevel.DANGEROUS, _reasons(arguments.get("code"), _PYTHON_PATTERNS)


def hidden_paths() -> list[Path]:
    """Folders masked inside the sandbox: the AgentMaestro home (database, other runs' work folders)."""
    home = Path(os.environ.get("MAESTRO_HOME", ".maestro"))
    return [home.resolve()] if home.is_dir() else []


async def _execute(ctx: ToolContext, argv: list[str], *, stdin: str | None, timeout_s: int) -> str:
    workdir = Path(ctx.workdir)
    if not workdir.is_dir():
        raise ToolError(f"the run's work folder {str(workdir)!r} does not exist")
    isolated = sandbox.sandbox_available()
    if not isolated and not unsandboxed_allowed(ctx):
        raise ToolError(
            "refused: no OS sandbox is available here (bubblewrap missing or unusable), so code cannot run without "
            f"network isolation and a read-only root; an operator may allow it with {ALLOW_UNSANDBOXED_ENV}=1 "
            "or ToolContext.allow_unsandboxed"
        )
    limits = sandbox.SandboxLimits(wall_s=timeout_s, output_chars=OUTPUT_CHARS)
    result = await sandbox.run_sandboxed(
        argv, workdir=workdir, limits=limits, env=ctx.env, stdin=stdin, isolate=isolated, hide=hidden_paths()
    )
    if result.timed_out:
        status = f"timed out after {timeout_s}s (process killed)"
    elif result.killed:
        status = f"killed by a signal (exit status {result.exit_code}; CPU or another limit reached)"
    else:
        status = f"exit code {result.exit_code}"
    parts = [status + ("" if result.sandboxed else " [ran WITHOUT OS sandbox: rlimits only]")]
    parts.append(f"--- stdout ---\n{result.stdout}" if result.stdout else "--- stdout: (empty) ---")
    if result.stderr:
        parts.append(f"--- stderr ---\n{result.stderr}")
    text = "\n".join(parts)
    if not result.ok:
        raise ToolError(text)
    return text


def _code_tool(risk_rules: RiskRules) -> Callable[[Callable[..., Any]], Tool]:
    """``@tool`` for a code tool: DANGEROUS, not idempotent, outlives the sandbox's own timeout, output redacted."""
    return tool(
        risk=RiskLevel.DANGEROUS,
        idempotent=False,
        timeout_s=MAX_TIMEOUT_S + 30,
        max_output_chars=2 * OUTPUT_CHARS + 1_000,
        risk_rules=risk_rules,
        redact_output=True,
    )


_TimeoutS = Annotated[int, Field(ge=1, le=MAX_TIMEOUT_S)]


@_code_tool(shell_risk_rules)
async def run_shell(
    command: str,
    ctx: ToolContext,
    timeout_s: _TimeoutS = 30,
) -> str:
    """Run a shell command (/bin/sh -c) in the work folder, sandboxed: no network, only the work folder writable.

    Args:
        command: The shell command line.
        ctx: Call context (injected).
        timeout_s: Seconds before the command is killed.
    """
    if not command.strip():
        raise ToolError("command must not be empty")
    return await _execute(ctx, ["/bin/sh", "-c", command], stdin=None, timeout_s=timeout_s)


@_code_tool(python_risk_rules)
async def run_python(
    code: str,
    ctx: ToolContext,
    timeout_s: _TimeoutS = 30,
) -> str:
    """Run a Python program in the work folder, sandboxed; print() what you want to see.

    Args:
        code: Python source code, run as a script.
        ctx: Call context (injected).
        timeout_s: Seconds before the program is killed.
    """
    if not code.strip():
        raise ToolError("code must not be empty")
    return await _execute(ctx, [sys.executable, "-I", "-"], stdin=code, timeout_s=timeout_s)
