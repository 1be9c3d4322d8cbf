"""Run a command in a separate, limited process: rlimits always, bubblewrap isolation where it works.

Every process started here gets:

* resource limits (``RLIMIT_CPU``, ``RLIMIT_AS``, ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``), set by a tiny launcher
  that then replaces itself with the command (no ``preexec_fn``: running Python between ``fork`` and ``exec`` in a
  threaded worker can deadlock);
* a wall-clock timeout, after which its whole process group is killed;
* the run's work folder as working directory;
* a scrubbed environment: ``PATH``, ``LANG``, ``HOME`` (the work folder), ``TMPDIR`` (inside the work folder) and
  the caller's explicit extras, never the worker's own variables (API keys, database URLs).

Where bubblewrap (``bwrap``) is installed *and usable* (checked once by running it), the process also gets a
minimal, read-only root built from scratch: ``/usr`` and the ``/bin``, ``/sbin`` and ``/lib*`` links or folders, the
Python interpreter's own prefix, a handful of ``/etc`` files the dynamic loader needs, a made-up ``/etc/passwd`` and
``/etc/group``, a private ``/tmp``, fresh ``/dev`` and ``/proc``, and the work folder (the only writable place).
Nothing else of the host exists inside: no ``/etc/shadow``, ``/home``, ``/var``, ``/run``, no ``/root`` (but the
interpreter's prefix when it lives there), so no host Unix socket either. It has no network (``--unshare-net``: only
a private loopback, so no abstract sockets of the host), its own PID, IPC and UTS namespaces, no capabilities, and
dies with its parent. A root worker runs the command as the unprivileged :data:`SANDBOX_UID` (``setpriv`` inside the
sandbox, with ``no_new_privs``): the work folder is lent to that user for the call and given back afterwards.
:attr:`SandboxResult.sandboxed` says which of the two happened.
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
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SANDBOX_GID",
    "SANDBOX_UID",
    "SandboxLimits",
    "SandboxResult",
    "bwrap_path",
    "run_sandboxed",
    "sandbox_available",
    "scrubbed_env",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TMP_DIRNAME = ".tmp"
"""Folder inside the work folder used as ``TMPDIR``."""
SANDBOX_UID = 65534
"""User id sandboxed code runs as when the worker is root (``nobody`` on most systems)."""
SANDBOX_GID = 65534
"""Group id sandboxed code runs as when the worker is root (``nogroup``/``nobody``)."""
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "alternatives")
"""The only host files of ``/etc`` visible inside the sandbox (read-only, when they exist): what the dynamic loader,
the C library's user lookups and Debian's ``/usr/bin`` links (``/etc/alternatives``) need."""
ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
"""Top-level entries reproduced inside the sandbox: a symlink stays a symlink (merged ``/usr``), a folder is bound."""

_READ_CHUNK = 65536
_DRAIN_GRACE_S = 1.0
"""How long to keep reading output after the process ended (a detached grandchild may hold the pipes)."""

# Sets the limits, then replaces itself with the command: argv = [launcher, "cpu,as,fsize,nofile", cmd, *args].
_LAUNCHER = """\
import os, resource, sys
cpu, mem, fsize, nofile, nproc = (int(x) for x in sys.argv[1].split(","))
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
if nproc > 0:
    lim(resource.RLIMIT_NPROC, nproc, nproc)
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
    processes: int = 512
    """Processes and threads of the sandbox user at once (``RLIMIT_NPROC``), so a fork bomb stops there. Applied
    only where code runs as a user of its own (a root worker under bubblewrap: :data:`SANDBOX_UID`), because the
    limit counts every process of the user: all concurrent sandboxes share it."""
    wall_s: float = 30
    """Wall-clock seconds before the process group is killed."""
    output_chars: int = 20_000
    """Characters of stdout and of stderr kept; the rest is counted and dropped."""

    def __post_init__(self) -> None:
        for name in ("cpu_s", "memory_mb", "file_size_mb", "open_files", "processes", "wall_s", "output_chars"):
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

    Being installed is not enough: in some containers ``bwrap`` cannot create namespaces, and a root worker also
    needs ``setpriv`` (util-linux) to run the command as :data:`SANDBOX_UID`. The probe uses the same namespaces,
    mounts and user switch as :func:`run_sandboxed`.
    """
    fds: list[int] = []
    try:
        probe = _bwrap_command(["/bin/true"], None, (), fds)
        if probe is None:
            return False
        done = subprocess.run(
            probe, capture_output=True, timeout=10, env={"PATH": DEFAULT_PATH}, check=False, pass_fds=fds
        )
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        _close_all(fds)
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
    lend = use_bwrap and _as_root()
    if lend:
        await _lend(wd)
    try:
        return await _run([str(a) for a in argv], wd, lim, env, stdin, use_bwrap, hide)
    finally:
        if lend:
            await _take_back(wd)


async def _run(
    argv: list[str],
    wd: Path,
    lim: SandboxLimits,
    env: Mapping[str, str] | None,
    stdin: bytes | str | None,
    use_bwrap: bool,
    hide: Sequence[Path | str],
) -> SandboxResult:
    command = argv
    fds: list[int] = []
    try:
        if use_bwrap:
            wrapped = _bwrap_command(command, wd, hide, fds)
            if wrapped is None:
                raise RuntimeError("bubblewrap isolation was required but bwrap is not usable here")
            command = wrapped
        mib = 1024 * 1024
        nproc = lim.processes if use_bwrap and _as_root() else -1
        rlimits = f"{lim.cpu_s},{lim.memory_mb * mib},{lim.file_size_mb * mib},{lim.open_files},{nproc}"
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
            pass_fds=fds,
        )
    finally:
        _close_all(fds)  # the child holds its own copies; bwrap reads them
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


def _as_root() -> bool:
    """Whether the worker runs as root: then sandboxed code is switched to :data:`SANDBOX_UID`."""
    return os.geteuid() == 0


def _interpreter_paths() -> list[str]:
    """Folders the sandboxed Python needs: the interpreter's prefixes (a virtualenv and the Python it was made from).

    Both the spelled and the resolved form of each are listed: ``sys.executable`` is run by its spelled path (a
    virtualenv reached through a symlink), its ``bin/python`` links resolve into the base prefix.
    """
    candidates: set[str] = set()
    for path in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        candidates.update((os.path.abspath(path), os.path.realpath(path)))
    for exe in (os.path.abspath(sys.executable), os.path.realpath(sys.executable)):
        candidates.add(os.path.dirname(exe))
    found = sorted(p for p in candidates if p != "/" and os.path.isdir(p))
    return [p for p in found if not any(_within(p, q) and p != q for q in found)]


def _within(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies under it (both absolute, normalised)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def _identity() -> tuple[int, int]:
    """The uid and gid sandboxed code runs as."""
    return (SANDBOX_UID, SANDBOX_GID) if _as_root() else (os.getuid(), os.getgid())


def _identity_files(home: str) -> tuple[str, str]:
    """A minimal ``/etc/passwd`` and ``/etc/group``: root, nobody and the sandbox user (no host accounts)."""
    uid, gid = _identity()
    users = {0: ("root", 0, "/root"), SANDBOX_UID: ("nobody", SANDBOX_GID, "/nonexistent")}
    users[uid] = ("nobody" if uid == SANDBOX_UID else "sandbox", gid, home)
    groups = {0: "root", SANDBOX_GID: "nogroup", gid: "nogroup" if gid == SANDBOX_GID else "sandbox"}
    passwd = "".join(f"{name}:x:{u}:{g}::{h}:/bin/sh\n" for u, (name, g, h) in sorted(users.items()))
    group = "".join(f"{name}:x:{g}:\n" for g, name in sorted(groups.items()))
    return passwd, group


def _data_fd(text: str) -> int:
    """A pipe's read end holding ``text`` (for ``bwrap --ro-bind-data``); the caller closes it."""
    read, write = os.pipe()
    try:
        os.write(write, text.encode())  # a few hundred bytes: far below the pipe's buffer
    finally:
        os.close(write)
    return read


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


