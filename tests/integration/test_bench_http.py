"""The ``http`` benchmark scenario works end to end: a real ``maestro serve`` process, load from a second one.

Tiny sizes (20 creations, 20 reads) on SQLite: the point is that the scenario starts the server,
gets an operator key, measures both operations without errors, sees every run complete, and that
``benchmarks.run`` renders its section. Speeds are not asserted (they belong in ``make bench``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from benchmarks.run import FULL, Outcome, http_section
from benchmarks.scenarios import RESULT_PREFIX

ROOT = Path(__file__).resolve().parents[2]


def test_http_scenario_end_to_end_on_sqlite() -> None:
    argv = [sys.executable, "-m", "benchmarks.scenarios", "http", "--db", "sqlite"]
    argv += ["--creates", "20", "--reads", "20", "--warmup", "4", "--concurrency", "4", "--timeout", "60"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    r = json.loads(line[len(RESULT_PREFIX) :])

    assert r["verify"]["ok"], r["verify"]
    assert r["verify"] == {
        "ok": True,
        "errors": 0,
        "completed": 24,  # 20 measured creations + 4 warm-up ones
        "runs": 24,
        "statuses": {"COMPLETED": 24},
        "problems": [],
        "problem_count": 0,
    }
    for op in ("create", "read"):
        p = r[op]
        assert p["requests"] == 20 and p["errors"] == 0 and p["concurrency"] == 4
        assert 0 < p["p50_ms"] <= p["p90_ms"] <= p["p99_ms"] <= p["max_ms"]
        assert p["requests_per_s"] > 0 and p["duration_s"] > 0
        assert p["server_cpu_s"] >= 0 and p["server_rss_mb"] > 0
    assert r["measured_create_ids"] == 20
    assert "maestro --database-url sqlite:///" in r["server_command"]
    assert "serve --host 127.0.0.1 --port" in r["server_command"]
    assert "MAESTRO_RATE_LIMIT_PER_MIN=0" in r["server_command"]
    assert r["timed_out"] is False
    assert "<redacted>" in r["server_log_tail"]  # the bootstrap admin key the server prints
    assert not re.search(r"am_[0-9a-f]+_[A-Za-z0-9_-]{20,}", line), "an API key leaked into the result"

    out = Outcome(name="http", db="sqlite", argv=argv, result=r)
    summary: list[str] = []
    text = "\n".join(http_section([out], FULL, summary))
    assert "## 5. HTTP load" in text
    assert "| SQLite | create | 20 | 4 |" in text and "| SQLite | read | 20 | 4 |" in text
    assert "benchmarks.scenarios http --db sqlite --creates 20" in text
    assert summary and summary[0].startswith("http SQLite (4 connections): create ")
    assert "errors 0; runs completed 24/24" in summary[0]
