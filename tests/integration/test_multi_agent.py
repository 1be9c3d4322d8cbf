"""MultiAgentOrchestrator: a report per agent; one failure does not stop the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmaestro import Agent, MultiAgentOrchestrator, Orchestrator, RunStatus, ScriptedModel
from agentmaestro.engine.worker import WorkerConfig

pytestmark = pytest.mark.anyio


class Boom:
    name = "boom"

    def invoke(self, task: str) -> str:
        raise RuntimeError(f"cannot do {task}")


def agents() -> list[object]:
    return [
        Agent(name="a", model=ScriptedModel({"latency_s": 0.2, "turns": [{"content": "a: {{input}}"}]})),
        Agent(name="b", model=ScriptedModel({"latency_s": 0.2, "turns": [{"content": "b: {{input}}"}]})),
        Agent(name="c", model=ScriptedModel([{"error": "nope"}]), max_attempts=1, retry_backoff_s=0),
        Boom(),
    ]


def test_run_multi_sync(tmp_path: Path) -> None:
    with Orchestrator(f"sqlite:///{tmp_path / 'm.db'}", config=WorkerConfig(poll_interval_s=0.05)) as orch:
        reports = MultiAgentOrchestrator(max_concurrency=2, orchestrator=orch).run_multi(agents(), "task", timeout=30)
    assert list(reports) == ["a", "b", "c", "boom"]
    assert reports["a"].status is RunStatus.COMPLETED and reports["a"].output == "a: task"
    assert reports["b"].output == "b: task"
    assert reports["c"].status is RunStatus.WAITING_FOR_HUMAN
    assert reports["boom"].status is RunStatus.WAITING_FOR_HUMAN


async def test_run_multi_async_with_own_orchestrator(tmp_path: Path) -> None:
    multi = MultiAgentOrchestrator(max_concurrency=4, database_url=f"sqlite:///{tmp_path / 'n.db'}")
    reports = await multi.run_multi_async(agents()[:2], "x", timeout=30)
    assert {r.status for r in reports.values()} == {RunStatus.COMPLETED}


def test_bad_arguments() -> None:
    from agentmaestro.errors import ConfigError

    with pytest.raises(ConfigError):
        MultiAgentOrchestrator(max_concurrency=0)
