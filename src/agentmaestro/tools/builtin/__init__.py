"""Built-in tools: filesystem, code execution, HTTP and git, all confined to the run's work folder.

Each is a :class:`~agentmaestro.tools.registry.Tool` with an explicit risk level and idempotency, takes a
:class:`~agentmaestro.tools.context.ToolContext` (injected by the engine, invisible to the model) and returns
size-capped output with secrets redacted.

========================  ===========  ==========
tool                      risk         idempotent
========================  ===========  ==========
``read_file``             SAFE         yes
``list_directory``        SAFE         yes
``search_codebase``       SAFE         yes
``write_file``            ELEVATED     no
``append_file``           ELEVATED     no
``delete_file``           DANGEROUS    no
``run_shell``             DANGEROUS    no
``run_python``            DANGEROUS    no
``http_fetch``            ELEVATED     yes
``git_status``            SAFE         yes
``git_diff``              SAFE         yes
``git_log``               SAFE         yes
``git_commit``            ELEVATED     no
========================  ===========  ==========
"""

from __future__ import annotations

from typing import Final

from agentmaestro.tools.builtin.code import run_python, run_shell
from agentmaestro.tools.builtin.filesystem import (
    append_file,
    delete_file,
    list_directory,
    read_file,
    search_codebase,
    write_file,
)
from agentmaestro.tools.builtin.git import git_commit, git_diff, git_log, git_status
from agentmaestro.tools.builtin.http import http_fetch
from agentmaestro.tools.registry import Tool

__all__ = [
    "BUILTIN_TOOLS",
    "append_file",
    "delete_file",
    "git_commit",
    "git_diff",
    "git_log",
    "git_status",
    "http_fetch",
    "list_directory",
    "read_file",
    "run_python",
    "run_shell",
    "search_codebase",
    "write_file",
]

BUILTIN_TOOLS: Final[dict[str, Tool]] = {
    t.name: t
    for t in (
        read_file,
        write_file,
        append_file,
        list_directory,
        delete_file,
        search_codebase,
        run_shell,
        run_python,
        http_fetch,
        git_status,
        git_diff,
        git_log,
        git_commit,
    )
}
"""Every built-in tool by name."""
