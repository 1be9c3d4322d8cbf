"""/v1/chat/completions and /v1/models: the OpenAI-compatible chat endpoint (docs/chat-api.md).

Any OpenAI client (the official SDKs, Open WebUI, ...) talks to AgentMaestro with an API key as its
``api_key`` and ``<server>/v1`` as its base URL. The model name selects an agent (``agent:NAME`` or
``NAME``) or a workflow (``workflow:NAME``); chat commands in the last user message win over it
(``@agent``, ``@flow``, ``@tool``). Every request is a durable run: the answer is the run's output,
or what happened and what the run waits for (approval, a person), with dashboard links.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from agentmaestro.agents import AgentRegistry
from agentmaestro.core.events import Event
from agentmaestro.errors import MaestroError, NotFoundError
from agentmaestro.server import streams
from agentmaestro.server.auth import Operator, Principal, Viewer, get_store
from agentmaestro.server.chat import conversation as chat
from agentmaestro.server.chat.tool_agent import TOOL_AGENT_PREFIX, ensure_tool_agent
from agentmaestro.server.errors import APIError
from agentmaestro.server.routes import runs as runs_routes
from agentmaestro.server.routes import workflows as workflow_routes
from agentmaestro.service.workflows import StartWorkflow, start_workflow
from agentmaestro.store.base import Store
from agentmaestro.store.records import RunRecord
from agentmaestro.workflows import stored

router = APIRouter(prefix="/v1", tags=["chat (OpenAI-compatible)"])
StoreDep = Annotated[Store, Depends(get_store)]

MAX_WAIT_ENV = "MAESTRO_CHAT_MAX_WAIT_S"
"""Longest a chat request waits for its run (seconds, default 120); then it answers with what happened so far."""
PUBLIC_URL_ENV = "MAESTRO_PUBLIC_URL"
"""The dashboard's public URL for links in answers (default: the request's base URL)."""
DEFAULT_MAX_WAIT_S = 120.0
TICK_S = 1.0
"""How often a quiet run is re-checked (sub-runs waiting for a person, keep-alives)."""
KEEPALIVE_S = 15.0
_STARTED = int(time.time())


# ------------------------------------------------------------------------------------------- models


class ContentPart(BaseModel):
    """A part of a message's content; only text parts are read."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(max_length=100)
    text: str | None = Field(default=None, max_length=1_000_000)


class ChatMessage(BaseModel):
    """One message of the conversation (tool calls and other fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: (
        Annotated[str, Field(max_length=1_000_000)] | Annotated[list[ContentPart], Field(max_length=1000)] | None
    ) = None
    name: str | None = Field(default=None, max_length=200)


class StreamOptions(BaseModel):
    """Streaming options."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """An OpenAI chat completion request.

    Sampling parameters are accepted and ignored: the agent's model and settings apply.
    """

    model_config = ConfigDict(extra="ignore")

    model: str = Field(
        min_length=1, max_length=300, description="`agent:NAME`, `workflow:NAME`, or an agent's plain `NAME`."
    )
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    stream: bool | None = Field(default=False, description="Answer as Server-Sent Events (`chat.completion.chunk`).")
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=1, description="Only one choice is produced.")


class AssistantMessage(BaseModel):
    """The answer."""

    role: Literal["assistant"]
    content: str
    refusal: None = None


class Choice(BaseModel):
    """The one choice."""

    index: int
    message: AssistantMessage
    finish_reason: Literal["stop"]
    logprobs: None = None


class ChatUsage(BaseModel):
    """The run's token totals."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class PendingDecision(BaseModel):
    """A tool call held for approval, or a question for a person, that the run waits for."""

    kind: Literal["approval", "human"]
    id: str = Field(description="The approval id or the human request id.")
    run_id: str = Field(description="The run that waits (the chat's run, or one of its sub-runs).")
    tool: str | None
    arguments: dict[str, Any] | None
    risk: str | None
    reasons: list[str]
    question: str | None


class MaestroInfo(BaseModel):
    """AgentMaestro's side of the answer."""

    run_id: str
    status: str
    target: str = Field(description="What ran: `agent:NAME`, `workflow:NAME` or `tool:NAME`.")
    dashboard_url: str = Field(description="The run's page on the dashboard.")
    queue_url: str = Field(description="The dashboard's queue of approvals and escalations.")
    pending: list[PendingDecision]
    finished: bool = Field(description="The run reached a final status (COMPLETED, FAILED, CANCELLED).")


class ChatCompletion(BaseModel):
    """An OpenAI ``chat.completion`` with an extra ``maestro`` object."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: ChatUsage
    system_fingerprint: str | None = None
    maestro: MaestroInfo


class ModelCard(BaseModel):
    """An agent or workflow, as an OpenAI model."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    description: str


