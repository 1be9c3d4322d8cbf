"""Workers announce themselves while they run (a ``workers`` row refreshed on every heartbeat interval)."""

from __future__ import annotations

import asyncio

import pytest

from agentmaestro.agents import AgentRegistry
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.store.base import Store


@pytest.mark.anyio
async def test_a_running_worker_is_live_until_it_stops(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        assert await store.workers.alive() == []
        worker = Worker(store, AgentRegistry(), config=WorkerConfig(lease_ttl_s=0.6, poll_interval_s=0.05))
        dedicated = Worker(store, AgentRegistry(), run_ids={"run_x"}, config=WorkerConfig(poll_interval_s=0.05))
        tasks = [asyncio.create_task(worker.run()), asyncio.create_task(dedicated.run())]
        for _ in range(100):
            if await store.workers.alive():
                break
            await asyncio.sleep(0.02)
        [live] = await store.workers.alive()  # the dedicated worker (run_ids) does not announce itself
        assert live["owner"] == worker.owner and live["pid"] > 0 and live["concurrency"] == 100
        await asyncio.sleep(1.0)  # beats every lease/3: still live past its first lease
        [again] = await store.workers.alive()
        assert again["last_seen"] > live["last_seen"] and again["started_at"] == live["started_at"]
        worker.stop()
        dedicated.stop()
        await asyncio.gather(*tasks)
        assert await store.workers.alive() == []
        # A worker that died without a word drops out when its lease length has passed.
        await store.workers.beat(owner="w-dead", host="h", pid=1, concurrency=1, ttl=0.2)
        assert [w["owner"] for w in await store.workers.alive()] == ["w-dead"]
        await asyncio.sleep(0.3)
        assert await store.workers.alive() == []
    finally:
        await store.close()
