"""The OpenAI-compatible chat endpoint, driven by the official ``openai`` SDK against a real server.

The demo agents use scripted models, so every answer is deterministic; every test runs on SQLite and
on PostgreSQL (the chat request is a durable run in the store).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from agentmaestro.agents import Agent, AgentRegistry, load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from agentmaestro.cli.workflows import builtin_workflows_dir
from agentmaestro.engine.deltas import BUS
from agentmaestro.models.openai import OpenAIModel
from agentmaestro.server.chat.conversation import build_input, select_target, split_conversation, text_pieces
from agentmaestro.server.chat.tool_agent import TOOL_AGENT_PREFIX
from agentmaestro.store.base import Store
from agentmaestro.workflows.spec import load_workflows_dir
from tests.e2e.test_server import auth, wait_status
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.server import LiveServer

ROLES = ("viewer", "operator")
SLOW_SCRIPT = "latency_s: 1.0\nturns:\n  - content: slow answer\n"
SLOW_AGENT = "name: sloth\nmodel: scripted:../scripts/sloth.yaml\ninstructions: Take your time.\n"
FAILING_SCRIPT = "turns:\n  - error: the provider is down\n"
FAILING_AGENT = "name: fumbler\nmodel: scripted:../scripts/fumbler.yaml\nretry: {max_attempts: 1, backoff_s: 0}\n"


class Chat:
    """A live server, keys for it, and OpenAI clients pointed at it."""

    def __init__(self, srv: LiveServer, keys: dict[str, str]) -> None:
        self.srv = srv
        self.keys = keys
        self.client = openai.OpenAI(base_url=srv.url + "/v1", api_key=keys["operator"], max_retries=0, timeout=30)
        self.http = httpx.Client(base_url=srv.url, timeout=30)

    def run(self, run_id: str) -> dict[str, object]:
        r = self.http.get(f"/v1/runs/{run_id}", headers=auth(self.keys["viewer"]))
        assert r.status_code == 200, r.text
        body: dict[str, object] = r.json()
        return body


async def _make_keys(url: str) -> dict[str, str]:
    store = Store.open(url)
    try:
        await store.workspaces.ensure("default")
        return {role: (await store.keys.create("default", name=f"default-{role}", role=role))[1] for role in ROLES}
    finally:
        await store.close()


@pytest.fixture
def chat(db_url: str, tmp_path: Path) -> Iterator[Chat]:
    keys = asyncio.run(_make_keys(db_url))
    agents_dir = tmp_path / "agents"
    agents_dir.mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "sloth.yaml").write_text(SLOW_SCRIPT)
    (agents_dir / "sloth.yaml").write_text(SLOW_AGENT)
    (tmp_path / "scripts" / "fumbler.yaml").write_text(FAILING_SCRIPT)
    (agents_dir / "fumbler.yaml").write_text(FAILING_AGENT)
    agents = load_agents_dir(builtin_agents_dir())
    for extra in load_agents_dir(agents_dir):
        agents.register(extra)
    workflows = load_workflows_dir(builtin_workflows_dir(), agents)
    with LiveServer(db_url, agents, workflow_registry=workflows, rate_limit_per_min=0) as srv:
        c = Chat(srv, keys)
        try:
            yield c
        finally:
            c.http.close()
            c.client.close()


def test_models_and_a_plain_completion(chat: Chat) -> None:
    ids = [m.id for m in chat.client.models.list()]
    assert {"agent:calculator", "agent:janitor", "agent:wordsmith", "workflow:tidy-and-report"} <= set(ids)
    assert not [i for i in ids if TOOL_AGENT_PREFIX in i]
    assert chat.client.models.retrieve("calculator").id == "agent:calculator"
    assert chat.client.models.retrieve("workflow:tidy-and-report").owned_by == "agentmaestro"

    done = chat.client.chat.completions.create(
        model="agent:calculator", messages=[{"role": "user", "content": "What is (2 + 3) * 4?"}]
    )
    extra = done.model_extra or {}
    run_id = extra["maestro"]["run_id"]
    assert done.id == f"chatcmpl-{run_id}" and done.object == "chat.completion"
    assert done.model == "agent:calculator"
    [choice] = done.choices
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    run = chat.run(run_id)
    assert run["status"] == "COMPLETED" and choice.message.content == run["output"] and "20" in str(run["output"])
    assert done.usage is not None and done.usage.total_tokens == run["tokens"] and done.usage.prompt_tokens > 0
    assert extra["maestro"]["status"] == "COMPLETED" and extra["maestro"]["finished"] is True
    assert extra["maestro"]["dashboard_url"] == f"{chat.srv.url}/#/runs/{run_id}"
    assert run["input"] == "What is (2 + 3) * 4?"  # a lone message is the run's input as it is
    assert run["created_by"] == "key:default-operator"
    listed = chat.http.get("/v1/runs", params={"agent": "calculator"}, headers=auth(chat.keys["viewer"])).json()
    assert run_id in [r["run_id"] for r in listed["runs"]]


def test_streaming_completion(chat: Chat) -> None:
    stream = chat.client.chat.completions.create(
        model="calculator",
        messages=[{"role": "user", "content": "What is (2 + 3) * 4?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    run_id = chunks[0].id.removeprefix("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" and c.id == f"chatcmpl-{run_id}" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    run = chat.run(run_id)
    assert run["status"] == "COMPLETED" and text == run["output"]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    events = [(c.model_extra or {}).get("maestro", {}).get("event") for c in chunks if c.choices]
    assert "STEP_COMPLETED" in events and "RUN_COMPLETED" in events  # frames followed the run's events live
    progress = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks if c.choices
    )
    assert "Tool `add` " in progress and "Model scripted:calculator asks for `add`." in progress
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == run["tokens"]

    # on the wire: the stream ends with the [DONE] sentinel
    body = {"model": "wordsmith", "messages": [{"role": "user", "content": "one two three"}], "stream": True}
    with chat.http.stream("POST", "/v1/chat/completions", json=body, headers=auth(chat.keys["operator"])) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2][6:])
    assert last["choices"][0]["finish_reason"] == "stop" and last["maestro"]["status"] == "COMPLETED"


def test_inline_agent_history_and_instructions(chat: Chat) -> None:
    done = chat.client.chat.completions.create(
        model="agent:calculator",
        messages=[
            {"role": "system", "content": "Answer in one line."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "Hi! What shall I count?"},
            {"role": "user", "content": [{"type": "text", "text": "@agent wordsmith count these four words"}]},
        ],
    )
    maestro = (done.model_extra or {})["maestro"]
    assert done.model == "agent:wordsmith" and maestro["target"] == "agent:wordsmith"
    run = chat.run(maestro["run_id"])
    assert run["agent"] == "wordsmith" and run["status"] == "COMPLETED"
    assert done.choices[0].message.content == run["output"]
    task = str(run["input"])
    assert "[Instructions from the chat client]\nAnswer in one line." in task
    assert "user: hello\nassistant: Hi! What shall I count?" in task
    assert task.endswith("[Current message]\ncount these four words")


def test_tool_command_is_a_governed_run(chat: Chat) -> None:
    done = chat.client.chat.completions.create(
        model="agent:wordsmith", messages=[{"role": "user", "content": '@tool add {"a": 2, "b": 3}'}]
    )
    maestro = (done.model_extra or {})["maestro"]
    assert maestro["target"] == "tool:add" and maestro["status"] == "COMPLETED"
    assert done.choices[0].message.content == "5.0"
    run = chat.run(maestro["run_id"])
    assert run["agent"] == "chat-tool.add" and run["tool_calls"] == 1
    events = chat.http.get(f"/v1/runs/{maestro['run_id']}/events", headers=auth(chat.keys["viewer"])).json()
    steps = [e["payload"] for e in events["events"] if e["type"] == "STEP_COMPLETED"]
    assert [(s["kind"], s.get("name")) for s in steps if s["kind"] == "TOOL_CALL"] == [("TOOL_CALL", "add")]

    # A DANGEROUS tool passes the gate like any call: held for approval, then run once approved.
    held = chat.client.chat.completions.create(
        model="agent:calculator", messages=[{"role": "user", "content": '@tool purge_logs {"older_than_days": 7}'}]
    )
    maestro = (held.model_extra or {})["maestro"]
    assert maestro["status"] == "WAITING_FOR_APPROVAL"
    [pending] = maestro["pending"]
    assert pending["tool"] == "purge_logs" and pending["risk"] == "DANGEROUS"
    assert pending["arguments"] == {"older_than_days": 7}
    text = held.choices[0].message.content or ""
    assert pending["id"] in text and f"{chat.srv.url}/#/queue" in text and "DANGEROUS" in text
    decided = chat.http.post(
        f"/v1/approvals/{pending['id']}", json={"decision": "approve"}, headers=auth(chat.keys["operator"])
    )
    assert decided.status_code == 200, decided.text
    finished = wait_status(chat.http, maestro["run_id"], chat.keys["viewer"], {"COMPLETED"})
    assert finished["output"] == "purged 12 log files older than 7 days"


def test_run_waiting_for_approval_says_so(chat: Chat) -> None:
    held = chat.client.chat.completions.create(
        model="janitor", messages=[{"role": "user", "content": "Tidy the disk."}]
    )
    maestro = (held.model_extra or {})["maestro"]
    run_id = maestro["run_id"]
    assert maestro["status"] == "WAITING_FOR_APPROVAL" and maestro["finished"] is False
    assert chat.run(run_id)["status"] == "WAITING_FOR_APPROVAL"
    approvals = chat.http.get("/v1/approvals", headers=auth(chat.keys["viewer"])).json()["approvals"]
    [approval] = [a for a in approvals if a["run_id"] == run_id]
    assert approval["status"] == "pending"
    [pending] = maestro["pending"]
    assert pending["kind"] == "approval" and pending["id"] == approval["approval_id"]
    text = held.choices[0].message.content or ""
    assert "`purge_logs`" in text and "risk DANGEROUS" in text and "Reason: " in text
    assert approval["approval_id"] in text
    assert f"{chat.srv.url}/#/queue" in text and f"{chat.srv.url}/#/runs/{run_id}" in text
    assert held.choices[0].finish_reason == "stop"

    # the same through a workflow: its janitor node's approval is reported from the sub-run
    flow = chat.client.chat.completions.create(
        model="agent:calculator", messages=[{"role": "user", "content": "@flow tidy-and-report a short note"}]
    )
    maestro = (flow.model_extra or {})["maestro"]
    assert maestro["target"] == "workflow:tidy-and-report" and maestro["status"] == "WAITING_FOR_CHILDREN"
    assert chat.run(maestro["run_id"])["created_by"] == "key:default-operator"
    [pending] = maestro["pending"]
    assert pending["tool"] == "purge_logs" and pending["run_id"] != maestro["run_id"]
    assert "in sub-run" in (flow.choices[0].message.content or "")

    # streamed: the same notice arrives as content deltas, then the finish frame
    chunks = list(
        chat.client.chat.completions.create(
            model="janitor", messages=[{"role": "user", "content": "Tidy again."}], stream=True
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    run_id = chunks[0].id.removeprefix("chatcmpl-")
    assert "waiting for approval" in streamed and "`purge_logs`" in streamed and f"#/runs/{run_id}" in streamed
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert (chunks[-1].model_extra or {})["maestro"]["status"] == "WAITING_FOR_APPROVAL"


def test_run_waiting_for_a_person_says_so(chat: Chat) -> None:
    stuck = chat.client.chat.completions.create(model="fumbler", messages=[{"role": "user", "content": "try"}])
    maestro = (stuck.model_extra or {})["maestro"]
    assert maestro["status"] == "WAITING_FOR_HUMAN"
    [pending] = maestro["pending"]
    requests = chat.http.get("/v1/human-requests", headers=auth(chat.keys["viewer"])).json()["human_requests"]
    assert pending["kind"] == "human" and pending["id"] in [r["request_id"] for r in requests]
    text = stuck.choices[0].message.content or ""
    assert "waiting for a person" in text and pending["id"] in text and f"{chat.srv.url}/#/queue" in text


def test_max_wait_answers_with_the_run_so_far(chat: Chat, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAESTRO_CHAT_MAX_WAIT_S", "0.2")
    monkeypatch.setenv("MAESTRO_PUBLIC_URL", "https://maestro.example.com/")
    slow = chat.client.chat.completions.create(model="sloth", messages=[{"role": "user", "content": "hurry"}])
    maestro = (slow.model_extra or {})["maestro"]
    assert maestro["status"] in ("PENDING", "RUNNING") and maestro["finished"] is False
    text = slow.choices[0].message.content or ""
    assert "is still" in text and f"https://maestro.example.com/#/runs/{maestro['run_id']}" in text
    assert wait_status(chat.http, maestro["run_id"], chat.keys["viewer"], {"COMPLETED"})["output"] == "slow answer"


def test_errors_in_openai_shapes(chat: Chat) -> None:
    user = [{"role": "user", "content": "hi"}]
    wrong = openai.OpenAI(base_url=chat.srv.url + "/v1", api_key="am_nope_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth_err:
        wrong.chat.completions.create(model="calculator", messages=user)  # type: ignore[arg-type]
    assert auth_err.value.status_code == 401 and auth_err.value.code == "unauthenticated"
    assert auth_err.value.type == "authentication_error" and auth_err.value.param is None
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    viewer = openai.OpenAI(base_url=chat.srv.url + "/v1", api_key=chat.keys["viewer"], max_retries=0)
    assert viewer.models.list().data  # viewers may list
    with pytest.raises(openai.PermissionDeniedError) as denied:
        viewer.chat.completions.create(model="calculator", messages=user)  # type: ignore[arg-type]
    assert denied.value.type == "permission_error" and denied.value.code == "forbidden"

    with pytest.raises(openai.NotFoundError) as missing:
        chat.client.chat.completions.create(model="agent:nobody", messages=user)  # type: ignore[arg-type]
    assert missing.value.code == "model_not_found" and "agent:calculator" in missing.value.message
    assert missing.value.type == "invalid_request_error" and missing.value.param == "model"
    for model in ("workflow:nothing", "nobody"):
        with pytest.raises(openai.NotFoundError):
            chat.client.models.retrieve(model)
    with pytest.raises(openai.NotFoundError):
        chat.client.chat.completions.create(
            model="calculator", messages=[{"role": "user", "content": "@tool no_such_tool {}"}]
        )
    with pytest.raises(openai.NotFoundError):
        chat.client.chat.completions.create(
            model="calculator", messages=[{"role": "user", "content": "@tool delegate {}"}]
        )
    with pytest.raises(openai.NotFoundError):  # the single-tool agents are not chat targets themselves
        chat.client.chat.completions.create(
            model=f"{TOOL_AGENT_PREFIX}add", messages=[{"role": "user", "content": "{}"}]
        )
    for bad in ("@tool add [1, 2]", "@agent", "@tool add {nope", '@tool add {"a": "\\u0000", "b": 1}'):
        with pytest.raises(openai.BadRequestError) as bad_err:
            chat.client.chat.completions.create(model="calculator", messages=[{"role": "user", "content": bad}])
        assert bad_err.value.code == "invalid_request" and bad_err.value.type == "invalid_request_error"
        assert bad_err.value.param == "messages"
    with pytest.raises(openai.BadRequestError):
        chat.client.chat.completions.create(model="calculator", messages=[{"role": "system", "content": "no user"}])
    image = [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]
    with pytest.raises(openai.BadRequestError):
        chat.client.chat.completions.create(model="calculator", messages=[{"role": "user", "content": image}])  # type: ignore[list-item, misc]

    # invalid parameters: 400 as OpenAI answers, with the parameter named (the SDK's e.param)
    with pytest.raises(openai.BadRequestError) as two:
        chat.client.chat.completions.create(model="calculator", messages=user, n=2)  # type: ignore[arg-type]
    assert (two.value.status_code, two.value.type, two.value.param, two.value.code) == (
        400,
        "invalid_request_error",
        "n",
        "invalid_request",
    )
    op = auth(chat.keys["operator"])
    for body, param in (
        ({}, "model"),
        ({"model": "calculator"}, "messages"),
        ({"model": "calculator", "messages": []}, "messages"),
        ({"model": 3, "messages": user}, "model"),
        ({"model": "calculator", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ):
        r = chat.http.post("/v1/chat/completions", json=body, headers=op)
        assert r.status_code == 400, (body, r.text)
        assert r.json() == {
            "error": {
                "code": "invalid_request",
                "message": r.json()["error"]["message"],
                "type": "invalid_request_error",
                "param": param,
            }
        }, body
    r = chat.http.post("/v1/chat/completions", content=b"{not json", headers={**op, "Content-Type": "application/json"})
    assert r.status_code == 400 and set(r.json()["error"]) == {"code", "message", "type", "param"}
    # the rest of the API keeps its own shape
    r = chat.http.post("/v1/runs", json={"agent": 3}, headers=op)
    assert r.status_code == 422 and set(r.json()["error"]) == {"code", "message"}


def test_conversation_helpers() -> None:
    """The pure parts: target selection, the run input, answer pieces."""
    assert select_target("workflow:w", "hi").model_id == "workflow:w"
    assert select_target("flow:w", "hi").model_id == "workflow:w"
    assert select_target("plain", "hi").model_id == "agent:plain"
    t = select_target("agent:a", "  @flow build   make it\nnow")
    assert (t.kind, t.name, t.text, t.inline) == ("workflow", "build", "make it\nnow", True)
    t = select_target("agent:a", '@tool x {"k": [1]}')
    assert (t.kind, t.arguments, json.loads(t.text)) == ("tool", {"k": [1]}, {"k": [1]})
    assert select_target("agent:a", "@tool x").arguments == {}
    assert select_target("agent:a", "email me @agent x").model_id == "agent:a"  # only a leading command counts
    from agentmaestro.server.chat.conversation import Turn

    turns = [Turn(role="user", text=f"message {i} " + "x" * 50) for i in range(100)] + [Turn(role="user", text="now")]
    system, history, current = split_conversation(turns)
    task = build_input(system, history, current, limit=2000)
    assert len(task) <= 2000 and task.endswith("[Current message]\nnow") and "earlier message(s) left out" in task
    assert "message 99" in task and "message 0 " not in task
    text = "a few words that are cut into pieces " * 10
    assert "".join(text_pieces(text, 16)) == text and max(map(len, text_pieces(text, 16))) <= 16


LIVE_ANSWER = "Durable agents stream their answers, one small piece at a time."


def test_streamed_answer_shows_live_model_text(db_url: str) -> None:
    """A model that streams (OpenAI adapter): its text arrives live as reasoning, then the answer as content."""
    with FakeOpenAIServer(model="gpt-4.1-mini", chunk_chars=4, chunk_delay_s=0.01) as fake:
        model = OpenAIModel("gpt-4.1-mini", base_url=fake.base_url, api_key="sk-test-123456789", max_retries=0)
        agents = AgentRegistry([Agent(name="streamer", model=model, instructions="Answer.")])
        key = asyncio.run(_make_keys(db_url))["operator"]
        fake.reply_text(LIVE_ANSWER, usage=(12, 14), delay_s=60)  # held until released below
        with (
            LiveServer(db_url, agents, rate_limit_per_min=0) as srv,
            openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0, timeout=30) as client,
        ):
            stream = client.chat.completions.create(
                model="streamer", messages=[{"role": "user", "content": "go"}], stream=True
            )
            chunks: list[ChatCompletionChunk] = []
            for chunk in stream:
                if not chunks:  # the run exists: let the model answer once the chat stream listens to it
                    run_id = chunk.id.removeprefix("chatcmpl-")
                    deadline = time.monotonic() + 20
                    while BUS.subscribers(run_id) == 0 or not fake.requests:
                        assert time.monotonic() < deadline, "the chat stream never subscribed to the run's deltas"
                        time.sleep(0.01)
                    fake.reset()
                chunks.append(chunk)
    reasoning = [(c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks if c.choices]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == LIVE_ANSWER
    first_content = next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content)
    live = "".join(reasoning[:first_content])
    assert LIVE_ANSWER[:20] in live, live  # the text arrived piece by piece before the answer
    assert sum(1 for r in reasoning if r and r in LIVE_ANSWER) >= 3
    assert "\nModel openai:gpt-4.1-mini answered.\n" in live


def test_tool_command_needs_the_embedded_worker(db_url: str) -> None:
    key = asyncio.run(_make_keys(db_url))["operator"]
    with (
        LiveServer(db_url, load_agents_dir(builtin_agents_dir()), worker=False) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0) as client,
    ):
        with pytest.raises(openai.ConflictError) as err:
            client.chat.completions.create(model="calculator", messages=[{"role": "user", "content": "@tool add {}"}])
        assert err.value.code == "no_worker"


def test_tool_agents_are_visible_only_to_the_workspace_that_asked(chat: Chat, db_url: str) -> None:
    other = asyncio.run(_other_workspace_key(db_url))
    done = chat.client.chat.completions.create(
        model="agent:wordsmith", messages=[{"role": "user", "content": '@tool add {"a": 1, "b": 1}'}]
    )
    assert (done.model_extra or {})["maestro"]["status"] == "COMPLETED"
    name = f"{TOOL_AGENT_PREFIX}add"
    mine = chat.http.get("/v1/agents", headers=auth(chat.keys["viewer"])).json()
    assert name in [a["name"] for a in mine]

    theirs = chat.http.get("/v1/agents", headers=auth(other))
    assert theirs.status_code == 200 and name not in [a["name"] for a in theirs.json()]
    assert chat.http.get(f"/v1/agents/{name}", headers=auth(other)).status_code == 404
    tools = chat.http.get("/v1/tools", headers=auth(other)).json()
    assert not [t for t in tools if name in t["agents"]]
    started = chat.http.post("/v1/runs", json={"agent": name, "input": "{}"}, headers=auth(other))
    assert started.status_code == 404 and name not in started.json()["error"]["message"].split("known agents:")[1]
    chosen = chat.http.post(
        "/v1/chat/completions",
        json={"model": f"agent:{name}", "messages": [{"role": "user", "content": "hi"}]},
        headers=auth(other),
    )
    assert chosen.status_code == 404

    # The other workspace may ask for the tool itself: then it sees its own registration.
    own = chat.http.post(
        "/v1/chat/completions",
        json={"model": "agent:wordsmith", "messages": [{"role": "user", "content": '@tool add {"a": 2, "b": 2}'}]},
        headers=auth(other),
    )
    assert own.status_code == 200 and own.json()["choices"][0]["message"]["content"] == "4.0"
    assert name in [a["name"] for a in chat.http.get("/v1/agents", headers=auth(other)).json()]


async def _other_workspace_key(url: str) -> str:
    store = Store.open(url)
    try:
        await store.workspaces.ensure("other")
        return (await store.keys.create("other", name="other-operator", role="operator"))[1]
    finally:
        await store.close()
