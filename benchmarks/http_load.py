"""HTTP load on a real ``maestro serve`` process: ``python -m benchmarks.scenarios http --db sqlite|postgresql``.

The scenario starts the server as a separate process on 127.0.0.1 (its own interpreter, embedded
worker on, per-key rate limit off, ``MAESTRO_HOME`` in a temporary directory), waits for
``/readyz``, creates an operator API key through the API with the admin key the server
bootstraps on first start, and then this process (the load generator: one asyncio event loop,
``httpx.AsyncClient`` with ``--concurrency`` keep-alive connections) measures two operations, each
after a warm-up that is not counted:

1. ``POST /v1/runs`` of the built-in ``calculator`` demo agent (scripted model, 5 steps); the
   server's embedded worker executes the runs while the load goes on.
2. ``GET /v1/runs/{id}`` of the runs created in (1) (round robin), once the embedded worker has
   finished them all (the wait, at most ``--timeout`` s, is reported as ``drain_s``).

Per operation: requests, concurrency, duration, requests/s, latency p50/p90/p99/max (ms, from
just before the request is sent until its body has been read), errors (any non-2xx answer or
transport error is one), and the server process's CPU time and RSS (psutil). At the end the
scenario checks, in the database, that every created run COMPLETED with the demo's answer and 5
steps. ``verify.ok`` requires zero errors and every run completed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AGENT = "calculator"
TASK = "What is (2 + 3) * 4?"
EXPECTED_OUTPUT = "(2 + 3) * 4 = 20.0 (answer replayed by the scripted demo model)"
STEPS_PER_RUN = 5
"""The scripted calculator: 3 model calls (add, multiply, answer) + 2 tool calls."""
BOOTSTRAP_KEY_FILE = "bootstrap-admin.key"
"""Where ``maestro serve`` saves the admin key it creates on a fresh database (under ``$MAESTRO_HOME``)."""
_API_KEY_RE = re.compile(r"\b(am_[0-9a-f]+_)[A-Za-z0-9_-]+")
"""An API key (``am_<key id>_<secret>``); the server prints its bootstrap admin key."""
CLIENT_KEEPALIVE_S = 2.0
"""The load generator drops connections idle this long: well under uvicorn's 5 s keep-alive timeout, so
that it never sends a request on a connection the server is closing at that very moment."""
READY_TIMEOUT_S = 120.0
"""Start-up allowance for the server (imports and migrations; slow on a busy 2-core machine)."""


# ----------------------------------------------------------------------------------- server


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def maestro_executable() -> str:
    """The ``maestro`` entry point next to this interpreter (``.venv/bin/maestro``)."""
    path = Path(sys.executable).parent / "maestro"
    if not path.is_file():
        raise SystemExit(f"cannot find the maestro command at {path}; install the project (make setup)")
    return str(path)


def server_env(home: str) -> dict[str, str]:
    """The server's environment: ours without any ``MAESTRO_*`` setting, plus the benchmark's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # cached bytecode: a much faster start
    env["MAESTRO_HOME"] = home
    env["MAESTRO_RATE_LIMIT_PER_MIN"] = "0"  # the per-key limit (600/min) would answer 429s
    return env


