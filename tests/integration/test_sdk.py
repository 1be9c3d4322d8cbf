"""The Python SDK (``Orchestrator``) end to end on a real database (SQLite file and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentmaestro import (
    Agent,
    ConfigError,
    EventType,
    HookEvent,
    NotFoundError,
    Orchestrator,
    RiskLevel,
    RunReport,
    RunStatus,
    ScriptedModel,
    StepKind,
    StrictPolicy,
    tool,
)
from agentmaestro.core.events import fold
from agentmaestro.engine.worker import WorkerConfig

HOOKS = ("STATE_ENTER", "TOOL_CALL", "POLICY_VIOLATION", "EXECUTION_COMPLETE")
FAST = WorkerConfig(poll_interval_s=0.05, transient_backoff_s=0.01)

TOOL_LOG: list[tuple[int, int]] = []


@tool(risk=RiskLevel.SAFE, idempotent=True)
def add(a: int, b: int) -> int:
    """Add two integers."""
    TOOL_LOG.append((a, b))
    return a + b


def calc_agent(name: str = "calc", *, latency_s: float = 0.0) -> Agent:
    """Model: add(2, 3), then add(5, 10), then a final answer quoting the last tool result."""
    script = {
        "latency_s": latency_s,
        "usage": {"input_tokens": 7, "output_tokens": 3},
        "turns": [
            {"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]},
            {"tool_calls": [{"name": "add", "arguments": {"a": 5, "b": 10}}]},
            {"content": "{{input}} = {{last_tool_result}}"},
        ],
    }
    return Agent(name=name, model=ScriptedModel(script), instructions="Add things.", tools=[add])


def slow_agent(name: str = "slow") -> Agent:
    """Twenty tool round trips, 0.05 s per model call: long enough to cancel mid-run."""
    turns: list[dict[str, Any]] = [{"tool_calls": [{"name": "add", "arguments": {"a": i, "b": 1}}]} for i in range(20)]
    turns.append({"content": "done"})
    return Agent(name=name, model=ScriptedModel({"latency_s": 0.05, "turns": turns}), tools=[add])


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def orch(db_url: str) -> Iterator[Orchestrator]:
    with Orchestrator(database_url=db_url, config=FAST) as o:
        yield o


def assert_calc_report(report: RunReport, task: str) -> None:
    assert report.status is RunStatus.COMPLETED, report.error
    assert report.agent == "calc"
    assert report.run_id.startswith("run_")
    assert report.output == f"{task} = 15"
    assert report.error is None
    assert report.steps == 5  # 3 model calls + 2 tool calls
    assert report.tool_calls == 2
    assert report.tokens == 3 * (7 + 3)
    assert report.cost_usd == 0.0  # scripted models are free
    assert 0.0 <= report.duration_s < 30
    history = report.state_history
    assert history[0] == "PENDING/INIT"
    assert "RUNNING/PLAN" in history and "RUNNING/EXECUTE" in history
    assert history.index("RUNNING/PLAN") < history.index("RUNNING/EXECUTE")
    assert history[-1] == "COMPLETED/TERMINATE"


# ----------------------------------------------------------------------------------- run / report


def test_run_returns_a_full_report_and_records_everything(orch: Orchestrator) -> None:
    report = orch.run(calc_agent(), "2+3+10", policy=StrictPolicy(max_steps=10))
    assert_calc_report(report, "2+3+10")
    assert report.to_json()["status"] == "COMPLETED"

    events = orch.events(report.run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type is EventType.RUN_CREATED and events[-1].type is EventType.RUN_COMPLETED
    assert events[0].payload["policy"]["max_steps"] == 10
    assert fold(events) == orch.get_run(report.run_id).state
    assert [e.seq for e in orch.events(report.run_id, after_seq=3)] == list(range(4, len(events) + 1))

    steps = orch.steps(report.run_id)
    assert [s.step_index for s in steps] == [0, 1, 2, 3, 4]
    assert [s.kind for s in steps] == [StepKind.MODEL_CALL, StepKind.TOOL_CALL] * 2 + [StepKind.MODEL_CALL]
    assert [s.name for s in steps if s.kind is StepKind.TOOL_CALL] == ["add", "add"]
    assert sum(s.input_tokens + s.output_tokens for s in steps) == report.tokens

    assert orch.report(report.run_id) == report
    with pytest.raises(NotFoundError):
        orch.events("run_doesnotexist")
    with pytest.raises(NotFoundError):
        orch.steps("run_doesnotexist")


@pytest.mark.anyio
async def test_run_async(db_url: str) -> None:
    async with Orchestrator(database_url=db_url, config=FAST) as orch:
        report = await orch.run_async(calc_agent(), "async")
        assert_calc_report(report, "async")
        run_id = await orch.start_async(calc_agent(), "started")
        report = await orch.wait_async(run_id, timeout=30)
        assert_calc_report(report, "started")
    with pytest.raises(ConfigError, match="closed"):
        await orch.run_async(calc_agent(), "after close")


def test_start_and_wait(orch: Orchestrator) -> None:
    run_id = orch.start(calc_agent(), "bg")
    assert isinstance(run_id, str)
    report = orch.wait(run_id, timeout=30)
    assert report.run_id == run_id
    assert_calc_report(report, "bg")


def test_two_runs_concurrently_from_threads(orch: Orchestrator) -> None:
    reports: dict[str, RunReport] = {}
    errors: list[BaseException] = []

    def go(task: str) -> None:
        try:
            reports[task] = orch.run(calc_agent(latency_s=0.05), task)
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(f"t{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert set(reports) == {"t0", "t1"}
    for task, report in reports.items():
        assert_calc_report(report, task)
    assert reports["t0"].run_id != reports["t1"].run_id


def test_bad_arguments_are_config_errors(orch: Orchestrator) -> None:
    with pytest.raises(ConfigError, match="task must be a string"):
        orch.run(calc_agent(), 42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="StrictPolicy"):
        orch.run(calc_agent(), "x", policy={"max_steps": 3})  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        orch.run(object(), "x")


# ------------------------------------------------------------------------------------------ hooks


def test_hooks_fire_with_the_right_events(orch: Orchestrator) -> None:
    seen: dict[str, list[HookEvent]] = {
        "STATE_ENTER": [],
        "TOOL_CALL": [],
        "POLICY_VIOLATION": [],
        "EXECUTION_COMPLETE": [],
    }

    def on_state(ev: HookEvent) -> None:
        seen["STATE_ENTER"].append(ev)

    async def on_tool(ev: HookEvent) -> None:  # async hooks are awaited
        seen["TOOL_CALL"].append(ev)

    async def on_violation(ev: HookEvent) -> None:
        seen["POLICY_VIOLATION"].append(ev)

    def on_complete(ev: HookEvent) -> None:
        seen["EXECUTION_COMPLETE"].append(ev)

    assert orch.on("STATE_ENTER", on_state) is on_state
    orch.on("TOOL_CALL", on_tool)
    orch.on("POLICY_VIOLATION", on_violation)
    orch.on("EXECUTION_COMPLETE", on_complete)
    with pytest.raises(ConfigError, match="unknown hook 'NOPE'"):
        orch.on("NOPE", on_state)

    ok = orch.run(calc_agent(), "hooked")
    assert ok.status is RunStatus.COMPLETED
    wait_until(lambda: len(seen["EXECUTION_COMPLETE"]) == 1)

    for name, events in seen.items():
        for ev in events:
            assert ev.hook == name and ev.run_id == ok.run_id and ev.agent == "calc"

    state_types = [ev.event.type for ev in seen["STATE_ENTER"]]
    assert state_types[0] is EventType.RUN_STARTED and state_types[-1] is EventType.RUN_COMPLETED
    assert {ev.event.type for ev in seen["STATE_ENTER"]} <= {
        EventType.RUN_STARTED,
        EventType.PHASE_CHANGED,
        EventType.STEP_COMPLETED,
        EventType.RUN_COMPLETED,
    }
    # The log stores no PHASE_CHANGED a step implies (a model call plans, a tool call executes): the hook
    # fires on the step event and names the phase entered.
    phases = [ev.phase.value for ev in seen["STATE_ENTER"] if ev.phase is not None]
    assert phases[:2] == ["PLAN", "EXECUTE"]
    assert all(ev.phase is None for ev in seen["STATE_ENTER"] if ev.event.type is EventType.RUN_STARTED)

    tool_events = [ev.event for ev in seen["TOOL_CALL"]]
    assert [e.type for e in tool_events] == [EventType.STEP_COMPLETED] * 2
    assert [(e.payload["name"], e.payload["arguments"], e.payload["result"]) for e in tool_events] == [
        ("add", {"a": 2, "b": 3}, "5"),
        ("add", {"a": 5, "b": 10}, "15"),
    ]
    assert [e.step for e in tool_events] == [1, 3]
    assert seen["POLICY_VIOLATION"] == []
    [done] = seen["EXECUTION_COMPLETE"]
    assert done.event.type is EventType.RUN_COMPLETED and done.event.payload["output"] == "hooked = 15"

    # a run stopped by its policy: POLICY_VIOLATION, and EXECUTION_COMPLETE exactly once
    bad = orch.run(calc_agent(), "limited", policy=StrictPolicy(max_steps=2))
    assert bad.status is RunStatus.FAILED
    wait_until(lambda: len(seen["EXECUTION_COMPLETE"]) == 2)
    [violation] = seen["POLICY_VIOLATION"]
    assert violation.run_id == bad.run_id
    assert violation.event.type is EventType.POLICY_VIOLATION
    assert violation.event.payload["limit"] == "max_steps" and violation.event.payload["limit_value"] == 2
    last = seen["EXECUTION_COMPLETE"][-1]
    assert last.run_id == bad.run_id and last.event.type is EventType.POLICY_VIOLATION
    assert any(ev.run_id == bad.run_id and ev.event.type is EventType.POLICY_VIOLATION for ev in seen["STATE_ENTER"])


def test_a_broken_hook_breaks_neither_the_run_nor_the_other_hooks(orch: Orchestrator) -> None:
    steps: list[int | None] = []
    tools: list[str] = []
    done: list[str] = []

    def broken(ev: HookEvent) -> None:
        raise RuntimeError("a broken hook must not break the run")

    orch.on("STEP_COMPLETED", broken)  # any event type name is a hook too
    orch.on("STEP_COMPLETED", lambda ev: steps.append(ev.event.step))
    orch.on("TOOL_CALL", lambda ev: tools.append(ev.event.payload["name"]))
    orch.on("EXECUTION_COMPLETE", broken)
    orch.on("EXECUTION_COMPLETE", lambda ev: done.append(ev.run_id))
    report = orch.run(calc_agent(), "robust")
    assert report.status is RunStatus.COMPLETED and report.output == "robust = 15"
    wait_until(lambda: done == [report.run_id])
    assert steps == [0, 1, 2, 3, 4]
    assert tools == ["add", "add"]


def test_blocking_calls_from_a_hook_are_refused(orch: Orchestrator) -> None:
    problems: list[str] = []

    def nested(ev: HookEvent) -> None:
        try:
            orch.report(ev.run_id)
        except RuntimeError as exc:
            problems.append(str(exc))

    orch.on("EXECUTION_COMPLETE", nested)
    report = orch.run(calc_agent(), "nested")
    assert report.status is RunStatus.COMPLETED
    wait_until(lambda: len(problems) == 1)
    assert "use the async ones" in problems[0]


# --------------------------------------------------------------------------- invoke-able objects


class Echo:
    """Anything with invoke(task) is an agent."""

    name = "echo"

    def __init__(self) -> None:
        self.tasks: list[str] = []

    def invoke(self, task: str) -> str:
        self.tasks.append(task)
        return f"echo: {task}"


class AsyncShout:
    """Anything with async ainvoke(task) is an agent; a result's .content is the answer."""

    class _Msg:
        def __init__(self, content: str) -> None:
            self.content = content

    async def ainvoke(self, task: str) -> AsyncShout._Msg:
        return self._Msg(task.upper())


