"""A model that cannot be used (no API key, local server down, model not pulled) is refused before a run starts
in-process or on a server with a worker; a worker that meets one mid-run fails the run with a clear error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from agentmaestro import Agent, ConfigError, EventType, Orchestrator, RunStatus
from agentmaestro.agents import AgentRegistry, check_usable
from agentmaestro.engine.worker import WorkerConfig
from agentmaestro.errors import ModelUnavailableError
from agentmaestro.store.base import Store
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.ports import free_port
from tests.fakes.server import LiveServer

KEY_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OLLAMA_BASE_URL")


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEY_VARS:
        monkeypatch.delenv(name, raising=False)


def openai_agent() -> Agent:
    return Agent(name="calc", model="openai:gpt-4.1-mini", instructions="Add.")


def test_sdk_refuses_a_model_without_key_and_stores_nothing(db_url: str) -> None:
    with Orchestrator(database_url=db_url) as orch:
        with pytest.raises(ConfigError, match="agent 'calc' cannot run here: no API key .* set OPENAI_API_KEY"):
            orch.run(openai_agent(), "2+3?")
        with pytest.raises(ModelUnavailableError, match="ANTHROPIC_API_KEY"):
            orch.start(Agent(name="claude", model="anthropic:claude-sonnet-4-5"), "hi")
        assert asyncio.run(_count_runs(db_url)) == 0


async def _count_runs(db_url: str) -> int:
    store = Store.open(db_url)
    try:
        return len(await store.runs.page(workspace_id="default", limit=100))
    finally:
        await store.close()


def test_a_worker_without_the_key_fails_the_run_clearly(db_url: str) -> None:
    with Orchestrator(database_url=db_url, worker=False) as queue:
        run_id = queue.start(openai_agent(), "2+3?")  # queued for workers elsewhere: no check here
    with Orchestrator(database_url=db_url, config=WorkerConfig(poll_interval_s=0.05)) as orch:
        orch.register(openai_agent())
        report = orch.wait(run_id, timeout=20)
        events = orch.events(run_id)
    assert report.status is RunStatus.FAILED
    [failed] = [e for e in events if e.type is EventType.RUN_FAILED]
    error = failed.payload["error"]
    assert error.startswith("model 'openai:gpt-4.1-mini' cannot be used by this worker: no API key"), error
    assert "OPENAI_API_KEY" in error and "internal error" not in error
    assert [e.type for e in events][-2:] == [EventType.STEP_FAILED, EventType.RUN_FAILED]


def test_local_servers_are_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    down = f"http://127.0.0.1:{free_port()}/v1"
    monkeypatch.setenv("OLLAMA_BASE_URL", down)
    agent = Agent(name="local", model="ollama:llama3.2")
    with pytest.raises(ModelUnavailableError, match=f"server at {down} does not answer .*set OLLAMA_BASE_URL to"):
        asyncio.run(check_usable([agent]))
    with FakeOpenAIServer(model="llama3.2") as fake:
        monkeypatch.setenv("OLLAMA_BASE_URL", fake.base_url)
        asyncio.run(check_usable([agent]))  # llama3.2:latest is served
        with pytest.raises(ModelUnavailableError, match="has no model 'qwen3' .*llama3.2:latest.*pull it"):
            asyncio.run(check_usable([Agent(name="other", model="ollama:qwen3")]))
        # Any other OpenAI-compatible local server (llama.cpp, vLLM) serves whatever it loaded: up is enough.
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        asyncio.run(check_usable([Agent(name="llamacpp", model="openai:whatever-name")]))


@pytest.fixture
def live(db_url: str) -> Iterator[tuple[LiveServer, str]]:
    async def key() -> str:
        store = Store.open(db_url)
        try:
            await store.workspaces.ensure("default")
            return (await store.keys.create("default", name="op", role="operator"))[1]
        finally:
            await store.close()

    api_key = asyncio.run(key())
    with LiveServer(db_url, AgentRegistry([openai_agent()])) as srv:
        yield srv, api_key


def test_server_with_a_worker_answers_400(live: tuple[LiveServer, str]) -> None:
    srv, key = live
    headers = {"Authorization": f"Bearer {key}"}
    r = httpx.post(f"{srv.url}/v1/runs", json={"agent": "calc", "input": "2+3?"}, headers=headers, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "model_unavailable"
    assert "no API key for model 'openai:gpt-4.1-mini'" in r.json()["error"]["message"]
    assert httpx.get(f"{srv.url}/v1/runs", headers=headers, timeout=10).json()["runs"] == []