@dataclass
class ServerProcess:
    """A ``maestro serve`` child process and what it printed."""

    argv: list[str]
    proc: subprocess.Popen[bytes]
    log_path: str
    home: str
    url: str

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the server printed, API keys redacted."""
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""
        return _API_KEY_RE.sub(r"\1<redacted>", "\n".join(text.strip().splitlines()[-lines:]))

    def stop(self) -> int | None:
        """SIGTERM (graceful: the embedded worker releases its leases), then SIGKILL after 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def upgrade_database(database_url: str) -> float:
    """``maestro --database-url URL db upgrade`` (``serve`` migrates only SQLite by itself); returns seconds."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="maestro_http_bench_") as home:
        proc = subprocess.run(
            [maestro_executable(), "--database-url", database_url, "db", "upgrade"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=server_env(home),
            timeout=READY_TIMEOUT_S,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"maestro db upgrade failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return time.perf_counter() - t0


@contextlib.contextmanager
def maestro_server(
    database_url: str, port: int | None = None, *, global_args: tuple[str, ...] = (), serve_args: tuple[str, ...] = ()
) -> Iterator[ServerProcess]:
    """Start ``maestro --database-url URL [GLOBAL_ARGS] serve [SERVE_ARGS]`` on 127.0.0.1; stop it on exit."""
    with tempfile.TemporaryDirectory(prefix="maestro_http_bench_") as tmp:
        home = os.path.join(tmp, "home")
        os.mkdir(home)
        port = port or free_port()
        argv = [
            maestro_executable(),
            "--database-url",
            database_url,
            *global_args,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *serve_args,
        ]
        log_path = os.path.join(tmp, "server.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=server_env(home))
        server = ServerProcess(argv=argv, proc=proc, log_path=log_path, home=home, url=f"http://127.0.0.1:{port}")
        try:
            yield server
        finally:
            server.stop()


async def wait_ready(server: ServerProcess, timeout_s: float = READY_TIMEOUT_S) -> float:
    """Poll ``/readyz`` until it answers 200; returns the seconds since the process started."""
    import httpx

    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as client:
        while True:
            if server.proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {server.proc.returncode}:\n{server.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout_s:
                raise RuntimeError(f"the server was not ready after {timeout_s:.0f}s:\n{server.log_tail()}")
            await asyncio.sleep(0.1)


async def operator_key(server: ServerProcess) -> str:
    """An operator key, created through ``POST /v1/keys`` with the server's bootstrap admin key."""
    import httpx

    path = Path(server.home) / BOOTSTRAP_KEY_FILE
    if not path.is_file():
        raise RuntimeError(f"the server did not save a bootstrap admin key in {path}:\n{server.log_tail()}")
    admin = path.read_text().strip()
    async with httpx.AsyncClient(base_url=server.url, timeout=30.0) as client:
        resp = await client.post(
            "/v1/keys", json={"name": "bench-http", "role": "operator"}, headers={"Authorization": f"Bearer {admin}"}
        )
    if resp.status_code != 201:
        raise RuntimeError(f"POST /v1/keys answered {resp.status_code}: {resp.text[:300]}")
    return str(resp.json()["key"])


# ------------------------------------------------------------------------------------ load


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an ascending list; 0 for an empty one."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Phase:
    """The measured requests of one operation."""

    name: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    server_rss_mb: float = 0.0
    started: float = 0.0
    slowest: tuple[float, float, int] = (0.0, 0.0, -1)
    """(latency ms, when it was sent in s since the phase began, request index)."""

    def record(self, i: int, sent: float, elapsed_ms: float) -> None:
        self.latencies_ms.append(elapsed_ms)
        if elapsed_ms > self.slowest[0]:
            self.slowest = (elapsed_ms, sent - self.started, i)

    def record_error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text[:300])

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        n = len(lat)
        return {
            "requests": n,
            "concurrency": self.concurrency,
            "duration_s": self.duration_s,
            "requests_per_s": n / self.duration_s if self.duration_s > 0 else 0.0,
            "p50_ms": percentile(lat, 50),
            "p90_ms": percentile(lat, 90),
            "p99_ms": percentile(lat, 99),
            "max_ms": lat[-1] if lat else 0.0,
            "max_sent_at_s": self.slowest[1],
            "max_request": self.slowest[2],
            "mean_ms": sum(lat) / n if n else 0.0,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "client_cpu_s": self.client_cpu_s,
            "client_cpu_ms_per_request": self.client_cpu_s * 1000.0 / n if n else 0.0,
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_ms_per_request": self.server_cpu_s * 1000.0 / n if n else 0.0,
            "server_rss_mb": self.server_rss_mb,
        }


Request = Callable[[int], Awaitable[Any]]
"""Sends the i-th request of a phase and returns the ``httpx.Response``."""


async def drive(
    send: Request, total: int, concurrency: int, phase: Phase | None, on_ok: Callable[[Any], None] | None = None
) -> None:
    """``total`` requests from ``concurrency`` tasks, each sending its next request as soon as one ends.

    With ``phase`` None (warm-up) nothing is measured; any error still raises at the end.
    """
    import httpx

    counter = iter(range(total))
    warm_errors: list[str] = []

    async def loop() -> None:
        for i in counter:
            t0 = time.perf_counter()
            try:
                resp = await send(i)
                ok = 200 <= resp.status_code < 300
                problem = "" if ok else f"HTTP {resp.status_code}: {resp.text[:200]}"
            except httpx.HTTPError as exc:
                cause = exc.__cause__ or exc.__context__
                problem = f"{type(exc).__name__}: {exc}" + (f" ({cause!r})" if cause is not None else "")
                resp = None
            elapsed_ms = (time.perf_counter() - t0) * 1000.0
            if problem:
                problem = f"request {i}, after {elapsed_ms:.0f} ms: {problem}"
                if phase is None:
                    warm_errors.append(problem)
                else:
                    phase.record_error(problem)
                continue
            if phase is not None:
                phase.record(i, t0, elapsed_ms)
            if on_ok is not None:
                on_ok(resp)

    await asyncio.gather(*(loop() for _ in range(min(concurrency, total))))
    if warm_errors:
        raise RuntimeError(f"{len(warm_errors)} warm-up request(s) failed, e.g. {warm_errors[0]}")


