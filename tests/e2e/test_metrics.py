"""/metrics: HTTP requests by route template, process figures, no ``*_created`` series; and the Grafana
dashboard in docs/ names only metrics the server exposes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentmaestro.agents import load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from tests.e2e.test_server import auth, make_key, wait_status
from tests.fakes.server import LiveServer

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "agentmaestro.json"
_METRIC = re.compile(r"\b((?:maestro|process|python)_[a-z0-9_]+)\b")


@pytest.fixture
def scraped(db_url: str) -> Iterator[tuple[str, dict[str, float]]]:
    """The server's /metrics text after a little traffic, and its samples by name-and-labels."""
    key = make_key(db_url, "default", "operator")
    with LiveServer(db_url, load_agents_dir(builtin_agents_dir())) as srv, httpx.Client(base_url=srv.url) as c:
        run = c.post("/v1/runs", json={"agent": "calculator", "input": "(2 + 3) * 4"}, headers=auth(key)).json()
        wait_status(c, run["run_id"], key, {"COMPLETED"})
        assert c.get("/v1/runs/run_nope", headers=auth(key)).status_code == 404
        assert c.get("/no/such/path/123").status_code == 404
        assert c.get("/healthz").status_code == 200
        text = c.get("/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    yield text, samples


def test_http_and_process_metrics_without_created_series(scraped: tuple[str, dict[str, float]]) -> None:
    text, samples = scraped
    assert samples['maestro_http_requests_total{method="POST",route="/v1/runs",status="201"}'] == 1
    assert samples['maestro_http_requests_total{method="GET",route="/v1/runs/{run_id}",status="404"}'] == 1
    assert samples['maestro_http_requests_total{method="GET",route="unmatched",status="404"}'] == 1
    assert samples['maestro_http_requests_total{method="GET",route="/healthz",status="200"}'] == 1
    assert not any("run_nope" in name or "/no/such" in name for name in samples)  # route templates only
    polls = samples['maestro_http_request_duration_seconds_count{method="GET",route="/v1/runs/{run_id}"}']
    assert polls >= 2  # wait_status polled, then the 404
    assert samples['maestro_http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/v1/runs"}'] == 1
    assert samples["maestro_http_requests_in_flight"] == 1  # the /metrics request itself
    assert samples["process_resident_memory_bytes"] > 10_000_000
    assert samples["process_cpu_seconds_total"] > 0 and samples["process_open_fds"] > 3
    assert "_created" not in text


def test_the_grafana_dashboard_names_only_exposed_metrics(scraped: tuple[str, dict[str, float]]) -> None:
    _, samples = scraped
    exposed = {name.split("{")[0] for name in samples}
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    assert len(exprs) >= 20
    named = {m for expr in exprs for m in _METRIC.findall(expr)}
    assert {"maestro_http_requests_total", "maestro_http_request_duration_seconds_bucket"} <= named
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} <= named
    assert sorted(named - exposed) == []
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "agentmaestro"
