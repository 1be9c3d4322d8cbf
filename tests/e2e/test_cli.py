"""The real ``maestro`` executable, driven as a subprocess, on SQLite and PostgreSQL.

Each maestro process costs about a second of start-up, so independent commands run in parallel
waves and assertions are grouped. Every command runs with ``cwd=tmp_path`` (no stray ``./agents``
folder) and an explicit ``--database-url``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAESTRO = Path(sys.executable).parent / "maestro"
TIMEOUT_S = 120
_RUN_ID = re.compile(r"\b(run_[0-9a-f]{24})\b")
_CLEAN_ENV = ("MAESTRO_DATABASE_URL", "MAESTRO_AGENTS_DIR", "MAESTRO_WORKSPACE", "MAESTRO_DEBUG", "MAESTRO_HOME")


@dataclass(frozen=True)
class Result:
    """What a maestro process did."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"maestro {' '.join(self.args)} -> {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def json(self) -> Any:
        return json.loads(self.out)

    def run_id(self) -> str:
        m = _RUN_ID.search(self.out)
        assert m, str(self)
        return m.group(1)


_PYCACHE = Path(tempfile.gettempdir()) / "agentmaestro-test-pycache"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN_ENV}
    env["MAESTRO_HOME"] = str(home / ".maestro-home")  # never the developer's ./.maestro
    env["COLUMNS"] = "200"
    # Start-up dominates: let the subprocesses share compiled bytecode, kept outside the repository.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(_PYCACHE))
    return env