class Exploding:
    max_attempts = 2  # read by the adapter: escalate to a human after two failed attempts
    retry_backoff_s = 0.0

    def invoke(self, task: str) -> str:
        raise ValueError(f"cannot handle {task!r}")


def test_invoke_objects_run_as_single_step_agents(orch: Orchestrator) -> None:
    echo = Echo()
    report = orch.run(echo, "hello")
    assert report.status is RunStatus.COMPLETED
    assert (report.agent, report.output, report.steps, report.tool_calls) == ("echo", "echo: hello", 1, 0)
    assert echo.tasks == ["hello"]
    assert report.state_history[0] == "PENDING/INIT" and report.state_history[-1] == "COMPLETED/TERMINATE"
    [step] = orch.steps(report.run_id)
    assert step.kind is StepKind.MODEL_CALL and step.name == "invoke:echo"

    shout = orch.run(AsyncShout(), "quiet please")
    assert shout.status is RunStatus.COMPLETED
    assert (shout.agent, shout.output, shout.steps) == ("AsyncShout", "QUIET PLEASE", 1)

    boom = orch.run(Exploding(), "this")
    assert boom.status is RunStatus.WAITING_FOR_HUMAN and boom.output is None
    [req] = orch.human_requests()
    assert "ValueError" in req["question"] and "cannot handle 'this'" in req["question"]
    orch.resolve(req["request_id"], "abandon", instructions="not fixable")
    boom = orch.wait(boom.run_id)
    assert boom.status is RunStatus.FAILED
    assert (boom.error or "").startswith(f"abandoned by {orch.actor}: not fixable (last error:") and "ValueError" in (
        boom.error or ""
    )
    assert boom.state_history[-1] == "FAILED/TERMINATE"
    assert orch.events(boom.run_id)[-1].type is EventType.RUN_FAILED


