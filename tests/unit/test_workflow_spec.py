"""Workflow files: validation errors carry YAML line numbers; the graph is checked; the schema is published."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentmaestro import Agent, ScriptedModel
from agentmaestro.agents import AgentRegistry
from agentmaestro.workflows import dag
from agentmaestro.workflows.spec import Workflow, WorkflowError, json_schema, load_workflow, validate_text

AGENTS = AgentRegistry([Agent(name=n, model=ScriptedModel(["ok"])) for n in ("writer", "reviewer")])


def problems(text: str) -> list[tuple[int | None, str, str]]:
    wf, found = validate_text(text, agents=AGENTS)
    assert wf is None
    return [(p.line, p.path, p.message) for p in found]


def test_field_errors_point_at_their_lines() -> None:
    text = """name: bad
nodes:
  - id: draft
    agent: writer
    colour: blue
  - id: review
    agent: reviewer
    on_failure: sometimes
max_concurrent_nodes: 0
"""
    found = problems(text)
    assert (5, "nodes[0].colour", "unknown field 'colour'") in found
    assert any(line == 8 and path == "nodes[1].on_failure" for line, path, _ in found)
    assert any(line == 9 and path == "max_concurrent_nodes" for line, path, _ in found)


def test_graph_errors_point_at_their_lines() -> None:
    text = """name: graph
nodes:
  - id: a
    agent: writer
    depends_on: [c]
  - id: b
    agent: ghost
    depends_on:
      - a
      - nowhere
    when: "__import__('os')"
  - id: c
    agent: reviewer
    depends_on: [a]
    input: "{{ nodes.zz.output }} {{ secrets }}"
refine:
  draft: c
  review: b
  accept_when: nodes.b.output == 'ok'
"""
    found = problems(text)
    assert (7, "nodes[1].agent", "unknown agent 'ghost'; known agents: reviewer, writer") in found
    assert any(line == 10 and "unknown node 'nowhere'" in msg for line, _, msg in found)
    assert any(line == 11 and "call of '__import__'" in msg for line, _, msg in found)
    assert any(line == 15 and "unknown node 'zz'" in msg for line, _, msg in found)
    assert any(line == 15 and "unknown name 'secrets'" in msg for line, _, msg in found)
    assert any(line == 5 and "dependency cycle: a -> c -> a" in msg for line, _, msg in found)
    assert any(line == 18 and "must depend on the draft node 'c'" in msg for line, _, msg in found)


def test_yaml_syntax_error_has_a_line() -> None:
    [(line, _, message)] = problems("name: x\nnodes:\n  - id: [unclosed\n")
    assert line == 4 and message.startswith("not valid YAML")


def test_load_workflow_reports_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "wf.yaml"
    f.write_text("name: x\nnodes:\n  - id: a\n    agent: nobody\n", encoding="utf-8")
    with pytest.raises(WorkflowError, match=rf"{f}:4: nodes\[0\].agent: unknown agent 'nobody'"):
        load_workflow(f, agents=AGENTS)


def test_published_schema_matches_the_model() -> None:
    schema = json_schema()
    assert schema["title"] == "AgentMaestro workflow"
    assert {"name", "nodes"} <= set(schema["required"])
    docs = Path(__file__).resolve().parents[2] / "docs" / "workflow.schema.json"
    assert json.loads(docs.read_text(encoding="utf-8")) == schema, "regenerate: maestro workflows schema"


def test_plan_skips_follow_the_documented_rule() -> None:
    wf = Workflow.model_validate(
        {
            "name": "p",
            "nodes": [
                {"id": "a", "agent": "writer", "when": "false"},
                {"id": "b", "agent": "writer", "depends_on": ["a"]},
                {"id": "c", "agent": "writer"},
                {"id": "d", "agent": "writer", "depends_on": ["a", "c"]},
            ],
        }
    )
    first = dag.plan(wf, None, "x")
    assert first.skipped == ["a", "b"] and [n.id for n, _ in first.start] == ["c"]
    assert dag.topological_order(wf) == ["a", "c", "b", "d"]


def test_a_document_nested_too_deeply_is_one_problem(tmp_path: Path) -> None:
    flow = "name: deep\nnodes: " + "[" * 5000 + "]" * 5000 + "\n"
    block = "".join(" " * i + f"k{i}:\n" for i in range(1200)) + " " * 1200 + "v: 1\n"
    for text in (flow, block, "{a: " * 200 + "1" + "}" * 200):
        wf, found = validate_text(text, agents=AGENTS)
        assert wf is None
        assert [p.message for p in found] == ["nested more than 64 levels deep"]
    # Brackets inside quoted scalars and comments do not count.
    quoted = 'name: q\nnodes: [{id: a, agent: writer, input: "' + "[" * 100 + '"}]  # ' + "{" * 100 + "\n"
    assert validate_text(quoted, agents=AGENTS)[0] is not None
    deep_file = tmp_path / "deep.yaml"
    deep_file.write_text(flow)
    with pytest.raises(WorkflowError, match="nested more than 64 levels deep"):
        load_workflow(deep_file, agents=AGENTS)
