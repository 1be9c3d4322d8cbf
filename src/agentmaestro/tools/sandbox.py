"""Run a command in a separate, limited process: rlimits always, bubblewrap isolation where it works.

Every process started here gets:

* resource limits (``RLIMIT_CPU``, ``RLIMIT_AS``, ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``), set by a tiny launcher
  that then replaces itself with the command (no ``preexec_fn``: running Python between ``fork`` and ``exec`` in a
  threaded worker can deadlock);
* a wall-clock timeout, after which its whole process group is killed;
* the run's work folder as working directory;
* a scrubbed environment: ``PATH``, ``LANG``, ``HOME`` (the work folder), ``TMPDIR`` (inside the work folder) and
  the caller's explicit extras, never the worker's own variables (API keys, database URLs).

Where bubblewrap (``bwrap``) is installed *and usable* (checked once by running it), the process also gets no network
(``--unshare-net``), a read-only view of ``/`` with only the work folder writable, private ``/dev``, ``/proc`` and
``/tmp``, its own PID namespace, no capabilities, and dies with its parent. :attr:`SandboxResult.sandboxed` says
which of the two happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SandboxLimits", "SandboxResult", "bwrap_path", "run_sandboxed", "sandbox_available", "scrubbed_env"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TMP_DIRNAME = ".tmp"
"""Folder inside the work folder used as ``TMPDIR``."""

_READ_CHUNK = 65536
_DRAIN_GRACE_S = 1.0
"""How long to keep reading output after the process ended (a detached grandchild may hold the pipes)."""

# Sets the limits, then replaces itself with the command: argv = [launcher, "cpu,as,fsize,nofile", cmd, *args].
_LAUNCHER = """\
import os, resource, sys
cpu, mem, fsize, nofile = (int(x) for x in sys.argv[1].split(","))
def lim(res, soft, hard):
    cur_soft, cur_hard = resource.getrlimit(res)
    if cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
        soft = min(soft, hard)
    resource.setrlimit(res, (soft, hard))
lim(resource.RLIMIT_CPU, cpu, cpu + 1)
lim(resource.RLIMIT_AS, mem, mem)
lim(resource.RLIMIT_FSIZE, fsize, fsize)
lim(resource.RLIMIT_NOFILE, nofile, nofile)
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as exc:
    sys.stderr.write("sandbox: cannot execute %r: %s\\n" % (sys.argv[2], exc.strerror))
    sys.exit(127)
"""


@dataclass(frozen=True, kw_only=True)
class SandboxLimits:
    """Resource limits of one sandboxed process."""

    cpu_s: int = 10
    """CPU seconds (``RLIMIT_CPU``): SIGXCPU at the limit, SIGKILL one second later."""
    memory_mb: int = 512
    """Address space in MiB (``RLIMIT_AS``): allocations beyond it fail."""
    file_size_mb: int = 64
    """Largest file the process may write, in MiB (``RLIMIT_FSIZE``)."""
    open_files: int = 256
    """Open file descriptors (``RLIMIT_NOFILE``)."""
    wall_s: float = 30
    """Wall-clock seconds before the process group is killed."""
    output_chars: int = 20_000
    """Characters of stdout and of stderr kept; the rest is counted and dropped."""

    def __post_init__(self) -> None:
        for name in ("cpu_s", "memory_mb", "file_size_mb", "open_files", "wall_s", "output_chars"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {getattr(self, name)!r}")


@dataclass(frozen=True, kw_only=True)
class SandboxResult:
    """What a sandboxed process did."""

    exit_code: int | None
    """Exit status (negative: killed by that signal; under bubblewrap a signal death shows as 128 + signal)."""
    stdout: str
    """Standard output, decoded as UTF-8 (invalid bytes replaced), capped at ``output_chars``."""
    stderr: str
    """Standard error, same treatment."""
    timed_out: bool
    """The wall-clock timeout expired and the process group was killed."""
    killed: bool
    """The process ended by a signal: the timeout, or a limit such as CPU time."""
    sandboxed: bool
    """True when bubblewrap isolation (no network, read-only root) was used; False for rlimits only."""
    duration_ms: float
    """Wall time from start to exit, in milliseconds."""

    @property
    def ok(self) -> bool:
        """Exited by itself with status 0."""
        return self.exit_code == 0 and not self.timed_out and not self.killed


def bwrap_path() -> str | None:
    """Path of the ``bwrap`` binary, or None when it is not installed."""
    return shutil.which("bwrap") or next((p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.access(p, os.X_OK)), None)


@functools.cache
def sandbox_available() -> bool:
    """Whether bubblewrap isolation works here (probed once by running it; cached).

    Being installed is not enough: in some containers ``bwrap`` cannot create namespaces. The probe uses the same
    namespaces and mounts as :func:`run_sandboxed`.
    """
    exe = bwrap_path()
    if exe is None:
        return False
    probe = [exe, *_bwrap_flags(None), "--", "/bin/true"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=10, env={"PATH": DEFAULT_PATH}, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def scrubbed_env(workdir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a sandboxed process: nothing of the worker's own but ``PATH`` and ``LANG``.

    Args:
        workdir: The run's work folder: ``HOME``, and ``TMPDIR`` under it.
        extra: Explicit additions (for example ``ToolContext.env``); they win over the defaults.

    Returns:
        A fresh mapping.
    """
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "HOME": str(workdir),
        "TMPDIR": str(workdir / TMP_DIRNAME),
    }
    if extra:
        env.update({str(k): str(v) for k, v in extra.items()})
    return env