def _bwrap_command(
    command: Sequence[str], workdir: Path | None, hide: Sequence[Path | str], fds: list[int]
) -> list[str] | None:
    """The full bwrap command line around ``command``, or None when bwrap (or, for root, setpriv) is missing.

    Pipe ends holding the generated ``/etc`` files are appended to ``fds``: pass them to the child, then close them.
    """
    exe = bwrap_path()
    if exe is None:
        return None
    switch: list[str] = []
    if _as_root():
        setpriv = shutil.which("setpriv", path=DEFAULT_PATH)
        if setpriv is None:
            return None
        uid, gid = _identity()
        # Inside the sandbox, before the command: become the unprivileged user for good (no capabilities, none
        # to regain: empty bounding set, no_new_privs so setuid programs do not elevate).
        switch = [
            setpriv,
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "--no-new-privs",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ]
    return [exe, *_bwrap_flags(workdir, hide, fds), "--", *switch, *command]


def _bwrap_flags(workdir: Path | None, hide: Sequence[Path | str], fds: list[int]) -> list[str]:
    """Options for bwrap: a minimal read-only root, a private ``/tmp``, writable ``workdir`` only, no network."""
    flags = ["--ro-bind", "/usr", "/usr"]
    visible = ["/usr"]  # host folders shown as they are
    for name in ROOT_LINKS:
        path = f"/{name}"
        if os.path.islink(path):
            flags += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            flags += ["--ro-bind", path, path]
            visible.append(path)
    flags += ["--perms", "0755", "--dir", "/etc"]
    for name in ETC_FILES:
        flags += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    passwd, group = _identity_files(str(workdir) if workdir is not None else "/")
    for text, dest in ((passwd, "/etc/passwd"), (group, "/etc/group")):
        fds.append(_data_fd(text))
        flags += ["--perms", "0644", "--ro-bind-data", str(fds[-1]), dest]
    flags += ["--dev", "/dev", "--proc", "/proc", "--perms", "1777", "--tmpfs", "/tmp"]
    made = {"/", "/etc", "/dev", "/proc", "/tmp"}

    def mount_point(path: str) -> list[str]:
        # bwrap would create missing parents with the host folder's mode (``/root`` is 0700): make them 0755.
        out: list[str] = []
        parts = Path(path).parts[1:-1]
        for i in range(len(parts)):
            parent = "/" + "/".join(parts[: i + 1])
            if parent in made or any(_within(parent, v) for v in visible):
                continue
            out += ["--perms", "0755", "--dir", parent]
            made.add(parent)
        return out

    prefixes = [p for p in _interpreter_paths() if not any(_within(p, v) for v in visible)]
    for path in prefixes:
        # The Python running sandboxed code (a virtualenv, pyenv under /root, /opt): read-only, at the same path.
        flags += [*mount_point(path), "--ro-bind", path, path]
        visible.append(path)
    for hidden in hide:
        real = os.path.realpath(hidden)
        inside_prefix = any(_within(real, p) and real != p for p in prefixes)
        holds_prefix = any(_within(p, real) for p in prefixes)
        if inside_prefix and not holds_prefix and os.path.isdir(real):
            flags += ["--tmpfs", real]
    if workdir is not None:
        wd = str(workdir)
        flags += [*mount_point(wd), "--bind", wd, wd, "--chdir", wd]
    flags += ["--remount-ro", "/"]
    flags += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    flags += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if _as_root():
        # No user namespace: real root sets the sandbox up, then setpriv (the first program inside) switches to the
        # unprivileged user with exactly these capabilities, and gives them up. CAP_DAC_READ_SEARCH lets bwrap enter
        # a work folder of mode 0700 (now owned by the sandbox user) before the switch.
        flags += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
        flags += ["--cap-add", "CAP_DAC_READ_SEARCH"]
    else:
        flags += ["--unshare-user"]
    return flags


