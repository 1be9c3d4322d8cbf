"""Workflows as a workspace sees them: the folder's (shared) plus the workspace's stored ones.

A stored workflow shadows a folder workflow of the same name in its workspace only; another
workspace never sees it. A workflow run records the definition it started with in its spec
(:meth:`Workflow.to_spec`), so saving a new version never changes a run that is already going.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from agentmaestro.agents import AgentRegistry
from agentmaestro.errors import ConfigError, NotFoundError
from agentmaestro.store.base import Store
from agentmaestro.workflows.spec import Workflow, WorkflowError, WorkflowRegistry, validate_text

Source = Literal["folder", "stored"]


@dataclass(frozen=True, kw_only=True)
class WorkflowEntry:
    """One workflow visible to a workspace."""

    workflow: Workflow
    """The validated definition."""
    source: Source
    """``folder`` (shared by the server) or ``stored`` (saved in this workspace)."""
    location: str | None
    """The file of a folder workflow; ``stored:<name>@v<version>`` for a stored one."""
    yaml: str | None = None
    """The stored YAML text (stored workflows only)."""
    version: int | None = None
    """How many times it was saved (stored workflows only)."""
    updated_at: float | None = None
    """When it was last saved (stored workflows only)."""
    updated_by: str | None = None
    """Who saved it last (stored workflows only)."""
    created_at: float | None = None
    """When it was first saved (stored workflows only)."""
    created_by: str | None = None
    """Who saved it first (stored workflows only)."""

    @property
    def name(self) -> str:
        """The workflow's name."""
        return self.workflow.name

    def summary(self) -> dict[str, Any]:
        """The list form served by the API and printed by the CLI."""
        wf = self.workflow
        return {
            "name": wf.name,
            "description": wf.description,
            "nodes": [n.id for n in wf.nodes],
            "agents": wf.agent_names(),
            "source": self.source,
            "location": self.location,
            "version": self.version,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }

    def detail(self) -> dict[str, Any]:
        """The summary plus the definition (and the YAML text of a stored workflow)."""
        return {
            **self.summary(),
            "definition": self.workflow.model_dump(mode="json", exclude_none=True),
            "yaml": self.yaml,
            "created_at": self.created_at,
            "created_by": self.created_by,
        }


def check_for_save(text: str, agents: AgentRegistry | None, *, source: str = "<workflow>") -> Workflow:
    """Validate a document before it is stored; WorkflowError lists every problem with its line."""
    wf, problems = validate_text(text, source=source, agents=agents)
    if wf is None:
        raise WorkflowError(source, problems)
    return wf


def _from_row(row: dict[str, Any]) -> WorkflowEntry:
    # Validated against the agents when saved; agents may have changed since, which the run reports.
    wf, problems = validate_text(row["yaml"], source=f"stored workflow {row['name']!r}")
    if wf is None:
        raise WorkflowError(f"stored workflow {row['name']!r}", problems)
    return WorkflowEntry(
        workflow=wf,
        source="stored",
        location=f"stored:{row['name']}@v{row['version']}",
        yaml=row["yaml"],
        version=int(row["version"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


def _from_folder(wf: Workflow, folder: WorkflowRegistry) -> WorkflowEntry:
    return WorkflowEntry(workflow=wf, source="folder", location=folder.source(wf.name))


async def save(
    store: Store, workspace_id: str, text: str, *, agents: AgentRegistry | None, actor: str
) -> WorkflowEntry:
    """Validate and store a workflow document in a workspace (a new version if the name exists)."""
    wf = check_for_save(text, agents)
    row = await store.workflows.save(workspace_id, wf.name, text, actor=actor)
    return _from_row(row)


async def visible(store: Store, workspace_id: str, folder: WorkflowRegistry) -> list[WorkflowEntry]:
    """Every workflow the workspace can run, by name: stored ones shadow folder ones of the same name."""
    entries = {wf.name: _from_folder(wf, folder) for wf in folder}
    for row in await store.workflows.all(workspace_id):
        try:
            entries[row["name"]] = _from_row(row)
        except ConfigError:  # pragma: no cover - rows are validated when saved
            continue
    return [entries[n] for n in sorted(entries)]


async def find(store: Store, workspace_id: str, name: str, folder: WorkflowRegistry) -> WorkflowEntry:
    """The workflow ``name`` as the workspace sees it (NotFoundError if it has none)."""
    try:
        return _from_row(await store.workflows.get(workspace_id, name))
    except NotFoundError:
        pass
    if name in folder:
        return _from_folder(folder.get(name), folder)
    raise NotFoundError(f"workflow {name!r} not found")