def _server_cpu_s(proc: Any) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _vm_hwm_mb(pid: int) -> float:
    """Peak RSS of a process (``VmHWM`` from ``/proc``), MiB; 0 when unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


async def measure(
    phase: Phase,
    server_proc: Any,
    send: Request,
    total: int,
    on_ok: Callable[[Any], None] | None = None,
) -> None:
    """Run one measured phase and fill in its duration, client and server CPU, and server RSS."""
    cpu0 = time.process_time()
    srv0 = _server_cpu_s(server_proc)
    t0 = phase.started = time.perf_counter()
    await drive(send, total, phase.concurrency, phase, on_ok)
    phase.duration_s = time.perf_counter() - t0
    phase.client_cpu_s = time.process_time() - cpu0
    phase.server_cpu_s = _server_cpu_s(server_proc) - srv0
    phase.server_rss_mb = server_proc.memory_info().rss / (1024.0 * 1024.0)


# ----------------------------------------------------------------------------------- checks


def run_statuses(database_url: str, run_ids: list[str]) -> dict[str, tuple[str, str | None, int]]:
    """``run_id -> (status, output, steps)`` read straight from the database."""
    from sqlalchemy import bindparam, create_engine, text

    engine = create_engine(database_url)
    out: dict[str, tuple[str, str | None, int]] = {}
    try:
        with engine.connect() as conn:
            query = text("SELECT run_id, status, output, steps FROM runs WHERE run_id IN :ids").bindparams(
                bindparam("ids", expanding=True)
            )
            for i in range(0, len(run_ids), 500):
                for row in conn.execute(query, {"ids": run_ids[i : i + 500]}):
                    out[str(row[0])] = (str(row[1]), row[2], int(row[3] or 0))
    finally:
        engine.dispose()
    return out


_TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def _status_counts(statuses: dict[str, tuple[str, str | None, int]], run_ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rid in run_ids:
        status = statuses[rid][0] if rid in statuses else "MISSING"
        counts[status] = counts.get(status, 0) + 1
    return dict(sorted(counts.items()))


async def wait_runs(database_url: str, run_ids: list[str], timeout_s: float) -> tuple[float, bool]:
    """Poll the database until every run is terminal; returns (seconds waited, timed out)."""
    t0 = time.perf_counter()
    while True:
        statuses = await asyncio.to_thread(run_statuses, database_url, run_ids)
        if all(statuses.get(r, ("",))[0] in _TERMINAL for r in run_ids):
            return time.perf_counter() - t0, False
        if time.perf_counter() - t0 > timeout_s:
            return time.perf_counter() - t0, True
        await asyncio.sleep(0.25)


def check_runs(database_url: str, run_ids: list[str]) -> dict[str, Any]:
    """Every created run COMPLETED with the demo's answer and its 5 steps."""
    statuses = run_statuses(database_url, run_ids)
    problems: list[str] = []
    for rid in run_ids:
        row = statuses.get(rid)
        if row is None:
            problems.append(f"{rid}: missing")
        elif row[0] != "COMPLETED":
            problems.append(f"{rid}: status {row[0]}")
        elif row[1] != EXPECTED_OUTPUT:
            problems.append(f"{rid}: output {row[1]!r}")
        elif row[2] != STEPS_PER_RUN:
            problems.append(f"{rid}: {row[2]} steps (want {STEPS_PER_RUN})")
    return {
        "runs": len(run_ids),
        "completed": sum(1 for r in run_ids if r in statuses and statuses[r][0] == "COMPLETED"),
        "statuses": _status_counts(statuses, run_ids),
        "problems": problems[:5],
        "problem_count": len(problems),
    }


# --------------------------------------------------------------------------------- scenario


def _shown_url(url: str) -> str:
    """The database URL without its password (the server command is printed in the results)."""
    from sqlalchemy.engine import make_url

    return str(make_url(url).render_as_string(hide_password=True))


