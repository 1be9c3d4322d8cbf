"""Chat conversations to runs and runs back to chat answers (the OpenAI-compatible endpoint's logic).

Pure functions, no I/O: :func:`select_target` reads the model name and the chat commands of the last
user message (``@agent NAME text``, ``@flow NAME text``, ``@tool NAME {json}``); :func:`build_input`
folds the system messages and the earlier turns into the run's input; :func:`answer_text` says what
a run did, or why it waits, with links to the dashboard. The HTTP side is
``agentmaestro.server.routes.chat``; the user guide is docs/chat-api.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agentmaestro.server.chat.tool_agent import parse_arguments

TargetKind = Literal["agent", "workflow", "tool"]

MAX_INPUT_CHARS = 1_000_000
"""Longest run input; the oldest turns of a long conversation are left out to stay under it."""

_COMMAND = re.compile(r"^\s*@(agent|flow|workflow|tool)\b[ \t]*(\S*)[ \t]*(.*)$", re.DOTALL)
_KIND_OF: dict[str, TargetKind] = {"agent": "agent", "flow": "workflow", "workflow": "workflow", "tool": "tool"}


class ChatInputError(ValueError):
    """The conversation cannot be turned into a run (answered with 400)."""


@dataclass(frozen=True, kw_only=True)
class Turn:
    """One message of the conversation, as text."""

    role: str
    """system, developer, user, assistant, tool or function."""
    text: str
    """Its text (content parts joined)."""


@dataclass(frozen=True, kw_only=True)
class Target:
    """What a chat request runs."""

    kind: TargetKind
    """An agent, a workflow, or a single tool call."""
    name: str
    """The agent's, workflow's or tool's name."""
    text: str
    """The current message without its chat command (for a tool: the JSON arguments)."""
    arguments: dict[str, Any] = field(default_factory=dict)
    """For a tool: the decoded arguments."""
    inline: bool = False
    """Chosen by a chat command rather than by the model name."""

    @property
    def model_id(self) -> str:
        """The target as a model id (``agent:NAME``, ``workflow:NAME``, ``tool:NAME``)."""
        return f"{self.kind}:{self.name}"


def parse_model(model: str) -> tuple[TargetKind, str]:
    """``agent:NAME``, ``workflow:NAME`` (also ``flow:NAME``) or a plain ``NAME`` (an agent)."""
    prefix, sep, rest = model.partition(":")
    if sep and prefix in ("agent", "workflow", "flow") and rest:
        return ("agent" if prefix == "agent" else "workflow"), rest
    return "agent", model


def select_target(model: str, current: str) -> Target:
    """The target of a request: a chat command in ``current`` (the last user message) wins over ``model``.

    Raises:
        ChatInputError: a command without a name, or ``@tool`` arguments that are not a JSON object.
    """
    m = _COMMAND.match(current)
    if m is None:
        kind, name = parse_model(model)
        return Target(kind=kind, name=name, text=current)
    word, name, rest = m.group(1), m.group(2), m.group(3)
    command_kind = _KIND_OF[word]
    if not name:
        usage = "@tool NAME {json arguments}" if command_kind == "tool" else f"@{word} NAME your message"
        raise ChatInputError(f"@{word} needs a name: {usage}")
    if command_kind != "tool":
        return Target(kind=command_kind, name=name, text=rest.strip(), inline=True)
    arguments = parse_arguments(rest)
    if arguments is None:
        raise ChatInputError(f'@tool {name}: the arguments must be a JSON object, e.g. @tool {name} {{"x": 1}}')
    if _has_nul(arguments):
        raise ChatInputError(f"@tool {name}: the arguments must not contain NUL characters")
    return Target(kind="tool", name=name, text=json.dumps(arguments), arguments=arguments, inline=True)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def split_conversation(turns: Sequence[Turn]) -> tuple[list[str], list[Turn], str]:
    """(system texts, earlier turns, current message): the current message is the last user message.

    Raises:
        ChatInputError: no user message.
    """
    last_user = max((i for i, t in enumerate(turns) if t.role == "user"), default=None)
    if last_user is None:
        raise ChatInputError("the conversation has no user message")
    system = [t.text for t in turns if t.role in ("system", "developer") and t.text.strip()]
    history = [t for i, t in enumerate(turns) if i != last_user and t.role not in ("system", "developer")]
    return system, history, turns[last_user].text


