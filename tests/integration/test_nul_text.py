"""Model and tool text containing NUL characters cannot wedge a run (PostgreSQL refuses NUL in text).

The engine replaces NUL with U+FFFD in what it records, on every database alike, so the step
commits, the run completes, and a replay folds to the same state.
"""

from __future__ import annotations

from agentmaestro import Agent, Orchestrator, RiskLevel, RunStatus, ScriptedModel, tool
from agentmaestro.core.events import fold, scrub_nul
from agentmaestro.engine.worker import WorkerConfig


@tool(risk=RiskLevel.SAFE, idempotent=True)
def dump(name: str) -> str:
    """Print a file that happens to be binary."""
    return f"{name}: ELF\x00\x01\x00 header"


def test_scrub_nul_keeps_untouched_values_and_replaces_nul() -> None:
    clean = {"a": ["x", {"b": 1}], "c": ("y",)}
    assert scrub_nul(clean) is clean
    assert scrub_nul({"k\x00": ["a\x00b", 2], "z": "ok"}) == {"k\ufffd": ["a\ufffdb", 2], "z": "ok"}
    assert scrub_nul(("\x00",)) == ("\ufffd",)


def test_nul_in_tool_output_and_model_text(db_url: str) -> None:
    script = {
        "turns": [
            {"content": "reading\x00", "tool_calls": [{"name": "dump", "arguments": {"name": "bin\x00ary"}}]},
            {"content": "It said: {{last_tool_result}}"},
        ]
    }
    agent = Agent(name="reader", model=ScriptedModel(script), tools=[dump])
    with Orchestrator(database_url=db_url, config=WorkerConfig(poll_interval_s=0.05)) as orch:
        report = orch.run(agent, "show the file")
        assert report.status is RunStatus.COMPLETED, report.error
        assert report.output is not None and "\x00" not in report.output and "ELF\ufffd\x01\ufffd" in report.output
        events = orch.events(report.run_id)
        assert all("\x00" not in str(e.payload) for e in events)
        assert fold(events).final_output == report.output