async def run_sandboxed(
    argv: Sequence[str],
    *,
    workdir: Path | str,
    limits: SandboxLimits | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | str | None = None,
    isolate: bool | None = None,
    hide: Sequence[Path | str] = (),
) -> SandboxResult:
    """Run ``argv`` in a separate, limited process inside ``workdir`` and collect its output.

    Never raises for a failing command: a missing executable is exit code 127, a limit or the timeout shows in the
    result. Cancellation kills the process group and propagates.

    Args:
        argv: Program and arguments (no shell: wrap in ``["/bin/sh", "-c", command]`` for one).
        workdir: Working directory; the only writable place under bubblewrap. Must exist.
        limits: Resource limits; defaults to :class:`SandboxLimits` defaults.
        env: Extra environment on top of :func:`scrubbed_env`.
        stdin: Data written to the process's standard input (closed afterwards); None gives ``/dev/null``.
        isolate: True requires bubblewrap (``RuntimeError`` when unusable), False skips it, None uses it when
            :func:`sandbox_available`.
        hide: Directories masked by an empty tmpfs under bubblewrap (for example the folder holding the database and
            the other runs' work folders); ``workdir`` stays visible even when inside one.

    Returns:
        Exit status, capped output and what happened.

    Raises:
        ValueError: Empty ``argv`` or ``workdir`` is not a directory.
        RuntimeError: ``isolate=True`` but bubblewrap is not usable here.
    """
    if not argv:
        raise ValueError("run_sandboxed needs a command")
    lim = limits or SandboxLimits()
    wd = Path(os.path.realpath(workdir))
    if not wd.is_dir():
        raise ValueError(f"work folder {str(workdir)!r} is not a directory")
    use_bwrap = sandbox_available() if isolate is None else isolate
    if use_bwrap and not sandbox_available():
        raise RuntimeError("bubblewrap isolation was required but bwrap is not usable here")
    (wd / TMP_DIRNAME).mkdir(exist_ok=True)
    command = [str(a) for a in argv]
    if use_bwrap:
        exe = bwrap_path()
        assert exe is not None
        command = [exe, *_bwrap_flags(wd, hide), "--", *command]
    mib = 1024 * 1024
    rlimits = f"{lim.cpu_s},{lim.memory_mb * mib},{lim.file_size_mb * mib},{lim.open_files}"
    full = [sys.executable, "-I", "-S", "-c", _LAUNCHER, rlimits, *command]
    data = stdin.encode() if isinstance(stdin, str) else stdin

    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *full,
        stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=wd,
        env=scrubbed_env(wd, env),
        start_new_session=True,
        close_fds=True,
    )
    byte_cap = lim.output_chars * 4  # enough bytes for output_chars UTF-8 characters
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        asyncio.ensure_future(_read_capped(proc.stdout, byte_cap)),
        asyncio.ensure_future(_read_capped(proc.stderr, byte_cap)),
    ]
    feeder = asyncio.ensure_future(_feed(proc, data)) if data is not None else None
    timed_out = False
    try:
        try:
            async with asyncio.timeout(lim.wall_s):
                await proc.wait()
        except TimeoutError:
            timed_out = True
            _kill_group(proc.pid)
            await proc.wait()
        duration_ms = (time.perf_counter() - started) * 1000
        await asyncio.wait(readers, timeout=_DRAIN_GRACE_S)
    finally:
        _kill_group(proc.pid)  # leftovers: background children in the same process group
        for task in (*readers, *([feeder] if feeder else [])):
            if not task.done():
                task.cancel()
        await asyncio.gather(*readers, *([feeder] if feeder else []), return_exceptions=True)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    out = readers[0].result() if not readers[0].cancelled() else (b"", 0)
    err = readers[1].result() if not readers[1].cancelled() else (b"", 0)
    code = proc.returncode
    killed = timed_out or (code is not None and code < 0) or (use_bwrap and code is not None and 128 < code < 128 + 65)
    return SandboxResult(
        exit_code=code,
        stdout=_decode_capped(out, lim.output_chars),
        stderr=_decode_capped(err, lim.output_chars),
        timed_out=timed_out,
        killed=killed,
        sandboxed=use_bwrap,
        duration_ms=duration_ms,
    )