class ModelList(BaseModel):
    """OpenAI model list."""

    object: Literal["list"]
    data: list[ModelCard]


STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "example": 'data: {"object": "chat.completion.chunk", ...}\n\ndata: [DONE]\n\n',
            }
        },
        "description": "A chat completion, or with `stream: true` Server-Sent Events: `chat.completion.chunk` "
        "frames as the run goes, the answer as content deltas, a final chunk with `finish_reason`, then "
        "`data: [DONE]`.",
    }
}


# --------------------------------------------------------------------------------------- model list


def _agents(request: Request) -> AgentRegistry:
    registry: AgentRegistry = request.app.state.agents
    return registry


async def _model_cards(request: Request, principal: Principal) -> list[dict[str, Any]]:
    cards = [
        _card(f"agent:{a.name}", a.description or f"agent {a.name} ({a.model_name})")
        for a in sorted(_agents(request).visible_to(principal.workspace_id), key=lambda a: a.name)
        if not a.name.startswith(TOOL_AGENT_PREFIX)
    ]
    folder = workflow_routes._workflows(request)
    for entry in await stored.visible(get_store(request), principal.workspace_id, folder):
        wf = entry.workflow
        cards.append(_card(f"workflow:{wf.name}", wf.description or f"workflow {wf.name} ({entry.source})"))
    return cards


def _card(model_id: str, description: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": _STARTED,
        "owned_by": "agentmaestro",
        "description": description,
    }


@router.get("/models", response_model=ModelList, summary="List agents and workflows as models")
async def list_models(principal: Viewer, request: Request) -> dict[str, Any]:
    """Every agent (``agent:NAME``) and workflow (``workflow:NAME``) a chat request may name, OpenAI style."""
    return {"object": "list", "data": await _model_cards(request, principal)}


@router.get("/models/{name}", response_model=ModelCard, summary="Get a model (an agent or a workflow)")
async def get_model(
    name: Annotated[str, Path(description="`agent:NAME`, `workflow:NAME` or an agent's plain `NAME`.")],
    principal: Viewer,
    request: Request,
) -> dict[str, Any]:
    """One agent or workflow as an OpenAI model."""
    kind, target = chat.parse_model(name)
    wanted = f"{kind}:{target}"
    cards = await _model_cards(request, principal)
    for card in cards:
        if card["id"] == wanted:
            return card
    raise _model_not_found(name, cards)


def _model_not_found(name: str, cards: list[dict[str, Any]]) -> APIError:
    ids = [c["id"] for c in cards]
    shown = ", ".join(ids[:20]) + (", ..." if len(ids) > 20 else "")
    return APIError(
        404,
        "model_not_found",
        f"the model {name!r} does not exist; known models: {shown or 'none'} (GET /v1/models)",
        param="model",
    )


# ------------------------------------------------------------------------------------------- chat


def _text(message: ChatMessage, *, current: bool) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.type == "text":
            texts.append(part.text or "")
        elif current:
            raise APIError(
                400, "invalid_request", f"only text content is supported, not {part.type!r} parts", param="messages"
            )
        else:
            texts.append(f"[{part.type} left out]")
    return "\n".join(texts)


def _conversation(body: ChatCompletionRequest) -> tuple[list[str], list[chat.Turn], str]:
    last_user = max((i for i, m in enumerate(body.messages) if m.role == "user"), default=-1)
    turns = [chat.Turn(role=m.role, text=_text(m, current=i == last_user)) for i, m in enumerate(body.messages)]
    try:
        return chat.split_conversation(turns)
    except chat.ChatInputError as exc:
        raise APIError(400, "invalid_request", str(exc), param="messages") from None


def _links(request: Request) -> chat.Links:
    base = os.environ.get(PUBLIC_URL_ENV) or str(request.base_url)
    return chat.Links(base=base.rstrip("/"))


def _max_wait() -> float:
    raw = os.environ.get(MAX_WAIT_ENV)
    try:
        value = float(raw) if raw else DEFAULT_MAX_WAIT_S
    except ValueError:
        value = DEFAULT_MAX_WAIT_S
    return value if math.isfinite(value) and value >= 0 else DEFAULT_MAX_WAIT_S


