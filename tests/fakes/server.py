"""Run the real AgentMaestro app under uvicorn on 127.0.0.1 in a background thread (for e2e tests)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import uvicorn

from agentmaestro.agents import AgentRegistry
from agentmaestro.engine.worker import WorkerConfig
from agentmaestro.server.app import create_app
from tests.fakes.ports import free_port, listening_socket

__all__ = ["LiveServer", "free_port"]


class LiveServer:
    """``with LiveServer(db_url, agents) as srv: httpx.get(srv.url + "/healthz")``."""

    def __init__(self, database_url: str, agents: AgentRegistry, **app_kwargs: Any) -> None:
        self.socket = listening_socket()
        self.port = int(self.socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        app_kwargs.setdefault("worker_config", WorkerConfig(poll_interval_s=0.05))
        self.app = create_app(database_url, agents=agents, **app_kwargs)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.socket]))

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.socket.close()
