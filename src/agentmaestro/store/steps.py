"""Steps: the durable step commit (group-committed with concurrent ones) and a run's finished steps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentmaestro.store import _ops
from agentmaestro.store.records import Commit, CommitResult, StepRow

if TYPE_CHECKING:
    from agentmaestro.store.base import Store


class StepRepository:
    """Step commits and step rows; ``store.steps``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def commit(self, commit: Commit) -> CommitResult:
        """Commit one step durably (group-committed with concurrent ones).

        Raises:
            LeaseLostError: the guard matched no row: the lease was taken over or the run changed.
        """
        return await self._store._enqueue(commit)  # type: ignore[no-any-return]

    async def read(self, run_id: str) -> list[StepRow]:
        """A run's finished steps."""
        return await self._store._read(_ops.list_steps, run_id)