def build_input(system: Sequence[str], history: Sequence[Turn], text: str, *, limit: int = MAX_INPUT_CHARS) -> str:
    """The run's input: the current message, preceded by the client's instructions and earlier turns.

    With neither, the input is the message itself. Earlier turns are dropped oldest first (and the
    omission said) when the whole would exceed ``limit`` characters.

    Raises:
        ChatInputError: the instructions and the current message alone exceed ``limit``.
    """
    if not system and not history:
        if len(text) > limit:
            raise ChatInputError(f"the message is {len(text)} characters long; the limit is {limit}")
        return text
    head = ""
    if system:
        head = "[Instructions from the chat client]\n" + "\n\n".join(s.strip() for s in system) + "\n\n"
    tail = "[Current message]\n" + text
    room = limit - len(head) - len(tail) - 200
    if room < 0:
        raise ChatInputError(f"the instructions and the message exceed the input limit of {limit} characters")
    lines: list[str] = []
    used = 0
    kept = 0
    for turn in reversed(history):
        line = f"{turn.role}: {turn.text.strip()}"
        if used + len(line) + 1 > room:
            break
        lines.append(line)
        used += len(line) + 1
        kept += 1
    lines.reverse()
    if kept < len(history):
        lines.insert(0, f"[{len(history) - kept} earlier message(s) left out]")
    middle = "[Earlier conversation]\n" + "\n".join(lines) + "\n\n" if lines else ""
    return head + middle + tail


@dataclass(frozen=True, kw_only=True)
class Links:
    """Dashboard links."""

    base: str
    """The dashboard's absolute URL, without a trailing slash."""

    def run(self, run_id: str) -> str:
        """A run's page."""
        return f"{self.base}/#/runs/{run_id}"

    @property
    def queue(self) -> str:
        """The human queue (approvals and escalations)."""
        return f"{self.base}/#/queue"


