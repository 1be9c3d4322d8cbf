"""Every example runs: the offline variants as documented, the real YAML agents against fake servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
MAESTRO = Path(sys.executable).parent / "maestro"
SECRET_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    # No PYTHONPATH: the YAML agents find their tools' modules from their own folder upwards (README).
    env = {k: v for k, v in os.environ.items() if k not in (*SECRET_ENV, "PYTHONPATH") and not k.startswith("MAESTRO_")}
    env["MAESTRO_DATABASE_URL"] = f"sqlite:///{tmp_path / 'examples.db'}"
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(model="gpt-4.1-mini") as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer(model="claude-haiku-4-5") as fake:
        yield fake


def test_every_example_has_a_readme() -> None:
    folders = sorted(p for p in EXAMPLES.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    assert [p.name for p in folders] == [
        "anthropic_researcher",
        "knowledge_team",
        "langchain_agent",
        "objectives",
        "openai_calculator",
        "workflows",
    ]
    for folder in folders:
        text = (folder / "README.md").read_text(encoding="utf-8")
        assert "offline" in text.lower() and "for real" in text.lower()


def test_openai_calculator_offline(tmp_path: Path) -> None:
    agent = "examples/openai_calculator/agent.offline.yaml"
    result = _run([str(MAESTRO), "run", agent, "What is (12 + 30) * 2?", "--wait"], _env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "COMPLETED steps=5 tool_calls=2" in result.stdout
    assert "output: (12 + 30) * 2 = 84 (replayed by the scripted model)" in result.stdout


def test_openai_calculator_for_real_against_a_fake_server(tmp_path: Path, openai_server: FakeOpenAIServer) -> None:
    openai_server.reset()
    openai_server.reply_tool_calls([("add", {"a": 12, "b": 30})], usage=(400, 20))
    openai_server.reply_tool_calls([("multiply", {"a": 42, "b": 2})], usage=(450, 20))
    openai_server.reply_text("(12 + 30) * 2 = 84", usage=(500, 10))
    env = _env(tmp_path, OPENAI_BASE_URL=openai_server.base_url, OPENAI_API_KEY="sk-example-test-key")
    result = _run([str(MAESTRO), "run", "examples/openai_calculator/agent.yaml", "(12 + 30) * 2?", "--wait"], env)
    assert result.returncode == 0, result.stderr
    assert "COMPLETED steps=5 tool_calls=2 tokens=1400" in result.stdout
    assert "output: (12 + 30) * 2 = 84" in result.stdout
    first, _, third = openai_server.requests
    assert first["model"] == "gpt-4.1-mini"
    assert {t["function"]["name"] for t in first["tools"]} == {"add", "subtract", "multiply", "divide"}
    call_id = third["messages"][-2]["tool_calls"][0]["id"]
    assert third["messages"][-1] == {"role": "tool", "tool_call_id": call_id, "content": "84"}
    assert "sk-example-test-key" not in result.stdout + result.stderr


def test_anthropic_researcher_offline(tmp_path: Path) -> None:
    agent = "examples/anthropic_researcher/agent.offline.yaml"
    result = _run([str(MAESTRO), "run", agent, "Why are there two tides a day?", "--wait"], _env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "COMPLETED steps=5 tool_calls=2" in result.stdout
    assert "[tides-101]" in result.stdout and "scripted model" in result.stdout


def test_anthropic_researcher_for_real_against_a_fake_server(
    tmp_path: Path, anthropic_server: FakeAnthropicServer
) -> None:
    anthropic_server.reset()
    anthropic_server.reply_tool_calls([("search_notes", {"query": "Fundy tidal range", "limit": 50})])
    anthropic_server.reply_tool_calls([("search_notes", {"query": "Fundy tidal range"})])
    anthropic_server.reply_tool_calls([("read_note", {"note_id": "bay-of-fundy"})])
    anthropic_server.reply_text("Resonance: the bay's period matches the tides [bay-of-fundy].", usage=(900, 30))
    env = _env(tmp_path, ANTHROPIC_BASE_URL=anthropic_server.base_url, ANTHROPIC_API_KEY="sk-ant-example-key")
    agent = "examples/anthropic_researcher/agent.yaml"
    result = _run([str(MAESTRO), "run", agent, "Why is the Bay of Fundy tidal range so large?", "--wait"], env)
    assert result.returncode == 0, result.stderr
    assert "COMPLETED steps=7 tool_calls=3" in result.stdout
    assert "[bay-of-fundy]" in result.stdout
    requests = anthropic_server.requests
    assert requests[0]["model"] == "claude-haiku-4-5" and "research assistant" in requests[0]["system"]
    # limit=50 broke the tool's schema: the model got a validation error back, not a call
    rejected = requests[1]["messages"][-1]["content"][0]
    assert rejected["type"] == "tool_result" and "limit" in rejected["content"]
    found = requests[2]["messages"][-1]["content"][0]["content"]
    assert "bay-of-fundy" in found
    assert "Bay of Fundy" in requests[3]["messages"][-1]["content"][0]["content"]


def test_langchain_agent_offline(tmp_path: Path) -> None:
    pytest.importorskip("langchain_core")
    result = _run([sys.executable, "examples/langchain_agent/main.py"], _env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "approval needed: book_hotel" in result.stdout and "-> approved" in result.stdout
    assert "status: COMPLETED" in result.stdout
    assert "bookings: ['HTL-0001']" in result.stdout
    assert "reference HTL-0001" in result.stdout
    assert "no price known" not in result.stderr


def test_knowledge_team_offline(tmp_path: Path) -> None:
    """The README's commands: build the collection, ingest (twice: unchanged), run the three-agent workflow."""
    env = _env(tmp_path)
    steps = [
        (["knowledge", "create", "team-docs", "--embedder", "lexical"], "created team-docs (embedder lexical"),
        (["knowledge", "ingest", "team-docs", "examples/knowledge_team/docs"], "ingested  examples/knowledge_team"),
        (["knowledge", "ingest", "team-docs", "examples/knowledge_team/docs"], "unchanged examples/knowledge_team"),
    ]
    for args, expected in steps:
        result = _run([str(MAESTRO), *args], env)
        assert result.returncode == 0 and expected in result.stdout, (args, result.stdout, result.stderr)
    assert (tmp_path / "qdrant").is_dir(), "the embedded index lives next to the SQLite database"
    question = "How do I return a lantern and get a refund?"
    result = _run([str(MAESTRO), "workflows", "run", "examples/knowledge_team/team.yaml", question, "--wait"], env)
    assert result.returncode == 0, result.stderr
    assert "COMPLETED workflow=knowledge-team" in result.stdout
    assert "output: APPROVED: every sentence is cited" in result.stdout
    cited = "[1] examples/knowledge_team/docs/returns.md, lines 3-6 (Returns and refunds > Return window)"
    assert cited in result.stdout
    assert "Traceback" not in result.stderr
    runs = _run([str(MAESTRO), "--json", "runs", "list", "--limit", "10"], env)
    assert runs.returncode == 0, runs.stderr
    assert sorted(r["agent"] for r in json.loads(runs.stdout)["runs"] if r["agent"].startswith("kb-")) == [
        "kb-researcher",
        "kb-reviewer",
        "kb-writer",
    ]