class Maestro:
    """Runs ``maestro --database-url URL ...`` in a fixed working directory."""

    def __init__(self, cwd: Path, db_url: str | None) -> None:
        self.cwd = cwd
        self.db_url = db_url
        self.env = _env(cwd)

    def argv(self, args: Sequence[str]) -> list[str]:
        prefix = ["--database-url", self.db_url] if self.db_url is not None else []
        return [str(MAESTRO), *prefix, *args]

    def __call__(self, *args: str) -> Result:
        proc = subprocess.run(
            self.argv(args), cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
        return Result(tuple(args), proc.returncode, proc.stdout, proc.stderr)

    def many(self, *commands: Sequence[str]) -> list[Result]:
        """Run independent commands in parallel; results in the order given."""
        with ThreadPoolExecutor(max_workers=len(commands)) as pool:
            return list(pool.map(lambda args: self(*args), commands))

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(args),
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def snapshot(self) -> str:
        """Everything `runs list` shows, to compare before and after a command that must change nothing."""
        r = self("--json", "runs", "list", "--limit", "1000")
        assert r.code == 0, str(r)
        return r.out


def ok(r: Result) -> Result:
    assert r.code == 0, str(r)
    assert "Traceback" not in r.err, str(r)
    return r


def one_line_error(r: Result, *needles: str) -> None:
    """Non-zero exit, exactly one line on stderr starting with 'error:', no traceback, nothing on stdout."""
    assert r.code != 0, str(r)
    assert r.err.endswith("\n") and r.err.count("\n") == 1, str(r)
    assert r.err.startswith("error: "), str(r)
    assert "Traceback" not in r.err, str(r)
    assert r.out == "", str(r)
    for needle in needles:
        assert needle in r.err, f"{needle!r} not in stderr\n{r}"


def report_line(r: Result, run_id: str) -> str:
    [line] = [ln for ln in r.lines if ln.startswith(f"{run_id} ") and "steps=" in ln]
    return line


def output_line(r: Result) -> str:
    [line] = [ln for ln in r.lines if ln.startswith("output: ")]
    return line


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


GREETER_SCRIPT = """\
usage: {input_tokens: 3, output_tokens: 2}
turns:
  - tool_calls:
      - {name: word_count, arguments: {text: "{{input}}"}}
  - content: "greeter counted {{last_tool_result}} words"
"""


def make_agent_files(root: Path) -> tuple[Path, Path]:
    """An agent YAML with its scripted model file next to it, and an agents folder holding another."""
    greeter = write(
        root / "defs" / "greeter.yaml",
        "name: greeter\n"
        "description: counts words, from a YAML file\n"
        "model: scripted:greeter-script.yaml\n"
        "tools: [agentmaestro.demo.tools:word_count]\n"
        "policy: {max_steps: 4}\n",
    )
    write(root / "defs" / "greeter-script.yaml", GREETER_SCRIPT)
    folder = root / "team"
    write(
        folder / "poet.yaml",
        "name: poet\ndescription: a poet from --agents-dir\nmodel: scripted:scripts/poet.yaml\n",
    )
    write(folder / "scripts" / "poet.yaml", "turns:\n  - content: 'roses are red: {{input}}'\n")
    return greeter, folder


# ------------------------------------------------------------------------------ the whole lifecycle


def test_cli_lifecycle(db_url: str, tmp_path: Path) -> None:
    m = Maestro(tmp_path, db_url)
    greeter, team = make_agent_files(tmp_path)

    r = ok(m("db", "upgrade"))
    assert "is at revision" in r.out

    # ---- wave 1: runs of every kind, in parallel
    demo, waited, followed, queued, to_cancel, capped, from_file, from_dir = m.many(
        ["demo"],
        ["run", "calculator", "What is (2 + 3) * 4?", "--wait"],
        ["run", "calculator", "follow me", "--follow"],
        ["run", "wordsmith", "queued for a worker"],
        ["run", "wordsmith", "to be cancelled"],
        ["run", "calculator", "capped", "--max-steps", "2", "--wait"],
        ["run", str(greeter.relative_to(tmp_path)), "one two three", "--wait"],
        ["--agents-dir", str(team), "run", "poet", "violets", "--wait"],
    )

    ok(demo)
    demo_runs = dict(re.findall(r"^(run_[0-9a-f]{24}) ([A-Z_]+) steps=", demo.out, re.MULTILINE))
    demo_done = [rid for rid, status in demo_runs.items() if status == "COMPLETED"]
    assert len(demo_done) >= 2, str(demo)
    assert "(2 + 3) * 4 = 20" in demo.out and "Your text has 6 words" in demo.out
    demo_calc, demo_words = demo_done[:2]  # calculator first: the "Next" hints use it
    assert "Next:" in demo.out and f"maestro runs events {demo_calc}" in demo.out

    ok(waited)
    waited_id = waited.run_id()
    assert f"{waited_id} started" in waited.lines
    assert " COMPLETED steps=5 tool_calls=2 " in report_line(waited, waited_id)
    assert "20" in output_line(waited)

    ok(followed)
    events = [ln.split() for ln in followed.lines if re.match(r"^\s*\d+ [A-Z_]+", ln)]
    seqs = [int(e[0]) for e in events]
    types = [e[1] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), str(followed)
    assert types[0] == "RUN_CREATED" and types[1] == "RUN_STARTED" and types[-1] == "RUN_COMPLETED"
    assert types.count("STEP_COMPLETED") == 5 and "PHASE_CHANGED" not in types  # each step implies its phase
    assert any("tool add" in ln and "'5.0'" in ln for ln in followed.lines), str(followed)
    followed_id = followed.run_id()
    assert " COMPLETED " in report_line(followed, followed_id) and "20" in output_line(followed)

    queued_id, cancel_id = ok(queued).run_id(), ok(to_cancel).run_id()
    for r, rid in ((queued, queued_id), (to_cancel, cancel_id)):
        assert r.lines == [
            f"{rid} PENDING: no worker is running: start one with `maestro worker`, or run it here with --wait"
        ], str(r)

    assert capped.code == 1 and capped.err == "", str(capped)
    capped_id = capped.run_id()
    assert " FAILED steps=2 " in report_line(capped, capped_id)
    assert "error: policy limit max_steps=2 reached" in capped.out

    ok(from_file)
    assert " COMPLETED steps=3 tool_calls=1 " in report_line(from_file, from_file.run_id())
    assert output_line(from_file) == "output: greeter counted 3 words"
    ok(from_dir)
    assert output_line(from_dir) == "output: roses are red: violets"

    # ---- wave 2: inspect, cancel, resume, fork, replay
    cancelled, resumed, shown, evs, replay, fork = m.many(
        ["runs", "cancel", cancel_id],
        ["runs", "resume", capped_id, "--max-steps", "20", "--wait"],
        ["--json", "runs", "show", waited_id, "--steps"],
        ["--json", "runs", "events", waited_id],
        ["runs", "replay", waited_id],
        ["runs", "fork", demo_calc, "--at", "4", "--wait"],
    )
    assert ok(cancelled).lines == [f"{cancel_id} CANCELLED"]

    ok(resumed)
    assert " COMPLETED steps=5 " in report_line(resumed, capped_id) and "20" in output_line(resumed)

    show = ok(shown).json()
    assert (show["run_id"], show["agent"], show["status"], show["phase"]) == (
        waited_id,
        "calculator",
        "COMPLETED",
        "TERMINATE",
    )
    assert (show["steps"], show["tool_calls"], show["input"]) == (5, 2, "What is (2 + 3) * 4?")
    assert "20" in show["output"] and show["error"] is None
    detail = show["steps_detail"]
    assert [s["step"] for s in detail] == [0, 1, 2, 3, 4]
    assert [s["kind"] for s in detail] == ["MODEL_CALL", "TOOL_CALL", "MODEL_CALL", "TOOL_CALL", "MODEL_CALL"]
    assert [s["name"] for s in detail if s["kind"] == "TOOL_CALL"] == ["add", "multiply"]

    ok(evs)
    lines = [json.loads(ln) for ln in evs.lines]  # one JSON object per line
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1)) and len(lines) == show["last_seq"]
    assert {e["run_id"] for e in lines} == {waited_id}
    assert lines[0]["type"] == "RUN_CREATED" and lines[-1]["type"] == "RUN_COMPLETED"

    assert ok(replay).lines == [f"{waited_id}: {len(lines)} events replay to the stored snapshot (status COMPLETED)"]

    ok(fork)
    fork_id = fork.run_id()
    assert fork_id != demo_calc and f"{fork_id} forked from {demo_calc} at seq 4" in fork.lines
    assert " COMPLETED steps=5 " in report_line(fork, fork_id) and "20" in output_line(fork)

    # ---- wave 3: a worker process runs the queued run, then stops gracefully on SIGTERM
    worker = m.popen("worker", "--poll-interval", "0.1")
    try:
        done = ok(m("runs", "events", queued_id, "--follow"))  # returns when the run stops
        assert done.lines[-1].split()[1] == "RUN_COMPLETED", str(done)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, err
    assert "Traceback" not in err
    assert re.search(r"worker \S+ started", err) and re.search(r"worker \S+ stopped after [1-9]\d* claim\(s\)", err), (
        err
    )

    # ---- wave 4: listing, filtering and paging
    everything, cancelled_only, page1, text_list = m.many(
        ["--json", "runs", "list", "--limit", "1000"],
        ["--json", "runs", "list", "--status", "cancelled"],
        ["--json", "runs", "list", "--agent", "wordsmith", "--limit", "2"],
        ["runs", "list", "--limit", "2"],
    )
    listing = ok(everything).json()
    runs = {r["run_id"]: r for r in listing["runs"]}
    assert listing["next"] is None
    mine = {waited_id, followed_id, queued_id, cancel_id, capped_id, fork_id}
    assert mine <= set(runs) and set(demo_runs) <= set(runs)
    demo_workflow_nodes = 3  # the demo's tidy-and-report workflow runs each node as a child run
    assert len(runs) == len(demo_runs) + demo_workflow_nodes + 8  # + the runs from a YAML file and from --agents-dir
    unfinished = {
        rid: r["status"] for rid, r in runs.items() if r["status"] != "COMPLETED" and not r.get("parent_run_id")
    }
    assert unfinished == {cancel_id: "CANCELLED", **{rid: st for rid, st in demo_runs.items() if st != "COMPLETED"}}
    ids = [r["run_id"] for r in listing["runs"]]
    assert ids == sorted(ids, reverse=True)  # newest first (run ids sort by creation time)

    assert [r["run_id"] for r in ok(cancelled_only).json()["runs"]] == [cancel_id]

    words_runs = [r["run_id"] for r in listing["runs"] if r["agent"] == "wordsmith"]
    assert len(words_runs) == 4  # demo, queued, to be cancelled, and the demo workflow's node
    first = ok(page1).json()
    assert [r["run_id"] for r in first["runs"]] == words_runs[:2] and first["next"] == words_runs[1]
    second = ok(m("--json", "runs", "list", "--agent", "wordsmith", "--limit", "2", "--before", first["next"])).json()
    assert [r["run_id"] for r in second["runs"]] == words_runs[2:4] and second["next"] == words_runs[3]
    third = ok(m("--json", "runs", "list", "--agent", "wordsmith", "--limit", "2", "--before", second["next"])).json()
    assert third["runs"] == [] and third["next"] is None

    ok(text_list)
    assert listing["runs"][0]["run_id"] in text_list.out
    assert f"next page: maestro runs list --before {listing['runs'][1]['run_id']}" in text_list.out

    # ---- wave 5: bad input against this database: one line on stderr, nothing stored changes
    unknown_run, bad_fork, resume_done, cancel_done = m.many(
        ["runs", "show", "run_000000000000000000000000"],
        ["runs", "fork", waited_id, "--at", "999"],
        ["runs", "resume", waited_id],
        ["runs", "cancel", waited_id],
    )
    one_line_error(unknown_run, "run_000000000000000000000000", "not found")
    one_line_error(bad_fork, "999")
    one_line_error(resume_done, "COMPLETED")
    one_line_error(cancel_done, "COMPLETED")
    assert cancel_done.code == 1
    assert m.snapshot() == everything.out

    # ---- with --json, a resumed run left to a worker is printed as JSON, like run and fork
    again = ok(m("--json", "runs", "resume", cancel_id)).json()
    assert (again["run_id"], again["status"]) == (cancel_id, "PENDING")


