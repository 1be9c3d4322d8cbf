"""What sandboxed code can reach: no host Unix socket, a minimal root, an unprivileged user (red-team findings)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentmaestro.tools import Tool, sandbox
from agentmaestro.tools.builtin import run_python, run_shell
from agentmaestro.tools.context import ToolContext
from agentmaestro.tools.sandbox import SANDBOX_UID, run_sandboxed, sandbox_available

pytestmark = pytest.mark.skipif(
    not sandbox_available(),
    reason="bubblewrap is not usable here (not installed, or cannot create namespaces): isolation cannot be tested",
)

SOCKET_ROOTS = ("/run", "/var/run", "/tmp", "/var/tmp", "/dev/shm", "/var/lib/mysql", "/var/lib/postgresql")
KNOWN_SOCKETS = (
    "/run/postgresql/.s.PGSQL.5432",
    "/var/run/postgresql/.s.PGSQL.5432",
    "/tmp/.s.PGSQL.5432",
    "/run/mysqld/mysqld.sock",
    "/var/run/mysqld/mysqld.sock",
    "/var/lib/mysql/mysql.sock",
    "/run/redis/redis-server.sock",
    "/var/run/redis/redis.sock",
    "/tmp/redis.sock",
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/dbus/system_bus_socket",
)
# Connects to every path (and abstract name) given as JSON on stdin; prints {target: outcome}.
PROBE = """\
import json, socket, sys
out = {}
for target in json.loads(sys.stdin.readline()):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(target.replace("@", "\\0", 1) if target.startswith("@") else target)
        out[target] = "connected"
    except OSError as exc:
        out[target] = type(exc).__name__
    finally:
        s.close()
