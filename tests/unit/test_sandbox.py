"""The sandbox runner: limits, timeout, scrubbed environment, and (where bubblewrap works) isolation."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmaestro.tools import sandbox
from agentmaestro.tools.sandbox import SandboxLimits, run_sandboxed, sandbox_available

pytestmark = pytest.mark.anyio

BWRAP = sandbox_available()
NO_BWRAP_REASON = (
    "bubblewrap is not usable here (not installed, or cannot create namespaces in this container): "
    "network isolation and the read-only root cannot be tested"
)
needs_bwrap = pytest.mark.skipif(not BWRAP, reason=NO_BWRAP_REASON)
MODES = [
    pytest.param(False, id="rlimits-only"),
    pytest.param(True, id="bwrap", marks=needs_bwrap),
]
PY = sys.executable


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    wd = tmp_path / "work"
    wd.mkdir()
    return wd


@pytest.fixture
def listener() -> Iterator[tuple[int, list[object]]]:
    """A TCP listener on 127.0.0.1 that records every accepted connection."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, addr = srv.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(addr)
            conn.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    thread.join(timeout=2)
    srv.close()


def test_bwrap_availability_is_probed_and_cached() -> None:
    assert sandbox_available() is BWRAP
    if hasattr(sandbox_available, "cache_info"):  # functools.cache: probed once
        assert sandbox_available.cache_info().hits >= 1
    if sandbox.bwrap_path() is None:
        assert not BWRAP


@pytest.mark.parametrize("isolate", MODES)
async def test_environment_is_scrubbed(isolate: bool, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret-do-not-leak")
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:pw@db/prod")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    result = await run_sandboxed(
        ["/bin/sh", "-c", "env; echo PWD=$(pwd)"], workdir=workdir, env={"EXTRA": "given"}, isolate=isolate
    )
    assert result.ok, result
    assert result.sandboxed is isolate
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert "OPENAI_API_KEY" not in env and "sk-parent-secret" not in result.stdout
    assert "DATABASE_URL" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["HOME"] == str(workdir.resolve())
    assert env["TMPDIR"].startswith(str(workdir.resolve()) + "/")
    assert env["EXTRA"] == "given"
    assert env["PWD"] == str(workdir.resolve())
    assert set(env) <= {"PATH", "LANG", "HOME", "TMPDIR", "EXTRA", "PWD", "SHLVL", "_", "OLDPWD"}


@pytest.mark.parametrize("isolate", MODES)
async def test_memory_limit_is_enforced(isolate: bool, workdir: Path) -> None:
    code = "x = bytearray(1024 * 1024 * 1024); print('allocated', len(x))"
    result = await run_sandboxed(
        [PY, "-c", code], workdir=workdir, limits=SandboxLimits(memory_mb=256), isolate=isolate
    )
    assert result.exit_code != 0
    assert "allocated" not in result.stdout
    assert "MemoryError" in result.stderr


@pytest.mark.parametrize("isolate", MODES)
async def test_cpu_limit_kills_a_busy_loop(isolate: bool, workdir: Path) -> None:
    started = time.monotonic()
    result = await run_sandboxed(
        [PY, "-c", "while True: pass"], workdir=workdir, limits=SandboxLimits(cpu_s=1, wall_s=30), isolate=isolate
    )
    assert result.killed and not result.timed_out
    assert result.exit_code != 0
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("isolate", MODES)
async def test_wall_timeout_kills_the_process_group(isolate: bool, workdir: Path) -> None:
    started = time.monotonic()
    result = await run_sandboxed(
        ["/bin/sh", "-c", "sleep 60 & echo $! > bg.pid; sleep 60"],
        workdir=workdir,
        limits=SandboxLimits(wall_s=1),
        isolate=isolate,
    )
    assert result.timed_out and result.killed
    assert time.monotonic() - started < 10
    if not isolate:  # under bwrap the pid is in another namespace; the namespace dies with its init
        pid = int((workdir / "bg.pid").read_text())
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z", "background child survived"


@pytest.mark.parametrize("isolate", MODES)
async def test_file_size_and_open_files_limits(isolate: bool, workdir: Path) -> None:
    limits = SandboxLimits(file_size_mb=1, open_files=32)
    result = await run_sandboxed(
        [PY, "-c", "open('big', 'wb').write(b'0' * (3 * 1024 * 1024))"], workdir=workdir, limits=limits, isolate=isolate
    )
    assert result.exit_code != 0
    assert (workdir / "big").stat().st_size <= 1024 * 1024
    code = "fs = [open('f%d' % i, 'w') for i in range(100)]"
    result = await run_sandboxed([PY, "-c", code], workdir=workdir, limits=limits, isolate=isolate)
    assert result.exit_code != 0
    assert "Too many open files" in result.stderr


@pytest.mark.parametrize("isolate", MODES)
async def test_output_is_capped_and_stdin_is_fed(isolate: bool, workdir: Path) -> None:
    result = await run_sandboxed(
        [PY, "-c", "import sys; data = sys.stdin.read(); print(data.upper() * 20000)"],
        workdir=workdir,
        limits=SandboxLimits(output_chars=1000),
        stdin="abc",
        isolate=isolate,
    )
    assert result.ok
    assert result.stdout.startswith("ABCABC")
    assert len(result.stdout) < 1200
    assert "[output truncated: 60001 bytes in total, first 1000 characters kept]" in result.stdout