async def _start(
    request: Request, principal: Principal, store: Store, body: ChatCompletionRequest
) -> tuple[chat.Target, RunRecord]:
    system, history, current = _conversation(body)
    try:
        target = chat.select_target(body.model, current)
    except chat.ChatInputError as exc:
        raise APIError(400, "invalid_request", str(exc), param="messages") from None
    registry = _agents(request)
    if target.kind == "tool":
        if getattr(request.app.state, "worker", None) is None:
            raise APIError(
                409,
                "no_worker",
                "@tool runs are executed by the server's embedded worker, and this server runs none "
                "(started with --no-worker); use @agent with an agent that has the tool",
            )
        agent = ensure_tool_agent(registry, target.name, workspace_id=principal.workspace_id)
        if agent is None:
            raise APIError(404, "model_not_found", f"no agent of this server has a tool called {target.name!r}")
        via = {"via": "chat", "tool": target.name}
        rec = await runs_routes.create_run(
            store, registry, principal.as_actor(), agent.name, target.text, None, request=request, detail=via
        )
        return target, rec
    try:
        task = chat.build_input(system, history, target.text)
    except chat.ChatInputError as exc:
        raise APIError(400, "invalid_request", str(exc), param="messages") from None
    if target.kind == "agent":
        visible = registry.visible_to(principal.workspace_id)
        if target.name not in visible or target.name.startswith(TOOL_AGENT_PREFIX):
            raise _model_not_found(target.model_id, await _model_cards(request, principal))
        rec = await runs_routes.create_run(
            store, registry, principal.as_actor(), target.name, task, None, request=request, detail={"via": "chat"}
        )
        return target, rec
    try:
        entry = await stored.find(store, principal.workspace_id, target.name, workflow_routes._workflows(request))
    except NotFoundError:
        raise _model_not_found(target.model_id, await _model_cards(request, principal)) from None
    await runs_routes.check_workflow_models_here(request, entry.workflow)
    rec = await start_workflow(store, StartWorkflow(entry=entry, input=task, via="chat"), principal.as_actor())
    return target, rec


@dataclass(frozen=True, kw_only=True)
class _Outcome:
    """Where the run is when the request stops following it."""

    record: RunRecord
    pending: list[dict[str, Any]]
    waited_s: float | None


async def _subtree(store: Store, run_id: str, workspace_id: str) -> set[str]:
    found, frontier = {run_id}, [run_id]
    while frontier and len(found) < 2000:
        parent = frontier.pop()
        for child in await store.runs.page(workspace_id=workspace_id, parent_run_id=parent, limit=500):
            if child.run_id not in found:
                found.add(child.run_id)
                frontier.append(child.run_id)
    return found


async def _pending(store: Store, rec: RunRecord) -> list[dict[str, Any]]:
    """Approvals and human requests the run (or one of its sub-runs) waits for."""
    status = rec.status.value
    if status not in ("WAITING_FOR_APPROVAL", "WAITING_FOR_HUMAN", "WAITING_FOR_CHILDREN"):
        return []
    ws = rec.workspace_id
    tree = {rec.run_id} if status != "WAITING_FOR_CHILDREN" else await _subtree(store, rec.run_id, ws)
    # One pending item per waiting run at most: the tree's size bounds the lists.
    out = [chat.pending_json(approval=a) for a in await store.approvals.page(workspace_id=ws, run_ids=tree, limit=2000)]
    humans = await store.escalations.page(workspace_id=ws, run_ids=tree, limit=2000)
    out += [chat.pending_json(human=h) for h in humans]
    return out