print("RESULT " + json.dumps(out))
"""


def _find_sockets(roots: tuple[str, ...], limit: int = 500) -> set[str]:
    """Socket files under ``roots`` (not crossing into other file systems' pseudo folders), plus the known ones."""
    found = {p for p in KNOWN_SOCKETS if os.path.exists(p) and stat.S_ISSOCK(os.stat(p).st_mode)}
    for root in roots:
        for folder, dirs, files in os.walk(root, onerror=lambda _e: None):
            dirs[:] = [d for d in dirs if not d.startswith("pytest-of-")]  # other tests' leftovers
            for name in (*files, *dirs):
                path = os.path.join(folder, name)
                try:
                    if stat.S_ISSOCK(os.lstat(path).st_mode):
                        found.add(os.path.realpath(path))
                except OSError:
                    continue
            if len(found) >= limit:
                return found
    return found


class _Listener:
    """A Unix-socket server (a file path or an abstract ``@name``) counting the connections it accepts."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.accepted = 0
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._srv.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        self._srv.listen(16)
        self._srv.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._srv.close()
        if not self.address.startswith("@"):
            Path(self.address).unlink(missing_ok=True)


@pytest.fixture
def listeners(tmp_path: Path) -> Iterator[list[_Listener]]:
    """Host services of our own: in /var/tmp (the red team's finding), in /tmp, and an abstract socket."""
    tag = uuid.uuid4().hex[:12]
    made = [
        _Listener(f"/var/tmp/maestro-probe-{tag}.sock"),
        _Listener(str(tmp_path / "host-service.sock")),
        _Listener(f"@maestro-probe-{tag}"),
    ]
    yield made
    for listener in made:
        listener.close()


def _call(t: Tool, ctx: ToolContext, **arguments: Any) -> str:
    result = asyncio.run(t.invoke(arguments, context=ctx))
    return result.content


def _outcomes(text: str) -> dict[str, str]:
    line = next(line for line in text.splitlines() if line.startswith("RESULT "))
    outcomes: dict[str, str] = json.loads(line.removeprefix("RESULT "))
    return outcomes


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    wd = tmp_path / "work"
    wd.mkdir()
    return ToolContext(run_id="run-1", workspace_id="ws", agent="coder", workdir=wd)


def test_no_host_unix_socket_is_reachable_from_code_tools(ctx: ToolContext, listeners: list[_Listener]) -> None:
    targets = sorted(_find_sockets(SOCKET_ROOTS) | {x.address for x in listeners})
    # Not vacuous: from the host, our own services answer.
    for listener in listeners:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            a = listener.address
            s.connect(a.replace("@", "\0", 1) if a.startswith("@") else a)
    assert all(x.address in targets for x in listeners)
    (ctx.workdir / "probe.py").write_text(PROBE)
    (ctx.workdir / "targets.json").write_text(json.dumps(targets) + "\n")

    via_python = _outcomes(_call(run_python, ctx, code=f"import sys\nsys.stdin = open('targets.json')\n{PROBE}"))
    via_shell = _outcomes(_call(run_shell, ctx, command=f"{sys.executable} -I probe.py < targets.json"))

    for outcomes in (via_python, via_shell):
        assert set(outcomes) == set(targets)
        reached = sorted(t for t, outcome in outcomes.items() if outcome == "connected")
        assert reached == [], f"sandboxed code connected to host sockets: {reached}"
    host_before = [x.accepted for x in listeners]
    assert host_before == [1, 1, 1]  # only the host-side checks above got through


def test_code_runs_as_an_unprivileged_user_in_a_minimal_root(ctx: ToolContext) -> None:
    code = """\
import json, os
def ls(p):
    try:
        return sorted(os.listdir(p))
    except OSError as exc:
        return type(exc).__name__
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
caps = {k: v.strip() for k, v in status.items() if k.startswith("Cap") or k == "NoNewPrivs"}
paths = ["/etc/shadow", "/etc/hostname", "/etc/ssh", "/home", "/var", "/run", "/srv", "/opt", "/mnt", "/sys"]
print("RESULT " + json.dumps({
    "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "root": ls("/"), "etc": ls("/etc"), "root_home": ls("/root"),
    "exists": {p: os.path.lexists(p) for p in paths},
    "shadow": open("/etc/shadow").read() if os.path.exists("/etc/shadow") else None,
    "status": caps,
}))
"""
    seen = _outcomes(_call(run_python, ctx, code=code))
    assert seen["uid"] != 0 and seen["euid"] != 0
    if os.geteuid() == 0:
        assert (seen["uid"], seen["gid"], seen["groups"]) == (SANDBOX_UID, sandbox.SANDBOX_GID, [])
        assert seen["status"]["NoNewPrivs"] == "1"
        assert seen["status"]["CapBnd"] == "0000000000000000"
    assert all(seen["status"][k] == "0000000000000000" for k in ("CapEff", "CapPrm", "CapAmb"))
    assert seen["shadow"] is None
    assert not any(seen["exists"].values()), seen["exists"]
    base = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "tmp"}
    # Beyond the base: only the first folder of the interpreter's prefix (a venv, pyenv) and of the work folder.
    extra = {Path(p).parts[1] for p in (*sandbox._interpreter_paths(), str(ctx.workdir.resolve()))}
    assert set(seen["root"]) <= base | extra, seen["root"]
    assert set(seen["etc"]) <= {*sandbox.ETC_FILES, "passwd", "group"}
    # /root exists only when the interpreter lives there (pyenv): then it holds that path and nothing else.
    if isinstance(seen["root_home"], list):
        allowed = {Path(p).parts[2] for p in sandbox._interpreter_paths() if p.startswith("/root/")}
        assert set(seen["root_home"]) <= allowed


def test_generated_accounts_name_no_host_user(ctx: ToolContext) -> None:
    out = _call(run_shell, ctx, command="cat /etc/passwd /etc/group; id -un")
    host_users = {line.split(":")[0] for line in Path("/etc/passwd").read_text().splitlines() if line}
    listed = {line.split(":")[0] for line in out.splitlines() if line.count(":") >= 3}
    assert listed <= {"root", "nobody", "nogroup", "sandbox"}
    assert listed != host_users


@pytest.mark.skipif(os.geteuid() != 0, reason="the work folder is lent to the sandbox user only by a root worker")
def test_root_worker_lends_the_workdir_without_following_links(ctx: ToolContext, tmp_path: Path) -> None:
    host_file = tmp_path / "host-owned.txt"
    host_file.write_text("host")
    (ctx.workdir / "sub").mkdir()
    (ctx.workdir / "sub" / "from-worker.txt").write_text("written by a root tool")
    (ctx.workdir / "link-to-host").symlink_to(host_file)
    out = _call(run_shell, ctx, command="echo changed >> sub/from-worker.txt && stat -c %u sub; echo x >> link-to-host")
    assert f"\n{SANDBOX_UID}\n" in out  # lent for the call ...
    assert (ctx.workdir / "sub" / "from-worker.txt").read_text().endswith("changed\n")
    assert host_file.stat().st_uid == 0 and host_file.read_text() == "host"
    assert (ctx.workdir / "sub").stat().st_uid == 0  # ... and given back: host tools (git) keep trusting it
    assert (ctx.workdir / "link-to-host").lstat().st_uid == 0


@pytest.mark.anyio
async def test_a_program_outside_the_minimal_root_is_absent(tmp_path: Path) -> None:
    wd = tmp_path / "w"
    wd.mkdir()
    tool_dir = tmp_path / "elsewhere"  # /tmp is private inside: a host program there does not exist for code
    tool_dir.mkdir()
    result = await run_sandboxed(["/bin/sh", "-c", f"ls {tool_dir}"], workdir=wd, isolate=True)
    assert "No such file or directory" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the work folder is lent to the sandbox user only by a root worker")
@pytest.mark.anyio
async def test_the_workdir_goes_back_to_its_owner(tmp_path: Path) -> None:
    wd = tmp_path / "w"
    (wd / "sub").mkdir(parents=True)
    os.chown(wd, 1234, 1234)
    os.chown(wd / "sub", 1234, 1234)
    result = await run_sandboxed(["/bin/sh", "-c", "touch sub/new; stat -c %u sub"], workdir=wd, isolate=True)
    assert result.stdout.strip() == str(SANDBOX_UID), result
    assert {(p.stat().st_uid, p.stat().st_gid) for p in (wd, wd / "sub", wd / "sub" / "new")} == {(1234, 1234)}
    assert not sandbox._LENT


@pytest.mark.skipif(os.geteuid() != 0, reason="RLIMIT_NPROC applies where code runs as a user of its own")
@pytest.mark.anyio
async def test_a_fork_bomb_stops_at_the_process_limit(tmp_path: Path) -> None:
    code = """\
import os, time
made = 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    made += 1
print("forked", made)
"""
    limits = sandbox.SandboxLimits(processes=40, wall_s=20)
    result = await run_sandboxed([sys.executable, "-I", "-c", code], workdir=tmp_path, limits=limits, isolate=True)
    made = int(result.stdout.split()[-1])
    assert 0 < made < 40, result
