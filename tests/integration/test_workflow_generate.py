"""Natural language -> workflow with scripted models: repaired from the validator's problems, reported clearly when
it stays invalid after two repairs, unknown agents and tools used as agents detected, and the prompt the model gets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentmaestro import Agent, ScriptedModel, tool
from agentmaestro.agents import AgentRegistry
from agentmaestro.core.messages import ModelRequest, ModelResponse
from agentmaestro.errors import ConfigError
from agentmaestro.store.base import Store
from agentmaestro.workflows import stored
from agentmaestro.workflows.generate import GenerationError, extract_yaml, generate

ROOT = Path(__file__).resolve().parents[2]
PLANNER = ROOT / "examples" / "workflows" / "generate" / "planner.yaml"


@tool
def web_search(query: str) -> str:
    """Search the web for a query."""
    return query


def agents() -> AgentRegistry:
    return AgentRegistry(
        [
            Agent(name="researcher", model=ScriptedModel(["notes"]), description="Finds facts.", tools=[web_search]),
            Agent(name="summarizer", model=ScriptedModel(["summary"]), description="Summarises text."),
        ]
    )


VALID = """\
name: brief
nodes:
  - id: research
    agent: researcher
  - id: summary
    agent: summarizer
    depends_on: [research]
    input: "Summarise: {{ nodes.research.output }}"
"""
TOOL_AS_AGENT = VALID.replace("agent: researcher", "agent: web_search")
UNKNOWN_AGENT = VALID.replace("agent: summarizer", "agent: editor")


class Recording:
    """A scripted model that keeps the requests it was sent."""

    def __init__(self, answers: list[str]) -> None:
        self.inner = ScriptedModel([{"content": a} for a in answers], ref="recording")
        self.requests: list[ModelRequest] = []

    @property
    def name(self) -> str:
        return self.inner.name

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        return await self.inner.complete(request)


@pytest.mark.anyio
async def test_an_invalid_first_answer_is_repaired_from_the_problems() -> None:
    model = Recording([f"Here it is:\n```yaml\n{TOOL_AS_AGENT}```\n", f"```yaml\n{VALID}```"])
    result = await generate("Research a topic and summarise it", agents=agents(), model=model)
    assert result.valid and result.workflow is not None and result.workflow.name == "brief"
    assert [a.number for a in result.attempts] == [1, 2] and result.yaml == VALID
    [problem] = result.attempts[0].problems
    assert problem.line == 4 and problem.path == "nodes[0].agent"
    assert problem.message.startswith("'web_search' is a tool, not an agent") and "researcher" in problem.message
    assert result.usage.input_tokens == 20  # two calls, scripted usage
    # the model was given the schema, the agents with their tools, and then the problems with their lines
    system = model.requests[0].messages[0].content or ""
    assert '"title":"AgentMaestro workflow"' in system and "- researcher: Finds facts." in system
    assert "web_search (Search the web for a query.)" in system and "{{ expression }}" in system
    repair = model.requests[1].messages
    assert [m.role for m in repair] == ["system", "user", "assistant", "user"]
    assert "line 4: nodes[0].agent: 'web_search' is a tool, not an agent" in (repair[-1].content or "")


@pytest.mark.anyio
async def test_still_invalid_after_two_repairs_is_a_clear_error() -> None:
    answers = ["name: broken\nnodes: []\n", "this is not yaml: [", UNKNOWN_AGENT, VALID]
    model = Recording(answers)
    with pytest.raises(GenerationError) as err:
        await generate("Summarise things", agents=agents(), model=model)
    assert len(model.requests) == 3  # the first answer and two repairs; the fourth answer is never asked for
    gen = err.value.generation
    assert [bool(a.problems) for a in gen.attempts] == [True, True, True]
    assert gen.attempts[0].problems[0].message.startswith("List should have at least 1 item")
    assert gen.attempts[1].problems[0].message.startswith("not valid YAML")
    assert str(err.value).startswith("the generated workflow is still invalid after 2 repair(s): ")
    assert "<generated>:6: nodes[1].agent: unknown agent 'editor'; known agents: researcher, summarizer" in str(
        err.value
    )
    # without raising, the last attempt comes back for review
    again = await generate("x", agents=agents(), model=Recording(answers), max_repairs=1, raise_on_invalid=False)
    assert not again.valid and len(again.attempts) == 2 and again.to_json()["valid"] is False


@pytest.mark.anyio
async def test_planner_role_is_the_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAESTRO_MODEL_DEFAULT", raising=False)
    monkeypatch.delenv("MAESTRO_CONFIG", raising=False)
    monkeypatch.delenv("MAESTRO_MODEL_PLANNER", raising=False)
    with pytest.raises(ConfigError, match="no model configured for role 'planner': set MAESTRO_MODEL_PLANNER"):
        await generate("x", agents=agents())
    with pytest.raises(ConfigError, match="the goal is empty"):
        await generate("  ", agents=agents(), model="scripted:whatever")
    script = Path(os.environ.get("TMPDIR", "/tmp")) / f"planner-{os.getpid()}.yaml"
    script.write_text(f"turns:\n  - content: |\n{''.join('      ' + line + chr(10) for line in VALID.splitlines())}")
    try:
        monkeypatch.setenv("MAESTRO_MODEL_PLANNER", f"scripted:{script}")
        result = await generate("brief me", agents=agents())
        assert result.valid and result.model == f"scripted:{script}"
    finally:
        script.unlink()


def test_extract_yaml() -> None:
    assert extract_yaml("Sure!\n```yml\nname: a\n```\nmore text") == "name: a\n"
    assert extract_yaml("name: a") == "name: a\n"
    assert extract_yaml(None) == "\n"


@pytest.mark.anyio
async def test_saved_only_when_valid(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        result = await generate("brief", agents=agents(), model=Recording([VALID]))
        entry = await stored.save(store, "default", result.yaml, agents=agents(), actor="test")
        assert entry.version == 1 and entry.yaml == VALID
        assert [e.name for e in await stored.visible(store, "other", stored.WorkflowRegistry())] == []
    finally:
        await store.close()


def test_cli_generate_repairs_saves_and_reports_failure(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
    env.update(
        PYTHONPATH=str(ROOT),
        MAESTRO_DATABASE_URL=f"sqlite:///{tmp_path / 'gen.db'}",
        MAESTRO_WORKFLOWS_DIR=str(ROOT / "examples" / "workflows"),
    )
    maestro = [str(Path(sys.executable).parent / "maestro")]
    model = f"scripted:{PLANNER}"
    res = subprocess.run(
        [*maestro, "workflows", "generate", "triage tickets", "--model", model, "--save"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("name: ticket-triage\n")
    assert "after 1 repair(s); saved as version 1 in workspace 'default'" in res.stderr
    run = subprocess.run(
        [*maestro, "workflows", "run", "ticket-triage", "refund my invoice", "--wait"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0 and "COMPLETED workflow=ticket-triage" in run.stdout, run.stderr

    # a planner that never gets it right: one line on stderr, non-zero exit, nothing saved
    bad = tmp_path / "bad.yaml"
    bad.write_text("turns:\n" + "  - content: 'name: x'\n" * 3, encoding="utf-8")
    res = subprocess.run(
        [*maestro, "workflows", "generate", "anything", "--model", f"scripted:{bad}", "--save", "-o", "out.yaml"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.count("\n") == 1
    assert res.stderr.startswith("error: the generated workflow is still invalid after 2 repair(s): ")
    assert (
        "(top): nodes: Field required" in res.stderr
        or "nodes: Field required" in res.stderr
        and not (tmp_path / "out.yaml").exists()
    )