async def test_missing_command_is_a_result_not_an_exception(workdir: Path) -> None:
    result = await run_sandboxed(["definitely-not-a-command-xyz"], workdir=workdir, isolate=False)
    assert result.exit_code == 127
    assert "cannot execute" in result.stderr


async def test_bad_arguments(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="needs a command"):
        await run_sandboxed([], workdir=workdir)
    with pytest.raises(ValueError, match="not a directory"):
        await run_sandboxed(["true"], workdir=workdir / "missing")
    with pytest.raises(ValueError, match="must be positive"):
        SandboxLimits(cpu_s=0)
    monkeypatch.setattr(sandbox, "sandbox_available", lambda: False)
    with pytest.raises(RuntimeError, match="bwrap is not usable"):
        await run_sandboxed(["true"], workdir=workdir, isolate=True)


async def test_falls_back_to_rlimits_when_bwrap_is_unusable(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "sandbox_available", lambda: False)
    result = await run_sandboxed(["/bin/sh", "-c", "echo hi"], workdir=workdir)
    assert result.ok and result.stdout == "hi\n"
    assert result.sandboxed is False


async def test_default_mode_uses_bwrap_exactly_when_available(workdir: Path) -> None:
    result = await run_sandboxed(["true"], workdir=workdir)
    assert result.ok
    assert result.sandboxed is BWRAP


# --- bubblewrap isolation ---------------------------------------------------------------------------------------------


@needs_bwrap
async def test_no_network(workdir: Path, listener: tuple[int, list[object]]) -> None:
    port, accepted = listener
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')\n"
    result = await run_sandboxed([PY, "-c", code], workdir=workdir, isolate=True)
    assert result.exit_code != 0
    assert "connected" not in result.stdout
    assert "Connection refused" in result.stderr or "unreachable" in result.stderr
    # The same code outside the sandbox does reach the listener: the test is not vacuous.
    plain = await run_sandboxed([PY, "-c", code], workdir=workdir, isolate=False)
    assert plain.stdout == "connected\n"
    time.sleep(0.3)
    assert len(accepted) == 1


@needs_bwrap
async def test_only_the_workdir_is_writable(tmp_path: Path, workdir: Path) -> None:
    outside = tmp_path / "outside.txt"
    var_tmp = Path("/var/tmp") / f"maestro-probe-{uuid.uuid4().hex}"
    script = (
        f"echo in > inside.txt; "
        f"echo out > {outside} ; echo rc_outside=$?; "
        f"echo out > {var_tmp} ; echo rc_var_tmp=$?; "
        f"touch /etc/maestro-probe ; echo rc_etc=$?; "
        f"touch {Path.cwd() / 'maestro-probe'} ; echo rc_cwd=$?"
    )
    result = await run_sandboxed(["/bin/sh", "-c", script], workdir=workdir, isolate=True)
    assert (workdir / "inside.txt").read_text() == "in\n"
    assert not outside.exists()  # /tmp is a private tmpfs inside the sandbox
    assert not var_tmp.exists()
    assert not Path("/etc/maestro-probe").exists()
    assert not (Path.cwd() / "maestro-probe").exists()
    # Under /tmp (a checkout in /tmp) the cwd lies in the sandbox's private tmpfs: writable there, but
    # nothing reaches the real disk (checked above).
    in_tmp = str(Path.cwd().resolve()).startswith("/tmp/")
    for name in ("rc_var_tmp", "rc_etc", *(() if in_tmp else ("rc_cwd",))):
        assert f"{name}=0" not in result.stdout, result
    assert "Read-only file system" in result.stderr


@needs_bwrap
async def test_root_cannot_remount_or_see_host_processes(workdir: Path) -> None:
    result = await run_sandboxed(
        ["/bin/sh", "-c", "mount -o remount,rw / ; echo rc=$?; ls /proc | grep -c '^[0-9]'"],
        workdir=workdir,
        isolate=True,
    )
    lines = result.stdout.split()
    assert lines[0] != "rc=0"  # capabilities are dropped
    assert int(lines[-1]) < 10  # own PID namespace


@needs_bwrap
async def test_hidden_folders_are_masked_but_the_workdir_stays(tmp_path: Path) -> None:
    home = tmp_path / "maestro-home"
    wd = home / "work" / "ws" / "run-1"
    wd.mkdir(parents=True)
    (home / "maestro.db").write_text("database secret")
    (home / "work" / "ws" / "run-2").mkdir()
    (home / "work" / "ws" / "run-2" / "notes.txt").write_text("other run")
    (wd / "mine.txt").write_text("mine")
    result = await run_sandboxed(
        ["/bin/sh", "-c", f"cat mine.txt; cat {home}/maestro.db; cat {home}/work/ws/run-2/notes.txt"],
        workdir=wd,
        isolate=True,
        hide=[home],
    )
    assert "mine" in result.stdout
    assert "database secret" not in result.stdout
    assert "other run" not in result.stdout


@needs_bwrap
async def test_bwrap_signal_death_is_reported_as_killed(workdir: Path) -> None:
    result = await run_sandboxed(["/bin/sh", "-c", "kill -9 $$"], workdir=workdir, isolate=True)
    assert result.killed and result.exit_code == 137


def test_limits_defaults() -> None:
    limits = SandboxLimits()
    assert (limits.cpu_s, limits.memory_mb, limits.file_size_mb, limits.open_files) == (10, 512, 64, 256)
    assert (limits.wall_s, limits.output_chars) == (30, 20000)
    assert os.path.basename(sys.executable)