# ------------------------------------------------------------------- commands that need no database


def test_states_and_agents(tmp_path: Path) -> None:
    greeter, team = make_agent_files(tmp_path)
    project = tmp_path / "project"
    write(project / "agents" / "local.yaml", "name: local-one\nmodel: scripted:calculator\n")
    m = Maestro(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}")
    states, mermaid, listed, listed_json, show, show_file, with_dir = m.many(
        ["states"],
        ["states", "--mermaid"],
        ["agents", "list"],
        ["--json", "agents", "list"],
        ["agents", "show", "calculator"],
        ["agents", "show", str(greeter)],
        ["--agents-dir", str(team), "--json", "agents", "list"],
    )
    in_project = Maestro(project, None)("--json", "agents", "list")  # ./agents is picked up

    ok(states)
    assert "Run status transitions" in states.out and "Decision table" in states.out
    assert "cannot_tell     ask         run" in states.out  # the recovery rule for uncertain calls
    for status in ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"):
        assert status in states.out
    ok(mermaid)
    assert mermaid.lines[0].strip().startswith("stateDiagram") and "PENDING --> RUNNING" in mermaid.out

    ok(listed)
    assert "calculator" in listed.out and "wordsmith" in listed.out and "scripted:calculator" in listed.out
    builtins = {a["name"] for a in ok(listed_json).json()}
    assert {"calculator", "wordsmith"} <= builtins

    spec = ok(show).json()
    assert spec["name"] == "calculator" and spec["model"] == "scripted:calculator"
    assert [t["name"] for t in spec["tools"]] == ["add", "multiply"] and spec["policy"]["max_steps"] == 10
    greeter_spec = ok(show_file).json()
    assert greeter_spec["name"] == "greeter" and greeter_spec["policy"]["max_steps"] == 4
    assert greeter_spec["model"] == f"scripted:{(greeter.parent / 'greeter-script.yaml').resolve()}"

    assert {a["name"] for a in ok(with_dir).json()} == builtins | {"poet"}
    assert {a["name"] for a in ok(in_project).json()} == builtins | {"local-one"}
    assert not (tmp_path / ".maestro").exists() and not (tmp_path / "unused.db").exists()


