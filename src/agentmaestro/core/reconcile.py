"""Recovering a non-idempotent tool call whose outcome was never recorded. Pure, no I/O.

After a crash, a call that was started (STEP_STARTED) but never finished may or may not have
happened. A tool that can tell answers through its ``reconcile`` function with a
:class:`Reconciled`; :func:`recovery` maps that answer to what the engine does, as data:

=============  ================================  ==========================================
outcome        tool without an idempotency key   tool that passes its idempotency key on
=============  ================================  ==========================================
happened       record its result                 record its result
did not        run the call                      run the call
cannot tell    ask a person                      run the call again with the same key
=============  ================================  ==========================================

A tool that passes :func:`idempotency_key` to the service it calls (as payment APIs accept one)
may be run again with the same key: the service performs the operation at most once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final


class Outcome(StrEnum):
    """What a tool's ``reconcile`` found out about a call."""

    HAPPENED = "happened"
    DID_NOT_HAPPEN = "did_not_happen"
    CANNOT_TELL = "cannot_tell"


class Recovery(StrEnum):
    """What the engine does with an uncertain call."""

    RECORD = "record"
    """Record the result the tool reported, as if the call had just returned it."""
    RUN = "run"
    """Make the call (again)."""
    ASK = "ask"
    """Wait for a person (retry, answer in its place, or abandon)."""


@dataclass(frozen=True, kw_only=True)
class Reconciled:
    """A tool's answer to "did this call happen?". Build it with the class methods."""

    outcome: Outcome
    """Happened, did not happen, or cannot tell."""
    result: Any = None
    """For HAPPENED: what the call returned (shown to the model like a tool's return value)."""
    reason: str = ""
    """Why the tool thinks so (recorded in the event log)."""

    @classmethod
    def happened(cls, result: Any, reason: str = "") -> Reconciled:
        """The call took effect; ``result`` is what it returned (or an equivalent description)."""
        return cls(outcome=Outcome.HAPPENED, result=result, reason=reason)

    @classmethod
    def did_not_happen(cls, reason: str = "") -> Reconciled:
        """The call had no effect: it is safe to make it."""
        return cls(outcome=Outcome.DID_NOT_HAPPEN, reason=reason)

    @classmethod
    def cannot_tell(cls, reason: str = "") -> Reconciled:
        """The tool cannot find out."""
        return cls(outcome=Outcome.CANNOT_TELL, reason=reason)


RECOVERY: Final[Mapping[tuple[Outcome, bool], Recovery]] = MappingProxyType(
    {
        (Outcome.HAPPENED, False): Recovery.RECORD,
        (Outcome.HAPPENED, True): Recovery.RECORD,
        (Outcome.DID_NOT_HAPPEN, False): Recovery.RUN,
        (Outcome.DID_NOT_HAPPEN, True): Recovery.RUN,
        (Outcome.CANNOT_TELL, False): Recovery.ASK,
        (Outcome.CANNOT_TELL, True): Recovery.RUN,
    }
)
"""(outcome, the tool passes its idempotency key on) -> what the engine does."""


def recovery(outcome: Outcome, *, keyed: bool) -> Recovery:
    """What to do with an uncertain call, given what its tool found out and whether it is keyed."""
    return RECOVERY[(outcome, keyed)]


def idempotency_key(run_id: str, step: int) -> str:
    """The idempotency key of the tool call at ``step`` of ``run_id``: the same every time that step is tried.

    A fork of the run (a new run id) gets new keys: its calls are new calls.
    """
    return f"maestro-{run_id}-{step}"


def render_recovery_table() -> str:
    """:data:`RECOVERY` as text: what the engine does with an uncertain call, by the tool's answer."""
    lines = [f"{'TOOL SAYS':<16}{'NOT KEYED':<12}KEYED (passes its idempotency key on)"]
    for outcome in Outcome:
        lines.append(
            f"{outcome.value:<16}{recovery(outcome, keyed=False).value:<12}{recovery(outcome, keyed=True).value}"
        )
    return "\n".join(lines)