async def _follow(
    store: Store, rec: RunRecord, max_wait: float, *, deltas: bool = False
) -> AsyncGenerator[Event | streams.Delta | None | _Outcome]:
    """The run's events as they are committed (``None`` while quiet), then one :class:`_Outcome`.

    With ``deltas``, also the live text of its model answers as they stream in (best-effort, see
    docs/streams.md). Stops when the run ends, waits for a person (itself or a sub-run), or ``max_wait``
    seconds have passed.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + max_wait
    ws = rec.workspace_id
    events = streams.follow_run(store, rec.run_id, ws, follow="waiting", tick_s=TICK_S)
    stream = streams.with_deltas(events, rec.run_id) if deltas else events
    timed_out = False
    pending: list[dict[str, Any]] = []
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                timed_out = True
                break
            try:
                item = await asyncio.wait_for(anext(stream), remaining)
            except TimeoutError:
                timed_out = True
                break
            except StopAsyncIteration:
                break
            if isinstance(item, streams.End):
                break
            if item is None:
                current = await store.runs.get(rec.run_id, ws)
                if current.status.value == "WAITING_FOR_CHILDREN":
                    pending = await _pending(store, current)
                    if pending:
                        break
            yield item
    finally:
        await stream.aclose()
    final = await store.runs.get(rec.run_id, ws)
    if not pending:
        pending = await _pending(store, final)
    finished = final.status.terminal
    yield _Outcome(
        record=final,
        pending=pending,
        waited_s=loop.time() - started if timed_out and not finished and not pending else None,
    )


def _answer(outcome: _Outcome, links: chat.Links) -> str:
    rec = outcome.record
    return chat.answer_text(
        run_id=rec.run_id,
        status=rec.status.value,
        output=rec.state.output,
        error=rec.state.error,
        pending=outcome.pending,
        links=links,
        waited_s=outcome.waited_s,
    )


def _maestro(outcome: _Outcome, target: chat.Target, links: chat.Links) -> dict[str, Any]:
    rec = outcome.record
    return {
        "run_id": rec.run_id,
        "status": rec.status.value,
        "target": target.model_id,
        "dashboard_url": links.run(rec.run_id),
        "queue_url": links.queue,
        "pending": outcome.pending,
        "finished": rec.status.terminal,
    }


def _usage(rec: RunRecord) -> dict[str, int]:
    st = rec.state
    return {
        "prompt_tokens": st.input_tokens,
        "completion_tokens": st.output_tokens,
        "total_tokens": st.input_tokens + st.output_tokens,
    }


def _completion_id(run_id: str) -> str:
    return f"chatcmpl-{run_id}"


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    summary="Chat with an agent or workflow (OpenAI-compatible)",
    responses=STREAM_RESPONSES,
)
async def chat_completions(body: ChatCompletionRequest, principal: Operator, store: StoreDep, request: Request) -> Any:
    """Start a run from a chat conversation and answer with its output (or its event stream).

    The model name selects an agent or workflow; ``@agent NAME``, ``@flow NAME`` and ``@tool NAME {json}``
    in the last user message win over it. Earlier turns and system messages become part of the run's
    input. A run waiting for an approval or a person says so, with the approval id and dashboard links.
    """
    target, rec = await _start(request, principal, store, body)
    links = _links(request)
    max_wait = _max_wait()
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(store, rec, target, links, max_wait, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    outcome: _Outcome | None = None
    async for item in _follow(store, rec, max_wait):
        if isinstance(item, _Outcome):
            outcome = item
    assert outcome is not None
    final = outcome.record
    return {
        "id": _completion_id(final.run_id),
        "object": "chat.completion",
        "created": int(final.created_at),
        "model": target.model_id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": _answer(outcome, links), "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(final),
        "system_fingerprint": None,
        "maestro": _maestro(outcome, target, links),
    }


def _frame(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


async def _stream(
    store: Store, rec: RunRecord, target: chat.Target, links: chat.Links, max_wait: float, include_usage: bool
) -> AsyncIterator[bytes]:
    """The streamed answer as ``chat.completion.chunk`` frames.

    The role first, then one frame per run event (a ``maestro`` note naming it, and a progress line as
    ``reasoning_content`` for the events that mean something to a person) and the live text of model
    answers as ``reasoning_content`` while they stream in, the answer as content deltas, the finish
    frame, optionally the usage frame, and ``[DONE]``.
    """
    base = {
        "id": _completion_id(rec.run_id),
        "object": "chat.completion.chunk",
        "created": int(rec.created_at),
        "model": target.model_id,
        "system_fingerprint": None,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return _frame({**base, "choices": [choice], **extra})

    yield chunk({"role": "assistant", "content": ""}, maestro={"run_id": rec.run_id, "status": rec.status.value})
    last_sent = time.monotonic()
    outcome: _Outcome | None = None
    line_open = False  # live model text was sent as reasoning and its line is not ended yet
    try:
        async for item in _follow(store, rec, max_wait, deltas=True):
            if isinstance(item, _Outcome):
                outcome = item
            elif isinstance(item, streams.Delta):
                yield chunk({"reasoning_content": item.text})
                line_open = not item.text.endswith("\n")
                last_sent = time.monotonic()
            elif isinstance(item, Event):
                note = {"run_id": item.run_id, "seq": item.seq, "event": item.type.value, "step": item.step}
                name = item.payload.get("name") if item.type.value == "STEP_COMPLETED" else None
                if isinstance(name, str):
                    note["name"] = name
                line = chat.progress_line(item.type.value, item.payload)
                if line and line_open:
                    line, line_open = "\n" + line, False
                yield chunk({"reasoning_content": line + "\n"} if line else {}, maestro=note)
                last_sent = time.monotonic()
            elif time.monotonic() - last_sent >= KEEPALIVE_S:
                yield b": keep-alive\n\n"
                last_sent = time.monotonic()
    except MaestroError as exc:  # e.g. the run disappeared: end the stream with an error frame
        yield _frame({"error": {"code": exc.code, "message": str(exc), "type": "server_error"}})
        yield b"data: [DONE]\n\n"
        return
    assert outcome is not None
    for piece in chat.text_pieces(_answer(outcome, links)):
        yield chunk({"content": piece})
    final = outcome.record
    yield chunk({}, "stop", maestro=_maestro(outcome, target, links))
    if include_usage:
        yield _frame({**base, "choices": [], "usage": _usage(final)})
    yield b"data: [DONE]\n\n"