# ------------------------------------------------------------------------- policy, cancel, resume


def test_policy_violation_report_then_resume_and_fork(orch: Orchestrator) -> None:
    report = orch.run(calc_agent(), "capped", policy=StrictPolicy(max_steps=3))
    assert report.status is RunStatus.FAILED
    assert report.steps == 3 and report.output is None
    assert report.error is not None and "max_steps=3" in report.error
    assert report.state_history[-1] == "FAILED/TERMINATE"
    events = orch.events(report.run_id)
    assert events[-1].type is EventType.POLICY_VIOLATION

    resumed = orch.resume(report.run_id, policy={"max_steps": 20})
    assert resumed.run_id == report.run_id
    assert resumed.status is RunStatus.PENDING
    final = orch.wait(report.run_id, timeout=30)
    assert final.status is RunStatus.COMPLETED and final.output == "capped = 15"
    assert final.steps == 5
    all_events = orch.events(report.run_id)
    assert EventType.RUN_RESUMED in [e.type for e in all_events]
    assert fold(all_events) == orch.get_run(report.run_id).state
    assert [s.step_index for s in orch.steps(report.run_id)] == [0, 1, 2, 3, 4]

    # fork right after the first tool call (step 1) completed: the fork redoes steps 2..4 only.
    # The history up to there carries the original max_steps=3, so the fork raises it too.
    first_tool = next(e for e in all_events if e.type is EventType.STEP_COMPLETED and e.step == 1)
    calls_before = len(TOOL_LOG)
    fork = orch.fork(report.run_id, at_seq=first_tool.seq, policy={"max_steps": 20})
    assert fork.run_id != report.run_id and fork.status is RunStatus.PENDING and fork.state.steps == 2
    forked = orch.wait(fork.run_id, timeout=30)
    assert forked.status is RunStatus.COMPLETED and forked.output == "capped = 15" and forked.steps == 5
    assert TOOL_LOG[calls_before:] == [(5, 10)]
    fevents = orch.events(fork.run_id)
    assert EventType.RUN_FORKED in [e.type for e in fevents]
    assert fold(fevents) == orch.get_run(fork.run_id).state

    with pytest.raises(Exception, match="only FAILED or CANCELLED"):
        orch.resume(fork.run_id)
    with pytest.raises(Exception, match="999"):
        orch.fork(report.run_id, at_seq=999)
    with pytest.raises(NotFoundError):
        orch.resume("run_doesnotexist")