async def scenario_http(args: argparse.Namespace, db: Any) -> dict[str, Any]:
    """Start ``maestro serve`` on ``db``; measure run creation and run reads over HTTP from this process."""
    import httpx
    import psutil

    if args.creates < 1 or args.reads < 0 or args.warmup < 0 or args.concurrency < 1:
        raise SystemExit("--creates and --concurrency must be at least 1; --reads and --warmup at least 0")
    conc = args.concurrency
    loadavg_before = os.getloadavg()[0]
    upgrade_s = None if db.url.startswith("sqlite") else await asyncio.to_thread(upgrade_database, db.url)
    with maestro_server(db.url) as server:
        ready_s = await wait_ready(server)
        key = await operator_key(server)
        srv = psutil.Process(server.proc.pid)
        rss_ready = srv.memory_info().rss / (1024.0 * 1024.0)
        created: list[str] = []

        def remember(resp: Any) -> None:
            created.append(str(resp.json()["run_id"]))

        def connections() -> httpx.AsyncClient:
            """``conc`` keep-alive connections, a fresh pool per operation (none idles across the pauses)."""
            limits = httpx.Limits(
                max_connections=conc, max_keepalive_connections=conc, keepalive_expiry=CLIENT_KEEPALIVE_S
            )
            return httpx.AsyncClient(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=60.0
            )

        # 1. run creation: warm-up (counted among the runs to check, not in the figures), then measured
        async with connections() as client:
            body = {"agent": AGENT, "input": TASK}

            async def create(_i: int) -> Any:
                return await client.post("/v1/runs", json=body)

            await drive(create, args.warmup, conc, None, remember)
            creation = Phase("create", conc)
            measured_from = len(created)
            await measure(creation, srv, create, args.creates, remember)
        create_ids = created[measured_from:]
        done_after_create = _status_counts(await asyncio.to_thread(run_statuses, db.url, created), created)

        # 2. the embedded worker finishes the backlog (so that the reads below all see finished runs)
        drain_s, drain_timed_out = await wait_runs(db.url, created, args.timeout)

        # 3. reads of the runs created above, round robin
        reading = Phase("read", conc)
        async with connections() as client:

            async def read(i: int) -> Any:
                return await client.get(f"/v1/runs/{created[i % len(created)]}")

            if args.reads:
                await drive(read, args.warmup, conc, None)
                await measure(reading, srv, read, args.reads)

        server_cpu_total = _server_cpu_s(srv)
        server_peak_rss = _vm_hwm_mb(srv.pid)
        server_threads = srv.num_threads()
        log_tail = server.log_tail(20)
    exit_status = server.proc.returncode
    check = check_runs(db.url, created)
    errors = creation.errors + reading.errors
    problems = list(check["problems"])
    if errors:
        problems.insert(0, f"{errors} request error(s): {(creation.error_samples + reading.error_samples)[:2]}")
    ok = errors == 0 and check["problem_count"] == 0 and not drain_timed_out
    server_cmd = "MAESTRO_RATE_LIMIT_PER_MIN=0 MAESTRO_HOME=$(mktemp -d) " + shlex.join(
        [".venv/bin/maestro", "--database-url", _shown_url(db.url), *server.argv[3:]]
    )
    return {
        "creates": args.creates,
        "reads": args.reads,
        "warmup": args.warmup,
        "concurrency": conc,
        "agent": AGENT,
        "steps_per_run": STEPS_PER_RUN,
        "server_command": server_cmd,
        "db_upgrade_s": upgrade_s,
        "server_ready_s": ready_s,
        "server_rss_ready_mb": rss_ready,
        "server_peak_rss_mb": server_peak_rss,
        "server_cpu_total_s": server_cpu_total,
        "server_threads": server_threads,
        "server_exit_status": exit_status,
        "server_log_tail": log_tail,
        "create": creation.summary(),
        "read": reading.summary(),
        "measured_create_ids": len(create_ids),
        "runs_after_create_phase": done_after_create,
        "drain_s": drain_s,
        "timed_out": drain_timed_out,
        "loadavg_before": loadavg_before,
        "loadavg_after": os.getloadavg()[0],
        "verify": {
            "ok": ok,
            "errors": errors,
            "completed": check["completed"],
            "runs": check["runs"],
            "statuses": check["statuses"],
            "problems": problems[:5],
            "problem_count": check["problem_count"] + (1 if errors else 0),
        },
    }
