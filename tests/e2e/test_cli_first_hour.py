"""What a new user meets in their first hour with the ``maestro`` executable: clear one-line errors, honest
messages, readable times (each command is a real subprocess)."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.test_cli import Maestro, ok, one_line_error, write

OPENAI_AGENT = """\
name: gpt
model: openai:gpt-4.1-mini
instructions: Answer.
"""


def test_a_model_without_key_is_one_error_line_and_stores_nothing(tmp_path: Path) -> None:
    write(tmp_path / "agents" / "gpt.yaml", OPENAI_AGENT)
    m = Maestro(tmp_path, f"sqlite:///{tmp_path / 'm.db'}")
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        m.env.pop(name, None)
    by_name, by_file = m.many(("run", "gpt", "hi", "--wait"), ("run", "agents/gpt.yaml", "hi", "--follow"))
    for r in (by_name, by_file):
        one_line_error(r, "agent 'gpt' cannot run here: no API key for model 'openai:gpt-4.1-mini'", "OPENAI_API_KEY")
    assert ok(m("--json", "runs", "list")).json()["runs"] == []


REPO = Path(__file__).resolve().parents[2]
CALC = (REPO / "src" / "agentmaestro" / "demo" / "agents" / "calculator.yaml").read_text()


def test_every_cli_door_records_who_started_the_run(tmp_path: Path) -> None:
    write(tmp_path / "calc.yaml", CALC.replace("name: calculator", "name: filecalc"))
    m = Maestro(tmp_path, f"sqlite:///{tmp_path / 'm.db'}")
    objectives = str(REPO / "examples" / "objectives" / "agents")
    for r in m.many(
        ("run", "calc.yaml", "What is (2 + 3) * 4?"),
        ("run", "calculator", "What is (2 + 3) * 4?", "--wait"),
        ("workflows", "run", "tidy-and-report", "Durable agents"),
        ("--agents-dir", objectives, "objective", "Build a greeting CLI"),
        ("demo",),
    ):
        ok(r)
    runs = ok(m("--json", "runs", "list", "--limit", "100")).json()["runs"]
    assert {r["agent"] for r in runs} >= {"filecalc", "calculator", "tidy-and-report", "objective", "wordsmith"}
    assert all(str(r["created_by"]).startswith("cli:") for r in runs), [(r["agent"], r["created_by"]) for r in runs]
    assert "(not recorded)" not in ok(m("usage", "--by", "user")).out
