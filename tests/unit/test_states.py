from __future__ import annotations

import itertools

import pytest

from agentmaestro.core.states import (
    PHASE_TRANSITIONS,
    TERMINAL_STATUSES,
    TRANSITIONS,
    EventType,
    Phase,
    RunStatus,
    check_phase_change,
    next_status,
    render_table_mermaid,
    render_table_text,
)
from agentmaestro.errors import InvalidTransitionError


def test_every_status_event_pair_is_in_the_table_or_rejected() -> None:
    statuses: list[RunStatus | None] = [None, *RunStatus]
    accepted = rejected = 0
    for status, event in itertools.product(statuses, EventType):
        if (status, event) in TRANSITIONS:
            assert next_status(status, event) is TRANSITIONS[(status, event)]
            accepted += 1
        else:
            with pytest.raises(InvalidTransitionError):
                next_status(status, event)
            rejected += 1
    assert accepted == len(TRANSITIONS)
    assert accepted + rejected == len(statuses) * len(EventType)


def test_completed_is_final_and_failed_cancelled_only_resume() -> None:
    for (before, event), _after in TRANSITIONS.items():
        if before is RunStatus.COMPLETED:
            pytest.fail(f"COMPLETED must have no outgoing transitions, found {event}")
        if before in TERMINAL_STATUSES:
            assert event is EventType.RUN_RESUMED


def test_every_status_is_reachable_from_creation() -> None:
    reached = {None}
    frontier: list[RunStatus | None] = [None]
    while frontier:
        cur = frontier.pop()
        for (before, _e), after in TRANSITIONS.items():
            if before == cur and after not in reached:
                reached.add(after)
                frontier.append(after)
    assert set(RunStatus) <= reached


def test_every_event_type_is_used() -> None:
    used = {e for (_s, e) in TRANSITIONS}
    assert used == set(EventType)


def test_phase_changes() -> None:
    for a, b in itertools.product(Phase, Phase):
        if (a, b) in PHASE_TRANSITIONS:
            check_phase_change(a, b)
        else:
            with pytest.raises(InvalidTransitionError):
                check_phase_change(a, b)


def test_renderings_cover_every_row() -> None:
    text = render_table_text()
    mermaid = render_table_mermaid()
    assert mermaid.startswith("stateDiagram-v2")
    for (before, event), after in TRANSITIONS.items():
        assert event.value in text and after.value in text
        src = "[*]" if before is None else before.value
        assert f"{src} --> {after.value}: {event.value}" in mermaid