_LENT: dict[Path, tuple[int, tuple[int, int]]] = {}
"""Work folders lent to :data:`SANDBOX_UID` right now: how many sandboxed calls use each, and its owner before."""
_LENT_LOCK = threading.Lock()


async def _lend(workdir: Path) -> None:
    """Give the work folder to the sandbox user for the time of one call (root workers only)."""
    await asyncio.to_thread(_lend_sync, workdir)


async def _take_back(workdir: Path) -> None:
    """Give the work folder back to its owner once no sandboxed process uses it (they are all dead by then)."""
    await asyncio.to_thread(_take_back_sync, workdir)


def _lend_sync(workdir: Path) -> None:
    # The walks run under the lock: a call ending while another starts cannot take the folder from it midway.
    with _LENT_LOCK:
        users, owner = _LENT.get(workdir, (0, (-1, -1)))
        if users == 0:
            st = os.lstat(workdir)
            lent_before = (st.st_uid, st.st_gid) == (SANDBOX_UID, SANDBOX_GID)  # a worker that died mid-call
            owner = (os.geteuid(), os.getegid()) if lent_before else (st.st_uid, st.st_gid)
        try:
            _chown_tree(workdir, SANDBOX_UID, SANDBOX_GID)  # again for a second user: files the worker wrote since
        except OSError:
            if users == 0:
                _chown_tree(workdir, *owner)
            raise
        _LENT[workdir] = (users + 1, owner)


def _take_back_sync(workdir: Path) -> None:
    with _LENT_LOCK:
        users, owner = _LENT[workdir]
        if users > 1:
            _LENT[workdir] = (users - 1, owner)
            return
        del _LENT[workdir]
        _chown_tree(workdir, *owner)


def _chown_tree(workdir: Path, uid: int, gid: int) -> None:
    """Give ``workdir`` and everything in it to ``uid``/``gid``, following no link.

    ``os.fwalk`` opens each folder relative to its parent's descriptor and skips one swapped for a link meanwhile,
    and ``chown`` acts on names inside those descriptors without following links: code running in the same folder
    at the same time cannot redirect the change onto a host file.
    """
    with contextlib.suppress(FileNotFoundError):
        top = os.lstat(workdir)
        if (top.st_uid, top.st_gid) != (uid, gid):
            os.chown(workdir, uid, gid, follow_symlinks=False)
    for _dir, dirs, files, dir_fd in os.fwalk(workdir, follow_symlinks=False):
        for name in (*dirs, *files):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if (st.st_uid, st.st_gid) != (uid, gid):
                    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue


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
