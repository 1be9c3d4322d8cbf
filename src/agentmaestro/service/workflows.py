"""Workflows: start a run of one the workspace sees (its stored ones, then the shared folder's)."""

from __future__ import annotations

from dataclasses import dataclass

from agentmaestro.actor import Actor
from agentmaestro.service.runs import StartRun, start_run
from agentmaestro.store.base import Store
from agentmaestro.store.records import RunRecord
from agentmaestro.workflows.stored import WorkflowEntry

__all__ = ["StartWorkflow", "start_workflow"]


@dataclass(frozen=True, kw_only=True)
class StartWorkflow:
    """A run of a workflow as it is defined now (the run keeps that definition through later edits)."""

    entry: WorkflowEntry
    """The workflow, as :func:`agentmaestro.workflows.stored.find` found it for the workspace."""
    input: str
    """The task."""
    via: str | None = None
    """The door, when it is worth recording (``chat``)."""


async def start_workflow(store: Store, cmd: StartWorkflow, actor: Actor) -> RunRecord:
    """Create the workflow run (PENDING), recorded as ``workflow.run`` with the definition's source and version."""
    entry = cmd.entry
    detail = {"source": entry.source, "version": entry.version, **({"via": cmd.via} if cmd.via else {})}
    start = StartRun.of_workflow(entry.workflow, cmd.input, source=entry.location, detail=detail)
    return await start_run(store, start, actor)
