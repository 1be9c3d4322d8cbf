"""What a new user meets in their first hour with the ``maestro`` executable: clear one-line errors, honest
messages, readable times (each command is a real subprocess)."""

from __future__ import annotations

import re
import signal
import socket
import time
from pathlib import Path

import httpx

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
    results = m.many(
        ("run", "calc.yaml", "What is (2 + 3) * 4?"),
        ("run", "calculator", "What is (2 + 3) * 4?", "--wait"),
        ("workflows", "run", "tidy-and-report", "Durable agents"),
        ("--agents-dir", objectives, "objective", "Build a greeting CLI"),
        ("demo",),
    )
    for r in results:
        ok(r)
    assert results[3].lines[-1].startswith("no worker is running: start one with `maestro worker`")  # objective
    runs = ok(m("--json", "runs", "list", "--limit", "100")).json()["runs"]
    assert {r["agent"] for r in runs} >= {"filecalc", "calculator", "tidy-and-report", "objective", "wordsmith"}
    assert all(str(r["created_by"]).startswith("cli:") for r in runs), [(r["agent"], r["created_by"]) for r in runs]
    assert "(not recorded)" not in ok(m("usage", "--by", "user")).out


def test_queued_runs_say_whether_a_worker_will_pick_them_up(tmp_path: Path) -> None:
    m = Maestro(tmp_path, f"sqlite:///{tmp_path / 'm.db'}")
    alone = ok(m("run", "calculator", "What is (2 + 3) * 4?"))
    assert alone.lines == [
        f"{alone.run_id()} PENDING: no worker is running: start one with `maestro worker`, or run it here with --wait"
    ]
    flow = ok(m("workflows", "run", "tidy-and-report", "Durable agents"))
    assert flow.lines[-1] == "no worker is running: start one with `maestro worker`, or run it here with --wait"
    worker = m.popen("worker", "--lease-ttl", "3")
    try:
        deadline = time.monotonic() + 60
        while True:
            seen = ok(m("run", "calculator", "What is (2 + 3) * 4?"))
            if "worker(s) running will pick it up" in seen.out:
                break
            assert time.monotonic() < deadline, str(seen)
            time.sleep(0.5)
        assert re.fullmatch(r"run_\w+ PENDING: queued; 1 worker\(s\) running will pick it up \(.+:\d+\)\n", seen.out)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
    gone = ok(m("run", "calculator", "What is (2 + 3) * 4?"))  # a worker that stopped cleanly is forgotten
    assert "no worker is running" in gone.out


def test_serve_on_a_busy_port_fails_before_printing_anything(tmp_path: Path) -> None:
    m = Maestro(tmp_path, f"sqlite:///{tmp_path / 'm.db'}")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = m("serve", "--port", str(port))
    one_line_error(r, f"port {port} on 127.0.0.1 is already in use", "--port")
    assert not (tmp_path / ".maestro-home" / "bootstrap-admin.key").exists()  # no key made, none printed


def test_times_are_readable(tmp_path: Path) -> None:
    m = Maestro(tmp_path, f"sqlite:///{tmp_path / 'm.db'}")
    ok(m("keys", "create", "--name", "me", "--role", "admin"))
    listed = ok(m("audit", "list")).out
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", listed), listed
    assert not re.search(r"\b1\d{9}\.\d{3}\b", listed), listed  # no epoch seconds


def test_example_agents_import_their_tools_without_pythonpath(tmp_path: Path) -> None:
    m = Maestro(tmp_path, f"sqlite:///{tmp_path / 'm.db'}")
    m.env.pop("PYTHONPATH", None)
    example = REPO / "examples" / "openai_calculator" / "agent.offline.yaml"
    r = ok(m("run", str(example), "What is (12 + 30) * 2?", "--wait"))
    assert "84" in r.out, str(r)
    # A tool module elsewhere: a clear error saying what to do, then --path.
    write(tmp_path / "lib" / "mytools.py", "def shout(text: str) -> str:\n    'Upper-case.'\n    return text.upper()\n")
    write(tmp_path / "agents" / "loud.yaml", "name: loud\nmodel: scripted:calculator\ntools: [mytools:shout]\n")
    missing = m("agents", "show", "agents/loud.yaml")
    one_line_error(missing, "no module named 'mytools'", "--path DIR", "PYTHONPATH")
    shown = ok(m("--path", "lib", "--json", "agents", "show", "agents/loud.yaml")).json()
    assert [t["name"] for t in shown["tools"]] == ["shout"]


def test_queued_through_a_server_says_whether_its_workers_run(tmp_path: Path) -> None:
    from agentmaestro.agents import load_agents_dir
    from agentmaestro.cli._common import builtin_agents_dir
    from tests.e2e.test_server import make_key
    from tests.fakes.server import LiveServer

    agents = load_agents_dir(builtin_agents_dir())
    for worker, expected in ((True, "will pick it up"), (False, "but no worker is running there")):
        url = f"sqlite:///{tmp_path / f'{worker}.db'}"
        key = make_key(url, "default", "operator")
        with LiveServer(url, agents, worker=worker) as srv:
            live = httpx.get(f"{srv.url}/v1/workers", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
            assert len(live) == (1 if worker else 0) and all(w["pid"] > 0 for w in live)
            m = Maestro(tmp_path, None)
            r = ok(m("--server", srv.url, "--api-key", key, "run", "calculator", "What is (2 + 3) * 4?"))
            assert expected in r.out and srv.url in r.out, str(r)