def test_bad_input_fails_with_one_line_and_changes_nothing(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'maestro.db'}"
    m = Maestro(tmp_path, db)
    ok(m("demo"))
    before = m.snapshot()

    bad = tmp_path / "bad"
    invalid = write(bad / "invalid.yaml", "name: [unclosed\nmodel: scripted:x\n")
    unknown_field = write(bad / "unknown.yaml", "name: a\nmodel: scripted:calculator\ncolour: red\n")
    no_model = write(bad / "nomodel.yaml", "name: a\ninstructions: hi\n")
    provider = write(bad / "provider.yaml", "name: a\nmodel: nosuch:x\n")
    no_script = write(bad / "noscript.yaml", "name: a\nmodel: scripted:missing-script.yaml\n")

    raw = Maestro(tmp_path, None)
    results = [
        *m.many(
            ["frobnicate"],
            ["run"],
            ["runs", "list", "--limit", "0"],
            ["run", str(unknown_field), "x", "--wait"],
            ["run", str(no_model), "x", "--wait"],
            ["run", str(provider), "x", "--wait"],
            ["run", str(no_script), "x", "--wait"],
            ["run", str(bad / "absent.yaml"), "x"],
            ["--agents-dir", str(tmp_path / "nowhere"), "run", "calculator", "x"],
            ["runs", "resume", "run_000000000000000000000000", "--max-tokens", "-5"],
            ["run", "calculator", "x", "--max-steps", "-1"],
            ["run", "nosuch", "x"],
            ["runs", "list", "--status", "bogus"],
            ["runs", "events", "run_000000000000000000000000"],
            ["run", str(invalid), "x"],
        ),
        *raw.many(
            ["--database-url", "foo", "runs", "list"],
            ["--database-url", "sqlite:///:memory:", "runs", "list"],
        ),
    ]
    (
        unknown_cmd,
        missing_arg,
        zero_limit,
        unknown_fld,
        missing_model,
        bad_provider,
        missing_script,
        absent_file,
        absent_dir,
        negative_tokens,
        negative_steps,
        unknown_agent,
        bad_status,
        unknown_run,
        invalid_yaml,
        not_a_url,
        in_memory,
    ) = results
    one_line_error(unknown_cmd, "frobnicate")
    one_line_error(missing_arg, "Missing argument")
    one_line_error(zero_limit, "--limit")
    one_line_error(unknown_fld, "unknown field", "colour")
    one_line_error(missing_model, "missing required field 'model'")
    one_line_error(bad_provider, "unknown model provider 'nosuch'")
    one_line_error(missing_script, "missing-script.yaml")
    one_line_error(absent_file, "does not exist")
    one_line_error(absent_dir, "does not exist")
    one_line_error(negative_tokens, "--max-tokens")
    one_line_error(negative_steps, "--max-steps")
    one_line_error(unknown_agent, "unknown agent 'nosuch'", "calculator")
    one_line_error(bad_status, "BOGUS", "PENDING")
    one_line_error(unknown_run, "run_000000000000000000000000", "not found")
    one_line_error(not_a_url, "'foo'")
    one_line_error(in_memory, "in-memory")
    # invalid YAML: an error, no traceback (that it is one line is checked by the xfail test below)
    assert invalid_yaml.code != 0 and invalid_yaml.err.startswith("error: ") and "not valid YAML" in invalid_yaml.err
    assert "Traceback" not in invalid_yaml.err
    assert m.snapshot() == before
    assert not (tmp_path / ".maestro").exists()


def test_invalid_yaml_error_is_one_line(tmp_path: Path) -> None:
    invalid = write(tmp_path / "invalid.yaml", "name: [unclosed\nmodel: scripted:x\n")
    one_line_error(Maestro(tmp_path, f"sqlite:///{tmp_path / 'm.db'}")("run", str(invalid), "x"), "not valid YAML")
