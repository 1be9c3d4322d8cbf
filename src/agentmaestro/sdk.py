"""The Python SDK: ``Orchestrator`` runs agents durably, embedded or against a shared database.

Everything runs on one event loop that the orchestrator owns (in a background thread), so the
blocking methods (``run``) and the async ones (``run_async``) can be mixed freely.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from agentmaestro.actor import Actor, local_actor
from agentmaestro.agents import Agent, AgentRegistry, adapt, check_usable
from agentmaestro.core.events import Event, RunState, apply_event, implied_phase
from agentmaestro.core.gate import GatePolicy
from agentmaestro.core.policy import StrictPolicy
from agentmaestro.core.states import EventType, Phase, RunStatus, StepKind
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.errors import ConfigError
from agentmaestro.service import approvals as decisions
from agentmaestro.service import runs
from agentmaestro.store.base import Store
from agentmaestro.store.records import RunRecord, StepRow
from agentmaestro.store.schema import DEFAULT_WORKSPACE
from agentmaestro.workflows.spec import Workflow, WorkflowRegistry, load_folder_agents, load_workflow

log = logging.getLogger("agentmaestro.sdk")

T = TypeVar("T")

HookName = Literal["STATE_ENTER", "TOOL_CALL", "POLICY_VIOLATION", "EXECUTION_COMPLETE"]
HOOK_NAMES: frozenset[str] = frozenset({"STATE_ENTER", "TOOL_CALL", "POLICY_VIOLATION", "EXECUTION_COMPLETE"})
_TERMINAL_EVENTS = frozenset(
    {EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELLED, EventType.POLICY_VIOLATION}
)


@dataclass(frozen=True, kw_only=True)
class HookEvent:
    """What a hook receives."""

    hook: str
    """The hook name (``STATE_ENTER``, ``TOOL_CALL``, ``POLICY_VIOLATION``, ``EXECUTION_COMPLETE``)."""
    run_id: str
    """The run."""
    agent: str
    """The agent."""
    event: Event
    """The underlying event."""
    phase: Phase | None = None
    """For ``STATE_ENTER``: the lifecycle phase the event moved the run into (``PHASE_CHANGED``, or a step event
    that implies it: a model call plans, a tool call executes); None for the status changes."""


@dataclass(frozen=True, kw_only=True)
class RunReport:
    """The outcome of a run (or its state so far, if it is waiting)."""

    run_id: str
    """The run."""
    agent: str
    """The agent's name."""
    status: RunStatus
    """Final (or current) status."""
    output: str | None
    """The answer, when COMPLETED."""
    error: str | None
    """Why it FAILED or was CANCELLED."""
    steps: int
    """Steps taken."""
    tokens: int
    """Input + output tokens."""
    tool_calls: int
    """Tool calls made."""
    cost_usd: float
    """Model spend."""
    duration_s: float
    """From creation to the end (or to now, if still going)."""
    state_history: list[str] = field(default_factory=list)
    """Every status/phase the run entered, in order (e.g. ``RUNNING/PLAN``)."""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "run_id": self.run_id,
            "agent": self.agent,
            "status": self.status.value,
            "output": self.output,
            "error": self.error,
            "steps": self.steps,
            "tokens": self.tokens,
            "tool_calls": self.tool_calls,
            "cost_usd": self.cost_usd,
            "duration_s": self.duration_s,
            "state_history": self.state_history,
        }


def state_history(events: list[Event]) -> list[str]:
    """The sequence of ``STATUS/PHASE`` labels a run went through, folded from its events."""
    state = RunState()
    out: list[str] = []
    for ev in events:
        state = apply_event(state, ev)
        label = f"{state.status.value if state.status else '?'}/{state.phase.value}"
        if not out or out[-1] != label:
            out.append(label)
    return out


