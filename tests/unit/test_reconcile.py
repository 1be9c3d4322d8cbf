"""Reconcilable tools: the recovery rule, the STEP_RECONCILED event, and ``Tool.reconcile``."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from agentmaestro.core.events import Event, InFlightStep, RunState, apply_event
from agentmaestro.core.messages import ToolCall
from agentmaestro.core.reconcile import (
    RECOVERY,
    Outcome,
    Reconciled,
    Recovery,
    idempotency_key,
    recovery,
    render_recovery_table,
)
from agentmaestro.core.states import EventType, Phase, RunStatus
from agentmaestro.errors import ConfigError, InvalidTransitionError
from agentmaestro.tools.context import ToolContext
from agentmaestro.tools.registry import tool

pytestmark = pytest.mark.anyio


def test_the_recovery_rule_covers_every_case() -> None:
    assert set(RECOVERY) == set(itertools.product(Outcome, (False, True)))
    assert recovery(Outcome.HAPPENED, keyed=False) is Recovery.RECORD
    assert recovery(Outcome.HAPPENED, keyed=True) is Recovery.RECORD
    assert recovery(Outcome.DID_NOT_HAPPEN, keyed=False) is Recovery.RUN
    assert recovery(Outcome.CANNOT_TELL, keyed=False) is Recovery.ASK
    assert recovery(Outcome.CANNOT_TELL, keyed=True) is Recovery.RUN  # the service deduplicates on the key
    assert render_recovery_table().splitlines()[1:] == [
        "happened        record      record",
        "did_not_happen  run         run",
        "cannot_tell     ask         run",
    ]


def test_idempotency_keys_name_the_run_and_step() -> None:
    assert idempotency_key("run_1", 3) == idempotency_key("run_1", 3) == "maestro-run_1-3"
    assert idempotency_key("run_1", 4) != idempotency_key("run_1", 3) != idempotency_key("run_2", 3)


CALL = ToolCall(call_id="c1", name="charge", arguments={"amount": 5})


def uncertain() -> RunState:
    return RunState(
        status=RunStatus.RUNNING,
        phase=Phase.EXECUTE,
        steps=1,
        last_seq=5,
        pending_tool_calls=(CALL,),
        in_flight=InFlightStep(step=1, call=CALL),
    )


def reconciled(decision: str, step: int = 1) -> Event:
    payload = {"call": CALL.to_json(), "outcome": "x", "decision": decision, "reason": "r"}
    return Event(run_id="r", seq=6, type=EventType.STEP_RECONCILED, payload=payload, step=step)


def test_a_run_decision_clears_the_uncertain_call_others_keep_it() -> None:
    after = apply_event(uncertain(), reconciled("run"))
    assert after.in_flight is None and after.pending_tool_calls == (CALL,) and after.steps == 1
    for decision in ("record", "ask"):
        assert apply_event(uncertain(), reconciled(decision)).in_flight is not None
    with pytest.raises(InvalidTransitionError):
        apply_event(uncertain(), reconciled("run", step=2))
    clean = RunState(status=RunStatus.RUNNING, steps=1, last_seq=5)
    with pytest.raises(InvalidTransitionError):
        apply_event(clean, reconciled("run"))


CTX = ToolContext(run_id="run_1", workspace_id="ws", agent="a", workdir=Path("/tmp"), idempotency_key="k")


async def test_reconcile_answers_are_normalised() -> None:
    seen: list[Any] = []

    def check(arguments: dict[str, Any], key: str) -> Reconciled:
        seen.append((arguments, key))
        return Reconciled.happened({"charged": arguments["amount"]}, reason="found in the ledger")

    @tool(reconcile=check)
    def charge(amount: int) -> str:
        """Charge."""
        return "charged"

    answer = await charge.reconcile({"amount": 5}, "key-1", CTX)
    assert answer == Reconciled.happened('{"charged": 5}', reason="found in the ledger")
    assert seen == [({"amount": 5}, "key-1")]
    assert charge.can_reconcile and not charge.idempotency_key


async def test_reconcile_gets_the_context_when_it_takes_three_arguments() -> None:
    async def check(arguments: dict[str, Any], key: str, ctx: ToolContext) -> Reconciled:
        return Reconciled.did_not_happen(f"{ctx.run_id} {key}")

    @tool(reconcile=check, idempotency_key=True)
    def charge(amount: int) -> str:
        """Charge."""
        return "charged"

    answer = await charge.reconcile({"amount": 5}, "key-1", CTX)
    assert answer.outcome is Outcome.DID_NOT_HAPPEN and answer.reason == "run_1 key-1"
    assert charge.idempotency_key


async def test_a_failing_or_confused_reconcile_cannot_tell() -> None:
    def boom(arguments: dict[str, Any], key: str) -> Reconciled:
        raise RuntimeError("ledger offline")

    def nonsense(arguments: dict[str, Any], key: str) -> Any:
        return "yes"

    async def slow(arguments: dict[str, Any], key: str) -> Reconciled:
        await asyncio.sleep(5)
        return Reconciled.did_not_happen()

    def leaky(arguments: dict[str, Any], key: str) -> Reconciled:
        return Reconciled.happened("token sk-ant-api03-" + "a" * 40)

    def make(fn: Any, **kw: Any) -> Any:
        def charge(amount: int) -> str:
            """Charge."""
            return "charged"

        return tool(charge, reconcile=fn, **kw)

    answer = await make(boom).reconcile({"amount": 1}, "k", CTX)
    assert answer.outcome is Outcome.CANNOT_TELL and "RuntimeError: ledger offline" in answer.reason
    answer = await make(nonsense).reconcile({"amount": 1}, "k", CTX)
    assert answer.outcome is Outcome.CANNOT_TELL and "str, not Reconciled" in answer.reason
    answer = await make(slow, timeout_s=0.05).reconcile({"amount": 1}, "k", CTX)
    assert answer.outcome is Outcome.CANNOT_TELL and "timed out" in answer.reason
    answer = await make(leaky, redact_output=True).reconcile({"amount": 1}, "k", CTX)
    assert answer.outcome is Outcome.HAPPENED and "a" * 40 not in str(answer.result)
    answer = await make(None).reconcile({"amount": 1}, "k", CTX)
    assert answer.outcome is Outcome.CANNOT_TELL and "no reconcile function" in answer.reason


def test_a_reconcile_with_the_wrong_signature_is_refused() -> None:
    def one(arguments: dict[str, Any]) -> Reconciled:
        return Reconciled.cannot_tell()

    def four(a: Any, b: Any, c: Any, d: Any) -> Reconciled:
        return Reconciled.cannot_tell()

    def charge(amount: int) -> str:
        """Charge."""
        return "charged"

    for bad in (one, four, "not callable"):
        with pytest.raises(ConfigError, match="reconcile"):
            tool(charge, reconcile=bad)  # type: ignore[arg-type]