def _interpreter_paths() -> list[str]:
    """Folders the sandboxed Python needs: the interpreter's prefixes and this package's source root."""
    candidates = {
        os.path.realpath(sys.prefix),
        os.path.realpath(sys.base_prefix),
        os.path.dirname(os.path.realpath(sys.executable)),
        os.path.dirname(os.path.abspath(sys.executable)),
        str(Path(__file__).resolve().parents[2]),
    }
    return sorted(p for p in candidates if os.path.isdir(p))


def _bwrap_flags(workdir: Path | None, hide: Sequence[Path | str] = ()) -> list[str]:
    """Options for bwrap: read-only ``/``, fresh ``/dev``, ``/proc`` and ``/tmp``, writable ``workdir`` only."""
    flags = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for path in hide:
        real = os.path.realpath(path)
        if real != "/" and os.path.isdir(real) and (workdir is None or real != str(workdir)):
            flags += ["--tmpfs", real]
    masked = ["/tmp", *(os.path.realpath(p) for p in hide)]
    for path in _interpreter_paths():
        # The Python running the sandboxed code (a virtualenv, the package's source) may itself live
        # under /tmp or a hidden folder: keep it visible, read-only.
        if any(path == m or path.startswith(m.rstrip("/") + "/") for m in masked):
            flags += ["--ro-bind", path, path]
    if workdir is not None:
        # After the tmpfs mounts, so that a work folder under /tmp (or under a hidden folder) stays visible.
        flags += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir)]
    flags += [
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]
    return flags


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, int]:
    """Read to EOF keeping the first ``cap`` bytes; return them and the total byte count."""
    kept = bytearray()
    total = 0
    while chunk := await stream.read(_READ_CHUNK):
        total += len(chunk)
        if len(kept) < cap:
            kept += chunk[: cap - len(kept)]
    return bytes(kept), total


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data)
        await proc.stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
        proc.stdin.close()


def _decode_capped(read: tuple[bytes, int], chars: int) -> str:
    raw, total = read
    text = raw.decode("utf-8", errors="replace")
    dropped_bytes = total - len(raw)
    if len(text) > chars:
        text = text[:chars]
        dropped_bytes = max(dropped_bytes, 1)
    if dropped_bytes > 0:
        text += f"\n[output truncated: {total} bytes in total, first {chars} characters kept]"
    return text


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