async def build_report(store: Store, rec: RunRecord) -> RunReport:
    """Assemble a RunReport for a stored run."""
    events = await store.events.read(rec.run_id)
    end = rec.finished_at or rec.updated_at
    return RunReport(
        run_id=rec.run_id,
        agent=rec.agent_name,
        status=rec.status,
        output=rec.state.output,
        error=rec.state.error
        or (str(rec.state.last_failure.get("error")) if rec.status.waiting and rec.state.last_failure else None),
        steps=rec.state.steps,
        tokens=rec.state.tokens,
        tool_calls=rec.state.tool_calls,
        cost_usd=round(rec.state.cost_usd, 8),
        duration_s=round(max(0.0, end - rec.created_at), 6),
        state_history=state_history(events),
    )


Hook = Callable[[HookEvent], Awaitable[None] | None]


def _settled(status: RunStatus) -> bool:
    """A run ``wait`` returns on: ended, or waiting for a person or its sub-runs."""
    return status.terminal or status.waiting


class Orchestrator:
    """Runs agents as durable, governed runs.

    Args:
        database_url: ``sqlite:///PATH`` or ``postgresql://...``; default ``MAESTRO_DATABASE_URL`` or
            an SQLite file under ``./.maestro/``.
        workspace: Workspace the runs belong to.
        worker: Start an in-process worker that executes runs (set False to only enqueue runs
            for separate ``maestro worker`` processes).
        config: Worker settings (concurrency, lease length, ...).
        actor: Who starts this orchestrator's runs, as runs record it (usage by user); default ``sdk:<login>``.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        workspace: str = DEFAULT_WORKSPACE,
        worker: bool = True,
        config: WorkerConfig | None = None,
        actor: str | None = None,
    ) -> None:
        self.workspace = workspace
        self.actor = actor or local_actor("sdk")
        self._actor = Actor.local("sdk", workspace, self.actor)
        self.registry = AgentRegistry()
        self.workflows = WorkflowRegistry()
        self._hooks: dict[str, list[Hook]] = {}
        self._hook_phases: dict[str, Phase] = {}
        self._with_worker = worker
        self._config = config or WorkerConfig()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="maestro-orchestrator", daemon=True)
        self._thread.start()
        self._worker: Worker | None = None
        self._worker_task: asyncio.Future[None] | None = None
        self._stored_agents: set[str] = set()
        self._usable_models: set[str] = set()
        self._closed = False
        try:
            self.store: Store = self._call(self._open(database_url))
        except BaseException:
            self._stop_loop()
            raise

    async def _open(self, url: str | None) -> Store:
        store = await asyncio.to_thread(Store.open, url)
        await store.workspaces.ensure(self.workspace)
        return store

    # ------------------------------------------------------------------------ loop plumbing

    def _submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        if self._closed:
            coro.close()
            raise ConfigError("this Orchestrator is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("blocking Orchestrator methods cannot be called from its own hooks; use the async ones")
        return self._submit(coro).result()

    async def _acall(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(self._submit(coro))

    # ------------------------------------------------------------------------------- hooks

    def on(self, hook: HookName | str, fn: Hook) -> Hook:
        """Register ``fn(HookEvent)`` for a hook or an event type.

        Hooks: ``STATE_ENTER``, ``TOOL_CALL``, ``POLICY_VIOLATION``, ``EXECUTION_COMPLETE``, or any event
        type name (e.g. ``STEP_COMPLETED``). ``fn`` may be async.
        """
        if hook not in HOOK_NAMES and hook not in EventType.__members__:
            known = sorted(HOOK_NAMES | set(EventType.__members__))
            raise ConfigError(f"unknown hook {hook!r}; known: {', '.join(known)}")
        self._hooks.setdefault(hook, []).append(fn)
        return fn

    def _entered_phase(self, run_id: str, ev: Event) -> Phase | None:
        """The phase ``ev`` moves its run into, if another than the one it was in (tracked per running run)."""
        if ev.type in _TERMINAL_EVENTS:
            self._hook_phases.pop(run_id, None)
            return None
        if ev.type is EventType.PHASE_CHANGED:
            phase: Phase | None = Phase(ev.payload["to"])
        else:
            phase = implied_phase(ev.type, ev.payload)
        if phase is None or self._hook_phases.get(run_id, Phase.INIT) is phase:
            return None
        self._hook_phases[run_id] = phase
        return phase

    async def _dispatch(self, run_id: str, agent: str, events: list[Event]) -> None:
        if not self._hooks:
            return
        for ev in events:
            names = [ev.type.value]
            phase = self._entered_phase(run_id, ev)
            if phase is not None:
                names.append("STATE_ENTER")
            elif ev.type in (
                EventType.RUN_STARTED,
                EventType.PHASE_CHANGED,
                EventType.APPROVAL_REQUESTED,
                EventType.HUMAN_INPUT_REQUESTED,
                EventType.CHILDREN_SPAWNED,
                EventType.RUN_COMPLETED,
                EventType.RUN_FAILED,
                EventType.RUN_CANCELLED,
                EventType.POLICY_VIOLATION,
            ):
                names.append("STATE_ENTER")
            if ev.type is EventType.STEP_COMPLETED and ev.payload.get("kind") == StepKind.TOOL_CALL.value:
                names.append("TOOL_CALL")
            if ev.type in (EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELLED):
                names.append("EXECUTION_COMPLETE")
            if ev.type is EventType.POLICY_VIOLATION:
                names.append("EXECUTION_COMPLETE")
            for name in names:
                for fn in self._hooks.get(name, ()):
                    try:
                        entered = phase if name == "STATE_ENTER" else None
                        res = fn(HookEvent(hook=name, run_id=run_id, agent=agent, event=ev, phase=entered))
                        if inspect.isawaitable(res):
                            await res
                    except Exception:  # one broken hook must not silence the others or the run
                        log.exception("hook %s for %s failed", getattr(fn, "__name__", fn), name)

    # ------------------------------------------------------------------------------ agents

    def register(self, agent: Agent | Any, *, name: str | None = None) -> Agent:
        """Make an agent (or an ``invoke``-able object) runnable by this orchestrator's worker."""
        a = adapt(agent, name=name)
        self.registry.register(a)
        if self._with_worker and self._worker is None and not self._closed:
            # The worker claims runs of registered agents, including runs queued by other processes.
            self._submit(self._ensure_worker())
        return a

    async def _ensure_worker(self) -> None:
        if not self._with_worker or self._worker is not None:
            return
        self._worker = Worker(
            self.store, self.registry, config=self._config, listeners=[self._dispatch], workflows=self.workflows
        )
        self._worker_task = asyncio.ensure_future(self._worker.run())

    # -------------------------------------------------------------------------------- runs

    async def _start(self, agent: Agent | Any, task: str, policy: StrictPolicy | None, parent: str | None) -> str:
        if not isinstance(task, str):
            raise ConfigError(f"task must be a string, got {type(task).__name__}")
        a = self.register(agent)
        if self._with_worker and a.model_name not in self._usable_models:
            # This process runs it: a model it cannot use fails here (ModelUnavailableError). Checked once
            # per model: a check may build a client or ask a local server.
            await check_usable([a])
            self._usable_models.add(a.model_name)
        if a.name not in self._stored_agents:
            await self.store.agents.put(self.workspace, a.name, a.spec())
            self._stored_agents.add(a.name)
        if policy is not None and not isinstance(policy, StrictPolicy):
            raise ConfigError("policy must be a StrictPolicy")
        start = runs.StartRun.of_agent(a, task, policy=policy, parent_run_id=parent)
        rec = await runs.start_run(self.store, start, self._actor)
        await self._ensure_worker()
        return rec.run_id

    async def _wait(self, run_id: str, timeout: float | None) -> RunReport:
        rec = await self.store.runs.wait_for_status(run_id, _settled, timeout, workspace_id=self.workspace)
        return await build_report(self.store, rec)

    async def _run(self, agent: Any, task: str, policy: StrictPolicy | None, timeout: float | None) -> RunReport:
        run_id = await self._start(agent, task, policy, None)
        return await self._wait(run_id, timeout)

    def run(
        self, agent: Agent | Any, task: str, *, policy: StrictPolicy | None = None, timeout: float | None = None
    ) -> RunReport:
        """Run ``agent`` on ``task`` and block until it finishes (or waits for a human)."""
        return self._call(self._run(agent, task, policy, timeout))

    async def run_async(
        self, agent: Agent | Any, task: str, *, policy: StrictPolicy | None = None, timeout: float | None = None
    ) -> RunReport:
        """Async twin of :meth:`run`."""
        return await self._acall(self._run(agent, task, policy, timeout))

    def run_workflow(
        self,
        workflow: Workflow | str | Path,
        task: str,
        *,
        agents: Iterable[Agent | Any] = (),
        timeout: float | None = None,
    ) -> RunReport:
        """Run a workflow (a :class:`Workflow` or a YAML file, whose folder's ``agents/`` are loaded too).

        Its nodes run as child runs of the agents in ``agents`` and those already registered.
        Blocks until the workflow ends (or waits with a node that needs a person).
        """
        for a in agents:
            self.register(a)
        if not isinstance(workflow, Workflow):
            path = Path(workflow)
            load_folder_agents(path.parent, self.registry)
            for a in list(self.registry):
                self.register(a)
            workflow = load_workflow(path, agents=self.registry)
        return self._call(self._run_workflow(workflow, task, timeout))

    async def _run_workflow(self, wf: Workflow, task: str, timeout: float | None) -> RunReport:
        missing = [n for n in wf.agent_names() if n not in self.registry]
        if missing:
            raise ConfigError(f"workflow {wf.name!r} uses unregistered agent(s): {', '.join(missing)}")
        if self._with_worker:
            await check_usable(self.registry.get(n) for n in wf.agent_names())
        self.workflows.register(wf)
        rec = await runs.start_run(self.store, runs.StartRun.of_workflow(wf, task), self._actor)
        await self._ensure_worker()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            rec = await self.store.runs.get(rec.run_id, self.workspace)
            if rec.status.terminal or rec.status in (RunStatus.WAITING_FOR_APPROVAL, RunStatus.WAITING_FOR_HUMAN):
                return await build_report(self.store, rec)
            children = await self.store.runs.page(workspace_id=self.workspace, parent_run_id=rec.run_id, limit=1000)
            if any(c.status in (RunStatus.WAITING_FOR_APPROVAL, RunStatus.WAITING_FOR_HUMAN) for c in children):
                return await build_report(self.store, rec)
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"workflow run {rec.run_id} still {rec.status.value} after {timeout}s")
            await self.store.events.wait(None, 0.2)

    def objective(
        self,
        goal: str,
        *,
        agents: Iterable[Agent | Any] = (),
        planner: str = "planner",
        strategist: str = "strategist",
        workers: Iterable[str] = (),
        max_concurrent_workers: int = 5,
        max_attempts: int = 4,
        repo: str | Path | None = None,
        timeout: float | None = None,
    ) -> RunReport:
        """Hand ``goal`` to the ``planner`` agent; its tasks run as child runs, reviewed by ``strategist``.

        See docs/objectives.md. Blocks until the objective ends, or until every run in flight waits for a
        person (an escalated task: ``maestro escalations``). ``repo``: a git repository in which every task
        works in its own worktree; approved work is merged into its current branch.
        """
        from agentmaestro.service.objectives import ObjectiveConfig

        for a in agents:
            self.register(a)
        config = ObjectiveConfig(
            goal=goal,
            planner=planner,
            strategist=strategist,
            workers=tuple(workers),
            max_concurrent_workers=max_concurrent_workers,
            max_attempts=max_attempts,
            repo=str(repo) if repo is not None else None,
        )
        return self._call(self._objective(config, timeout))

    async def _objective(self, config: Any, timeout: float | None) -> RunReport:
        from agentmaestro.service.objectives import start_objective

        missing = [n for n in (config.planner, config.strategist, *config.workers) if n not in self.registry]
        if missing:
            raise ConfigError(f"objective uses unregistered agent(s): {', '.join(missing)}")
        rec = await start_objective(self.store, config, self._actor)
        await self._ensure_worker()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiting = (RunStatus.WAITING_FOR_APPROVAL, RunStatus.WAITING_FOR_HUMAN)
        while True:
            rec = await self.store.runs.get(rec.run_id, self.workspace)
            if rec.status.terminal:
                return await build_report(self.store, rec)
            children = await self.store.runs.page(workspace_id=self.workspace, parent_run_id=rec.run_id, limit=1000)
            live = [c for c in children if not c.status.terminal]
            if rec.status is RunStatus.WAITING_FOR_CHILDREN and live and all(c.status in waiting for c in live):
                return await build_report(self.store, rec)
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"objective {rec.run_id} still {rec.status.value} after {timeout}s")
            await self.store.events.wait(None, 0.2)

    def start(self, agent: Agent | Any, task: str, *, policy: StrictPolicy | None = None) -> str:
        """Create a run and return its id at once (the worker executes it)."""
        return self._call(self._start(agent, task, policy, None))

    async def start_async(self, agent: Agent | Any, task: str, *, policy: StrictPolicy | None = None) -> str:
        """Async twin of :meth:`start`."""
        return await self._acall(self._start(agent, task, policy, None))

    def wait(self, run_id: str, *, timeout: float | None = None) -> RunReport:
        """Block until the run finishes or waits for a human."""
        return self._call(self._wait(run_id, timeout))

    async def wait_async(self, run_id: str, *, timeout: float | None = None) -> RunReport:
        """Async twin of :meth:`wait`."""
        return await self._acall(self._wait(run_id, timeout))

    async def _report(self, run_id: str) -> RunReport:
        return await build_report(self.store, await self.store.runs.get(run_id, self.workspace))

    def report(self, run_id: str) -> RunReport:
        """The report of a run as it stands."""
        return self._call(self._report(run_id))

    def get_run(self, run_id: str) -> RunRecord:
        """The run's snapshot row."""
        return self._call(self.store.runs.get(run_id, self.workspace))

    def events(self, run_id: str, *, after_seq: int = 0) -> list[Event]:
        """The run's events after ``after_seq``."""
        return self._call(self._events(run_id, after_seq))

    async def _events(self, run_id: str, after_seq: int) -> list[Event]:
        await self.store.runs.get(run_id, self.workspace)
        return await self.store.events.read(run_id, after_seq)

    def steps(self, run_id: str) -> list[StepRow]:
        """The run's finished steps."""
        return self._call(self._steps(run_id))

    async def _steps(self, run_id: str) -> list[StepRow]:
        await self.store.runs.get(run_id, self.workspace)
        return await self.store.steps.read(run_id)

    def cancel(self, run_id: str, *, reason: str = "cancelled by user") -> RunRecord:
        """Cancel a run (cooperatively if it is running)."""
        return self._call(self._cancel(run_id, reason))

    async def cancel_async(self, run_id: str, *, reason: str = "cancelled by user") -> RunRecord:
        """Async twin of :meth:`cancel`."""
        return await self._acall(self._cancel(run_id, reason))

    async def _cancel(self, run_id: str, reason: str) -> RunRecord:
        before = await self.store.runs.get(run_id, self.workspace)
        rec = await runs.cancel_run(self.store, runs.CancelRun(run_id=run_id, reason=reason), self._actor)
        await self._dispatch_since(rec, before.state.last_seq)
        return rec

    async def _dispatch_since(self, rec: RunRecord, after_seq: int) -> None:
        """Hooks for events appended outside the worker (a cancel of a queued run, ...)."""
        if self._hooks and rec.state.last_seq > after_seq:
            await self._dispatch(rec.run_id, rec.agent_name, await self.store.events.read(rec.run_id, after_seq))

    def resume(self, run_id: str, *, policy: dict[str, Any] | None = None) -> RunRecord:
        """Resume a FAILED or CANCELLED run from its last completed step, optionally raising limits."""
        return self._call(self._resume(run_id, policy))

    async def _resume(self, run_id: str, policy: dict[str, Any] | None) -> RunRecord:
        rec = await runs.resume_run(self.store, runs.ResumeRun(run_id=run_id, policy=policy), self._actor)
        await self._ensure_worker()
        return rec

    def fork(self, run_id: str, *, at_seq: int, policy: dict[str, Any] | None = None) -> RunRecord:
        """Fork a run at event ``at_seq``; the new run continues from there (optionally with new limits)."""
        return self._call(self._fork(run_id, at_seq, policy))

    async def _fork(self, run_id: str, at_seq: int, policy: dict[str, Any] | None) -> RunRecord:
        cmd = runs.ForkRun(run_id=run_id, at_seq=at_seq, policy=policy)
        rec = await runs.fork_run(self.store, cmd, self._actor)
        await self._ensure_worker()
        return rec

    # ----------------------------------------------------------------------- human decisions

    def approvals(
        self, *, include_decided: bool = False, before: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Tool calls waiting for approval in this workspace (all approvals with ``include_decided``), newest first.

        At most ``limit``; for the next page pass the last ``approval_id`` as ``before``.
        """
        statuses = None if include_decided else ("pending",)
        return self._call(
            self.store.approvals.page(workspace_id=self.workspace, statuses=statuses, before=before, limit=limit)
        )

    def approve(
        self, approval_id: str, *, reason: str = "", arguments: dict[str, Any] | None = None, by: str | None = None
    ) -> dict[str, Any]:
        """Approve a held tool call, optionally with edited arguments (the approval binds to them)."""
        return self._call(self._resolve_approval(approval_id, True, reason, arguments, by))

    async def approve_async(
        self, approval_id: str, *, reason: str = "", arguments: dict[str, Any] | None = None, by: str | None = None
    ) -> dict[str, Any]:
        """Async twin of :meth:`approve`."""
        return await self._acall(self._resolve_approval(approval_id, True, reason, arguments, by))

    def reject(self, approval_id: str, *, reason: str, by: str | None = None) -> dict[str, Any]:
        """Reject a held tool call; the reason goes back to the model as the call's result."""
        return self._call(self._resolve_approval(approval_id, False, reason, None, by))

    async def reject_async(self, approval_id: str, *, reason: str, by: str | None = None) -> dict[str, Any]:
        """Async twin of :meth:`reject`."""
        return await self._acall(self._resolve_approval(approval_id, False, reason, None, by))

    async def _resolve_approval(
        self, approval_id: str, approve: bool, reason: str, arguments: dict[str, Any] | None, by: str | None
    ) -> dict[str, Any]:
        cmd = decisions.DecideApproval(
            approval_id=approval_id, approve=approve, reason=reason, arguments=arguments, by=by
        )
        row = await decisions.decide_approval(self.store, cmd, self._actor)
        await self._ensure_worker()
        return row

    def human_requests(
        self, *, include_resolved: bool = False, before: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Runs waiting for a person (failed steps, uncertain tool calls), newest first.

        All requests with ``include_resolved``. At most ``limit``; for the next page pass the last ``request_id`` as
        ``before``.
        """
        statuses = None if include_resolved else ("pending",)
        return self._call(
            self.store.escalations.page(workspace_id=self.workspace, statuses=statuses, before=before, limit=limit)
        )

    def resolve(
        self,
        request_id: str,
        action: Literal["retry", "answer", "abandon"],
        *,
        instructions: str | None = None,
        answer: str | None = None,
        by: str | None = None,
    ) -> dict[str, Any]:
        """Answer an escalation: retry (with optional new instructions), answer in place of the step, or abandon."""
        return self._call(self._resolve_human(request_id, action, instructions, answer, by))

    async def _resolve_human(
        self,
        request_id: str,
        action: decisions.HumanAction,
        instructions: str | None,
        answer: str | None,
        by: str | None,
    ) -> dict[str, Any]:
        cmd = decisions.ResolveHumanRequest(
            request_id=request_id, action=action, instructions=instructions, answer=answer, by=by
        )
        row = await decisions.resolve_human_request(self.store, cmd, self._actor)
        await self._ensure_worker()
        return row

    def set_gate(self, gate: GatePolicy | dict[str, Any]) -> GatePolicy:
        """Set this workspace's risk gate rules (agents can tighten them, never loosen them)."""
        policy = gate if isinstance(gate, GatePolicy) else GatePolicy.from_json(gate)
        self._call(
            self.store.workspaces.update_settings_audited(self.workspace, {"gate": policy.to_json()}, actor=self.actor)
        )
        return policy

    # ---------------------------------------------------------------------------- lifecycle

    async def _aclose(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            if self._worker_task is not None:
                with contextlib.suppress(Exception):
                    await self._worker_task
        await self.store.close()
        from agentmaestro.tools.mcp import close_mcp_sessions

        await close_mcp_sessions()

    def close(self) -> None:
        """Stop the worker (finishing in-flight steps), close the database, stop the loop."""
        if self._closed:
            return
        try:
            self._call(self._aclose())
        finally:
            self._closed = True
            self._stop_loop()

    async def aclose(self) -> None:
        """Async twin of :meth:`close`."""
        if self._closed:
            return
        try:
            await self._acall(self._aclose())
        finally:
            self._closed = True
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Orchestrator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class MultiAgentOrchestrator:
    """Runs several agents on the same task concurrently and reports on each.

    One agent failing (or raising) does not stop the others: its report says FAILED with the error.

    Args:
        max_concurrency: Most agent runs in flight at once.
        orchestrator: An Orchestrator to run on; by default one is created (and closed) per call.
        database_url: Database for the default Orchestrator.
    """

    def __init__(
        self, max_concurrency: int = 4, *, orchestrator: Orchestrator | None = None, database_url: str | None = None
    ) -> None:
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigError("max_concurrency must be a positive integer")
        self.max_concurrency = max_concurrency
        self._orch = orchestrator
        self._database_url = database_url

    def run_multi(
        self,
        agents: list[Agent | Any],
        task: str,
        *,
        policy: StrictPolicy | None = None,
        timeout: float | None = None,
    ) -> dict[str, RunReport]:
        """Run every agent on ``task``; returns a report per agent name, in the given order."""
        orch = self._orch or Orchestrator(self._database_url)
        try:
            return orch._call(self._run_all(orch, agents, task, policy, timeout))
        finally:
            if self._orch is None:
                orch.close()

    async def run_multi_async(
        self,
        agents: list[Agent | Any],
        task: str,
        *,
        policy: StrictPolicy | None = None,
        timeout: float | None = None,
    ) -> dict[str, RunReport]:
        """Async twin of :meth:`run_multi`."""
        orch = self._orch if self._orch is not None else await asyncio.to_thread(Orchestrator, self._database_url)
        try:
            return await orch._acall(self._run_all(orch, agents, task, policy, timeout))
        finally:
            if self._orch is None:
                await orch.aclose()

    async def _run_all(
        self,
        orch: Orchestrator,
        agents: list[Agent | Any],
        task: str,
        policy: StrictPolicy | None,
        timeout: float | None,
    ) -> dict[str, RunReport]:
        adapted = [adapt(a) for a in agents]
        names = [a.name for a in adapted]
        if len(set(names)) != len(names):
            raise ConfigError(f"agent names must be unique, got {names}")
        gate = asyncio.Semaphore(self.max_concurrency)

        async def one(agent: Agent) -> RunReport:
            async with gate:
                started = asyncio.get_running_loop().time()
                try:
                    return await orch._run(agent, task, policy, timeout)
                except Exception as exc:  # reported, never propagated: the others go on
                    return RunReport(
                        run_id="",
                        agent=agent.name,
                        status=RunStatus.FAILED,
                        output=None,
                        error=f"{type(exc).__name__}: {exc}",
                        steps=0,
                        tokens=0,
                        tool_calls=0,
                        cost_usd=0.0,
                        duration_s=round(asyncio.get_running_loop().time() - started, 6),
                    )

        reports = await asyncio.gather(*(one(a) for a in adapted))
        return {r.agent: r for r in reports}
