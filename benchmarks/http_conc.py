"""``http-conc``: runs created with ``POST /v1/runs`` on a real ``maestro serve`` and followed to their end over SSE.

``python -m benchmarks.scenarios http-conc --db sqlite|postgresql --runs 1000 --turns 5 --latency 0.05``

The server is started as a user would (``maestro --agents-dir DIR serve --concurrency RUNS``), with one
scripted agent in DIR whose ``turns`` model calls each wait ``latency`` seconds (``turns - 1`` of them call
the SAFE ``add`` tool). From this process, every run is created by ``POST /v1/runs`` with the README's
policy (``max_steps=40, max_cost_usd=100, timeout_s=600``) and, as soon as it is created, followed with
``GET /v1/runs/{id}/events`` as ``text/event-stream`` until the stream ends (the run ended). The wall time
goes from the first request to the last stream's end; the ideal is ``turns * latency``. CPU is the server
process's (API, streams and embedded worker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.http_load import (
    CLIENT_KEEPALIVE_S,
    _server_cpu_s,
    _vm_hwm_mb,
    maestro_server,
    operator_key,
    upgrade_database,
    wait_ready,
)
from benchmarks.scenarios import verify

AGENT = "conc-bench"


def write_agent(folder: Path, turns: int, latency_s: float) -> None:
    """The benchmark agent as a user writes it: a YAML agent with a scripted model and the demo's add tool."""
    script = {
        "latency_s": latency_s,
        "usage": {"input_tokens": 120, "output_tokens": 18},
        "turns": [{"tool_calls": [{"name": "add", "arguments": {"a": i, "b": 1}}]} for i in range(turns - 1)]
        + [{"content": "{{input}} -> {{last_tool_result}}"}],
    }
    (folder / "script.json").write_text(json.dumps(script), encoding="utf-8")
    (folder / f"{AGENT}.yaml").write_text(
        f"name: {AGENT}\nmodel: scripted:script.json\ninstructions: Use the tools.\n"
        "tools:\n  - agentmaestro.demo.tools:add\n",
        encoding="utf-8",
    )


def expected(task: str, turns: int) -> str:
    """The scripted answer: the last ``add`` was ``add(turns - 2, 1)``."""
    return f"{task} -> {float(turns - 1)}" if turns > 1 else f"{task} -> "


async def scenario_http_conc(args: argparse.Namespace, db: Any) -> dict[str, Any]:
    """Create ``--runs`` runs over HTTP at once and follow each over SSE to its end."""
    import httpx
    import psutil

    loadavg_before = os.getloadavg()[0]
    if not db.url.startswith("sqlite"):
        await asyncio.to_thread(upgrade_database, db.url)
    with tempfile.TemporaryDirectory(prefix="maestro_http_conc_") as agents:
        write_agent(Path(agents), args.turns, args.latency)
        with maestro_server(
            db.url, global_args=("--agents-dir", agents), serve_args=("--concurrency", str(args.runs))
        ) as server:
            await wait_ready(server)
            key = await operator_key(server)
            srv = psutil.Process(server.proc.pid)
            limits = httpx.Limits(  # idle connections dropped before uvicorn's 5 s keep-alive timeout closes them
                max_connections=args.runs, max_keepalive_connections=args.runs, keepalive_expiry=CLIENT_KEEPALIVE_S
            )
            policy = {"max_steps": 40, "max_cost_usd": 100, "timeout_s": 600}
            errors: list[str] = []
            ends: list[float] = []
            ids: dict[str, str] = {}
            phase: dict[int, str] = {}
            async with httpx.AsyncClient(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=args.timeout
            ) as client:

                async def one(i: int) -> None:
                    try:
                        await follow_one(i)
                    except httpx.HTTPError as exc:  # counted (and the first ones kept), not fatal
                        errors.append(f"run {i}: {phase.get(i)}: {type(exc).__name__}: {exc}")

                async def follow_one(i: int) -> None:
                    task = f"run {i}"
                    phase[i] = "POST /v1/runs"
                    resp = await client.post("/v1/runs", json={"agent": AGENT, "input": task, "policy": policy})
                    if resp.status_code != 201:
                        errors.append(f"POST /v1/runs: {resp.status_code} {resp.text[:200]}")
                        return
                    run_id = str(resp.json()["run_id"])
                    ids[run_id] = task
                    phase[i] = "GET /v1/runs/{id}/events"
                    async with client.stream(
                        "GET", f"/v1/runs/{run_id}/events", headers={"Accept": "text/event-stream"}
                    ) as stream:
                        if stream.status_code != 200:
                            errors.append(f"GET events: {stream.status_code}")
                            return
                        async for _line in stream.aiter_lines():
                            pass
                    ends.append(time.perf_counter())

                cpu0 = _server_cpu_s(srv)
                t0 = time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(args.runs)))
                wall = (max(ends) if ends else time.perf_counter()) - t0
                cpu = _server_cpu_s(srv) - cpu0
            peak = _vm_hwm_mb(srv.pid)
            log_tail = server.log_tail(30)
    steps_per_run = 2 * args.turns - 1
    check = verify(db.url, {rid: expected(t, args.turns) for rid, t in ids.items()}, steps_per_run)
    # Every run must have completed (checked in the database); a stream cut before its end is reported
    # apart (``stream_errors``), as what the followers saw.
    steps = check["step_rows"]
    ideal = args.turns * args.latency
    return {
        "runs": args.runs,
        "turns": args.turns,
        "steps_per_run": steps_per_run,
        "latency_s": args.latency,
        "wall_s": wall,
        "ideal_s": ideal,
        "ratio": wall / ideal if ideal else 0.0,
        "steps": steps,
        "steps_per_s": steps / wall if wall > 0 else 0.0,
        "cpu_s": cpu,
        "cpu_ms_per_step": cpu * 1000.0 / steps if steps else 0.0,
        "peak_rss_mb": peak,
        "loadavg_before": loadavg_before,
        "stream_errors": len(errors),
        "stream_error_examples": errors[:5],
        "server_log_tail": log_tail if errors else "",
        "verify": check,
    }