def pending_json(approval: dict[str, Any] | None = None, human: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pending decision (an approval row or a human request row) in the answer's ``maestro.pending``."""
    if approval is not None:
        return {
            "kind": "approval",
            "id": approval["approval_id"],
            "run_id": approval["run_id"],
            "tool": approval["tool"],
            "arguments": approval.get("arguments") or {},
            "risk": approval["risk"],
            "reasons": list(approval.get("reasons") or []),
            "question": None,
        }
    assert human is not None
    call = (human.get("detail") or {}).get("call")
    return {
        "kind": "human",
        "id": human["request_id"],
        "run_id": human["run_id"],
        "tool": call.get("name") if isinstance(call, dict) else None,
        "arguments": None,
        "risk": None,
        "reasons": [],
        "question": human.get("question") or "",
    }


def answer_text(
    *,
    run_id: str,
    status: str,
    output: str | None,
    error: str | None,
    pending: Sequence[dict[str, Any]],
    links: Links,
    waited_s: float | None = None,
) -> str:
    """What the chat answers for a run: its output, or what happened and what it waits for.

    ``waited_s`` is set when the server stopped waiting while the run was still going.
    """
    if status == "COMPLETED":
        return output or ""
    if pending:
        parts = [_pending_text(p, run_id, links) for p in pending]
        return "\n\n".join(parts)
    if status == "FAILED":
        return f"Run {run_id} failed: {error or 'no reason recorded'}.\nDetails: {links.run(run_id)}"
    if status == "CANCELLED":
        return f"Run {run_id} was cancelled: {error or 'no reason recorded'}.\nDetails: {links.run(run_id)}"
    if status in ("WAITING_FOR_APPROVAL", "WAITING_FOR_HUMAN"):
        return f"Run {run_id} is waiting for a person ({status}).\nDecide in the queue: {links.queue}"
    waited = f" after {waited_s:.0f}s" if waited_s is not None else ""
    return (
        f"Run {run_id} is still {status}{waited}; it continues on the server.\n"
        f"Follow it at {links.run(run_id)} (or `maestro runs show {run_id}`)."
    )


def _pending_text(p: dict[str, Any], run_id: str, links: Links) -> str:
    where = "" if p["run_id"] == run_id else f" (in sub-run {p['run_id']})"
    if p["kind"] == "approval":
        args = json.dumps(p["arguments"], sort_keys=True)
        reasons = "; ".join(p["reasons"]) or f"{p['risk']} tools need approval"
        return (
            f"Run {run_id} is waiting for approval{where}: the tool `{p['tool']}` with arguments {args} "
            f"(risk {p['risk']}).\n"
            f"Reason: {reasons}.\n"
            f"Approval id: {p['id']}\n"
            f"Approve or reject it at {links.queue} (run: {links.run(p['run_id'])}), "
            f"or `maestro approvals approve {p['id']}`."
        )
    tool = f" about the tool `{p['tool']}`" if p.get("tool") else ""
    return (
        f"Run {run_id} is waiting for a person{where}{tool}: {p['question']}\n"
        f"Request id: {p['id']}\n"
        f"Answer it at {links.queue} (run: {links.run(p['run_id'])}), or with `maestro escalations list`."
    )


def text_pieces(text: str, size: int = 48) -> list[str]:
    """``text`` cut into pieces of about ``size`` characters at spaces; joined, they are ``text`` again."""
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            space = text.rfind(" ", start + 1, end)
            if space > start:
                end = space + 1
        pieces.append(text[start:end])
        start = end
    return pieces


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def progress_line(event_type: str, payload: dict[str, Any]) -> str | None:
    """One line saying what a run event means, for a chat client's progress display; None for bookkeeping events.

    Streamed as ``reasoning_content`` (shown as the model's "thinking" by clients such as Open WebUI), so the
    ``content`` deltas stay exactly the answer.
    """
    if event_type == "STEP_COMPLETED":
        if payload.get("kind") == "MODEL_CALL":
            calls = payload.get("tool_calls") or []
            if calls:
                names = ", ".join(f"`{c.get('name')}`" for c in calls if isinstance(c, dict))
                return f"Model {payload.get('model', '')} asks for {names}."
            return f"Model {payload.get('model', '')} answered."
        if payload.get("kind") == "TOOL_CALL":
            outcome = "failed" if payload.get("is_error") else "returned"
            args = _short(payload.get("arguments") or {})
            return f"Tool `{payload.get('name')}` {args} {outcome}: {_short(payload.get('result', ''))}"
        return None
    if event_type == "STEP_FAILED":
        return f"A step failed: {_short(payload.get('error', 'no reason recorded'))}"
    if event_type == "APPROVAL_REQUESTED":
        call = payload.get("call") or {}
        return (
            f"Tool `{call.get('name')}` (risk {payload.get('risk')}) waits for approval {payload.get('approval_id')}."
        )
    if event_type == "APPROVAL_GRANTED":
        return "Approved."
    if event_type == "APPROVAL_REJECTED":
        return "Rejected."
    if event_type == "HUMAN_INPUT_REQUESTED":
        return f"Waiting for a person: {_short(payload.get('question', ''))}"
    if event_type == "CHILDREN_SPAWNED":
        return "Started sub-runs."
    if event_type == "CHILDREN_FINISHED":
        return "Sub-runs finished."
    if event_type == "POLICY_VIOLATION":
        return f"Policy violation: {_short(payload.get('reason') or payload.get('message') or payload)}"
    return None