def test_cancel_running_and_finished_runs(orch: Orchestrator) -> None:
    run_id = orch.start(slow_agent(), "long job")
    wait_until(lambda: orch.get_run(run_id).state.steps >= 2)
    orch.cancel(run_id, reason="changed my mind")
    report = orch.wait(run_id, timeout=30)
    assert report.status is RunStatus.CANCELLED
    assert "changed my mind" in (report.error or "")
    assert report.state_history[-1].startswith("CANCELLED/")
    assert 2 <= report.steps < 41
    assert fold(orch.events(run_id)) == orch.get_run(run_id).state
    with pytest.raises(Exception, match="already CANCELLED"):
        orch.cancel(run_id)

    # a cancelled run can be resumed and finishes
    orch.resume(run_id)
    assert orch.wait(run_id, timeout=60).status is RunStatus.COMPLETED


# ----------------------------------------------------------------------- database and workers


def test_default_database_lives_under_maestro_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAESTRO_DATABASE_URL", raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("MAESTRO_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    with Orchestrator(config=FAST) as orch:
        report = orch.run(calc_agent(), "home")
        assert_calc_report(report, "home")
    assert (home / "maestro.db").is_file()
    assert not (tmp_path / ".maestro").exists()
    with Orchestrator(config=FAST) as again:  # the same file: the run is still there
        assert again.report(report.run_id).output == "home = 15"


def test_enqueue_only_then_a_second_orchestrator_runs_it(db_url: str) -> None:
    with Orchestrator(database_url=db_url, worker=False) as producer:
        run_id = producer.start(calc_agent(), "queued")
        time.sleep(0.3)
        assert producer.get_run(run_id).status is RunStatus.PENDING
        with pytest.raises(TimeoutError, match="still PENDING"):
            producer.wait(run_id, timeout=0.3)

    with Orchestrator(database_url=db_url, config=FAST) as consumer:
        consumer.register(calc_agent())  # registering is enough: its worker claims the queued run
        report = consumer.wait(run_id, timeout=30)
        assert_calc_report(report, "queued")
