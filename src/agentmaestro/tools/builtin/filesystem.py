"""Filesystem tools confined to the run's work folder.

A path argument must be relative, plain and visible: absolute paths, ``..``, ``~``, NUL and other control or format
characters, backslashes, percent-encodings and characters that Unicode normalisation would change (full-width dots,
division slashes) are refused before anything touches the disk. The path is then resolved (``realpath``) and must stay
inside the work folder, so a symlink may point elsewhere *inside* the folder but never out of it. Finally, the file is
opened component by component from a directory descriptor of the work folder with ``O_NOFOLLOW``: if a directory was
swapped for a symlink after the check, the open fails instead of escaping. Files with more than one hard link are
refused too (a hard link made elsewhere could name a file outside the folder), and so are FIFOs and devices.

Writes never go inside ``.git`` (hooks and config there would run code on the next git command).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import unicodedata
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import Field

from agentmaestro.core.reconcile import Reconciled
from agentmaestro.core.risk import RiskLevel
from agentmaestro.errors import ToolError
from agentmaestro.tools.context import ToolContext
from agentmaestro.tools.registry import tool

__all__ = [
    "PathRefusedError",
    "append_file",
    "delete_file",
    "list_directory",
    "read_file",
    "resolve_in_workdir",
    "search_codebase",
    "write_file",
]

MAX_READ_CHARS = 100_000
MAX_WRITE_CHARS = 5_000_000
MAX_LIST_ENTRIES = 1_000
MAX_SEARCH_FILE_BYTES = 1_000_000
MAX_SEARCH_TOTAL_BYTES = 50_000_000
MAX_SEARCH_FILES = 10_000
MAX_MATCH_LINE_CHARS = 2_000
SHOWN_LINE_CHARS = 200
SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", ".tmp", "__pycache__", "node_modules", ".venv", ".mypy_cache"})
PROTECTED_DIRS = frozenset({".git", ".hg", ".svn"})
"""Version-control folders: their hooks and config run code, so file tools never modify them."""

_MAX_PATH_CHARS = 4096
_MAX_NAME_BYTES = 255
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_LOOKALIKES = frozenset("\u2215\u2044\u29f8\u2216\u29f5\u29f9\u2571\u2572\u27cb\u27cd\u0338\u20e5\u2024\u3002\uff61")
"""Slash, backslash and dot look-alikes that Unicode normalisation leaves alone (or that are worth naming)."""
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_BINARY_SNIFF = 8192


class PathRefusedError(ToolError):
    """A path argument is malformed or leads outside the work folder."""


# --- path checks ------------------------------------------------------------------------------------------------------


def _split_checked(path: str) -> list[str]:
    """Refuse anything but a plain relative path; return its components (``.`` and empty ones dropped)."""
    if not isinstance(path, str):
        raise PathRefusedError("path must be a string")
    shown = repr(path[:80])
    if "\x00" in path:
        raise PathRefusedError(f"path {shown} is refused: it contains a NUL byte")
    if len(path) > _MAX_PATH_CHARS:
        raise PathRefusedError(f"path {shown}... is refused: longer than {_MAX_PATH_CHARS} characters")
    if any(unicodedata.category(c) in _BAD_CATEGORIES for c in path):
        raise PathRefusedError(f"path {shown} is refused: it contains control or invisible characters")
    if any(c in _LOOKALIKES for c in path) or unicodedata.normalize("NFKC", path) != path:
        raise PathRefusedError(
            f"path {shown} is refused: it contains look-alike characters (Unicode normalisation changes it)"
        )
    if "\\" in path:
        raise PathRefusedError(f"path {shown} is refused: use '/' as separator, not backslashes")
    if _PERCENT.search(path):
        raise PathRefusedError(
            f"path {shown} is refused: percent-encoded characters are not decoded; write them plainly"
        )
    if path.startswith("/"):
        raise PathRefusedError(
            f"path {shown} is refused: absolute paths are not allowed; use a path relative to the work folder"
        )
    if path.startswith("~"):
        raise PathRefusedError(f"path {shown} is refused: '~' is not expanded; use a path relative to the work folder")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathRefusedError(f"path {shown} is refused: '..' is not allowed; paths stay inside the work folder")
    if any(len(p.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES for p in parts):
        raise PathRefusedError(f"path {shown} is refused: a component is longer than {_MAX_NAME_BYTES} bytes")
    return parts


def _root(ctx: ToolContext) -> str:
    root = os.path.realpath(ctx.workdir)
    if not os.path.isdir(root):
        raise ToolError(f"the run's work folder {str(ctx.workdir)!r} does not exist")
    return root


def _inside(root: str, target: str, shown: str) -> list[str]:
    rel = os.path.relpath(target, root)
    if rel == ".":
        return []
    if rel == ".." or rel.startswith("../") or os.path.isabs(rel):
        raise PathRefusedError(f"path {shown} is refused: it resolves outside the work folder (through a symlink)")
    return rel.split("/")


def resolve_in_workdir(ctx: ToolContext, path: str, *, follow_last: bool = True) -> list[str]:
    """Check ``path`` and resolve it to symlink-free components relative to the work folder.

    Args:
        ctx: The call's context (its ``workdir`` is the confinement root).
        path: The model's relative path.
        follow_last: Resolve a symlink in the last component too (False for deleting the link itself).

    Returns:
        The resolved components; empty for the work folder itself.

    Raises:
        PathRefusedError: The path is malformed or leads outside the work folder.
    """
    parts = _split_checked(path)
    root = _root(ctx)
    shown = repr(path[:80])
    if not parts:
        return []
    if follow_last:
        return _inside(root, os.path.realpath(os.path.join(root, *parts)), shown)
    parent = _inside(root, os.path.realpath(os.path.join(root, *parts[:-1])), shown)
    return [*parent, parts[-1]]


@contextlib.contextmanager
def _walk(ctx: ToolContext, comps: list[str], shown: str, *, create: bool = False) -> Iterator[int]:
    """A descriptor of directory ``comps`` opened from the work folder without following any symlink."""
    fd = os.open(_root(ctx), _DIR_FLAGS)
    try:
        for name in comps:
            try:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise ToolError(f"no such directory: {shown}") from None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise PathRefusedError(
                        f"path {shown} is refused: {name!r} is not a directory (or is a symlink that changed)"
                    ) from None
                raise
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def _open_file(dir_fd: int, name: str, flags: int, shown: str) -> int:
    """Open a regular, singly-linked file in ``dir_fd`` without following symlinks or blocking on FIFOs."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    except FileNotFoundError:
        raise ToolError(f"no such file: {shown}") from None
    except IsADirectoryError:
        raise ToolError(f"{shown} is a directory, not a file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PathRefusedError(
                f"path {shown} is refused: it is a symlink (a loop, or one that changed during the call)"
            ) from None
        if exc.errno == errno.ENXIO:
            raise PathRefusedError(f"path {shown} is refused: not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ToolError(f"{shown} is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise PathRefusedError(f"path {shown} is refused: not a regular file (device, FIFO or socket)")
        if st.st_nlink > 1:
            raise PathRefusedError(
                f"path {shown} is refused: it has {st.st_nlink} hard links and may be a file outside the work folder"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_protected(comps: list[str], shown: str) -> None:
    if any(c.lower() in PROTECTED_DIRS for c in comps):
        raise PathRefusedError(
            f"path {shown} is refused: files inside version-control folders (.git) cannot be modified"
        )


def _os_error(exc: OSError, shown: str) -> ToolError:
    reason = exc.strerror or type(exc).__name__
    return ToolError(f"{shown}: {reason}")


# --- tools ------------------------------------------------------------------------------------------------------------


@tool(risk=RiskLevel.SAFE, idempotent=True, redact_output=True, max_output_chars=MAX_READ_CHARS + 200)
def read_file(
    path: str,
    ctx: ToolContext,
    max_chars: Annotated[int, Field(ge=1, le=MAX_READ_CHARS)] = 20_000,
) -> str:
    """Read a text file from the work folder.

    Args:
        path: File path relative to the work folder.
        ctx: Call context (injected).
        max_chars: Characters to return at most; longer files are cut with a marker.
    """
    shown = repr(path[:80])
    comps = resolve_in_workdir(ctx, path)
    if not comps:
        raise ToolError(f"{shown} is the work folder itself, not a file")
    try:
        with _walk(ctx, comps[:-1], shown) as dfd:
            fd = _open_file(dfd, comps[-1], os.O_RDONLY, shown)
            with os.fdopen(fd, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                raw = fh.read(max_chars * 4 + 4)
    except OSError as exc:
        raise _os_error(exc, shown) from exc
    if b"\x00" in raw[:_BINARY_SNIFF]:
        raise ToolError(f"{shown} is a binary file ({size} bytes); only text files can be read")
    text = raw.decode("utf-8", errors="replace")
    if len(text) > max_chars or len(raw) < size:
        text = f"{text[:max_chars]}\n[file truncated: {size} bytes in total, first {max_chars} characters shown]"
    return text


def _write(ctx: ToolContext, path: str, content: str, *, append: bool) -> str:
    shown = repr(path[:80])
    if len(content) > MAX_WRITE_CHARS:
        raise ToolError(f"content is too large ({len(content)} characters; at most {MAX_WRITE_CHARS})")
    comps = resolve_in_workdir(ctx, path)
    if not comps:
        raise ToolError(f"{shown} is the work folder itself, not a file")
    _refuse_protected(comps, shown)
    data = content.encode("utf-8")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else 0)
    try:
        with _walk(ctx, comps[:-1], shown, create=True) as dfd:
            fd = _open_file(dfd, comps[-1], flags, shown)
            try:
                if not append:
                    os.ftruncate(fd, 0)  # only after the checks: never truncate a file we then refuse
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
    except OSError as exc:
        raise _os_error(exc, shown) from exc
    verb = "appended" if append else "wrote"
    return f"{verb} {len(data)} bytes to {'/'.join(comps)}"


def _write_reconcile(arguments: dict[str, Any], key: str, ctx: ToolContext) -> Reconciled:
    """After a crash: the write happened when the file holds exactly the content (same SHA-256), else it did not."""
    path, content = arguments.get("path"), arguments.get("content")
    if not isinstance(path, str) or not isinstance(content, str):
        return Reconciled.cannot_tell("the arguments are not a path and a content")
    shown = repr(path[:80])
    data = content.encode("utf-8")
    try:
        comps = resolve_in_workdir(ctx, path)
        if not comps:
            return Reconciled.cannot_tell(f"{shown} is the work folder itself")
        with _walk(ctx, comps[:-1], shown) as dfd:
            fd = _open_file(dfd, comps[-1], os.O_RDONLY, shown)
            with os.fdopen(fd, "rb") as fh:
                current = fh.read(len(data) + 1)
    except ToolError as exc:
        if str(exc).startswith(("no such file", "no such directory")):
            return Reconciled.did_not_happen(f"{shown} does not exist")
        return Reconciled.cannot_tell(str(exc))
    except OSError as exc:
        return Reconciled.cannot_tell(str(_os_error(exc, shown)))
    want = hashlib.sha256(data).hexdigest()
    if hashlib.sha256(current).hexdigest() == want:
        return Reconciled.happened(
            f"wrote {len(data)} bytes to {'/'.join(comps)}",
            reason=f"the file holds exactly this content (sha256 {want})",
        )
    return Reconciled.did_not_happen(f"the file's content differs from this content (sha256 {want})")


@tool(risk=RiskLevel.ELEVATED, idempotent=False, redact_output=True, reconcile=_write_reconcile)
def write_file(path: str, content: str, ctx: ToolContext) -> str:
    """Create or overwrite a text file in the work folder (missing parent folders are created).

    Args:
        path: File path relative to the work folder.
        content: The complete new content (UTF-8 text).
        ctx: Call context (injected).
    """
    return _write(ctx, path, content, append=False)


@tool(risk=RiskLevel.ELEVATED, idempotent=False, redact_output=True)
def append_file(path: str, content: str, ctx: ToolContext) -> str:
    """Append text to a file in the work folder (created when missing).

    Args:
        path: File path relative to the work folder.
        content: Text to add at the end (UTF-8).
        ctx: Call context (injected).
    """
    return _write(ctx, path, content, append=True)


@tool(risk=RiskLevel.SAFE, idempotent=True, redact_output=True, max_output_chars=100_000)
def list_directory(ctx: ToolContext, path: str = ".") -> str:
    """List a folder of the work folder: one entry per line, folders end with '/', files show their size.

    Args:
        ctx: Call context (injected).
        path: Folder path relative to the work folder; '.' is the work folder itself.
    """
    shown = repr(path[:80])
    comps = resolve_in_workdir(ctx, path)
    try:
        with _walk(ctx, comps, shown) as dfd:
            with os.scandir(dfd) as it:
                entries = sorted(it, key=lambda e: e.name)
            lines = [_describe_entry(e) for e in entries[:MAX_LIST_ENTRIES]]  # stat() needs dfd open
    except OSError as exc:
        raise _os_error(exc, shown) from exc
    total = len(entries)
    if total > len(lines):
        lines.append(f"[{total - len(lines)} more entries not shown]")
    return "\n".join(lines) if lines else "(empty folder)"


def _describe_entry(entry: os.DirEntry[str]) -> str:
    try:
        if entry.is_symlink():
            return f"{entry.name} (symlink)"
        if entry.is_dir(follow_symlinks=False):
            return f"{entry.name}/"
        if entry.is_file(follow_symlinks=False):
            return f"{entry.name} ({entry.stat(follow_symlinks=False).st_size} bytes)"
        return f"{entry.name} (special file)"
    except OSError:
        return f"{entry.name} (unreadable)"


def _delete_reconcile(arguments: dict[str, Any], key: str, ctx: ToolContext) -> Reconciled:
    """After a crash: the delete happened when the file is gone, and did not when it is still there."""
    path = arguments.get("path")
    if not isinstance(path, str):
        return Reconciled.cannot_tell("the path is not a string")
    shown = repr(path[:80])
    try:
        comps = resolve_in_workdir(ctx, path, follow_last=False)
        if not comps:
            return Reconciled.cannot_tell(f"{shown} is the work folder itself")
        with _walk(ctx, comps[:-1], shown) as dfd:
            os.stat(comps[-1], dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        gone = "/".join(comps)
        return Reconciled.happened(f"deleted {gone}", reason=f"{gone} no longer exists")
    except ToolError as exc:
        if str(exc).startswith("no such directory"):
            return Reconciled.happened(f"deleted {path}", reason=f"{shown} no longer exists (nor its folder)")
        return Reconciled.cannot_tell(str(exc))
    except OSError as exc:
        return Reconciled.cannot_tell(str(_os_error(exc, shown)))
    return Reconciled.did_not_happen(f"{shown} still exists")


@tool(risk=RiskLevel.DANGEROUS, idempotent=False, redact_output=True, reconcile=_delete_reconcile)
def delete_file(path: str, ctx: ToolContext) -> str:
    """Delete one file (or symlink) from the work folder; folders are not deleted.

    Args:
        path: File path relative to the work folder.
        ctx: Call context (injected).
    """
    shown = repr(path[:80])
    comps = resolve_in_workdir(ctx, path, follow_last=False)
    if not comps:
        raise ToolError(f"{shown} is the work folder itself and cannot be deleted")
    _refuse_protected(comps, shown)
    try:
        with _walk(ctx, comps[:-1], shown) as dfd:
            try:
                st = os.stat(comps[-1], dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                raise ToolError(f"no such file: {shown}") from None
            if stat.S_ISDIR(st.st_mode):
                raise ToolError(f"{shown} is a directory; delete_file only deletes files")
            os.unlink(comps[-1], dir_fd=dfd)
    except OSError as exc:
        raise _os_error(exc, shown) from exc
    return f"deleted {'/'.join(comps)}"


@tool(risk=RiskLevel.SAFE, idempotent=True, redact_output=True, max_output_chars=60_000)
def search_codebase(
    pattern: str,
    ctx: ToolContext,
    path: str = ".",
    max_results: Annotated[int, Field(ge=1, le=500)] = 50,
    literal: bool = False,
) -> str:
    """Search text files of the work folder for a regular expression (or a literal string), like grep -rn.

    Binary files, files over 1 MB, symlinks and folders such as .git and node_modules are skipped.

    Args:
        pattern: Python regular expression, or plain text when literal is true.
        ctx: Call context (injected).
        path: Folder (or file) to search, relative to the work folder.
        max_results: Matching lines to return at most.
        literal: Treat pattern as plain text instead of a regular expression.
    """
    if not pattern:
        raise ToolError("pattern must not be empty")
    if len(pattern) > 1_000:
        raise ToolError("pattern is too long (at most 1000 characters)")
    try:
        regex = re.compile(re.escape(pattern) if literal else pattern)
    except re.error as exc:
        raise ToolError(
            f"invalid regular expression {pattern!r}: {exc}; pass literal=true to search plain text"
        ) from None
    shown = repr(path[:80])
    comps = resolve_in_workdir(ctx, path)
    search = _Search(regex, max_results)
    try:
        with _walk(ctx, comps[:-1] if comps else [], shown) as dfd:
            st = os.stat(comps[-1], dir_fd=dfd, follow_symlinks=False) if comps else os.fstat(dfd)
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(comps[-1], _DIR_FLAGS, dir_fd=dfd) if comps else os.dup(dfd)
                search.tree(sub, "/".join(comps))
            else:
                search.file(dfd, comps[-1], "/".join(comps), strict=True)
    except OSError as exc:
        raise _os_error(exc, shown) from exc
    return search.report(pattern)


class _Search:
    """State of one search_codebase call: results and caps."""

    def __init__(self, regex: re.Pattern[str], max_results: int) -> None:
        self.regex = regex
        self.max_results = max_results
        self.results: list[str] = []
        self.files = 0
        self.bytes = 0
        self.skipped = 0
        self.stopped = ""

    def tree(self, top_fd: int, top: str) -> None:
        """Depth-first, sorted walk from an open directory descriptor (closed here); never follows symlinks."""
        stack: list[tuple[int, str]] = [(top_fd, top)]
        try:
            while stack and not self.stopped:
                dfd, prefix = stack.pop()
                try:
                    with os.scandir(dfd) as it:
                        entries = sorted(it, key=lambda e: e.name)
                    subdirs: list[tuple[int, str]] = []
                    for entry in entries:
                        if self.stopped:
                            break
                        rel = f"{prefix}/{entry.name}" if prefix else entry.name
                        if entry.is_symlink():
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            if entry.name not in SKIPPED_DIRS:
                                with contextlib.suppress(OSError):
                                    subdirs.append((os.open(entry.name, _DIR_FLAGS, dir_fd=dfd), rel))
                        elif entry.is_file(follow_symlinks=False):
                            self.file(dfd, entry.name, rel)
                    stack.extend(reversed(subdirs))
                finally:
                    os.close(dfd)
        finally:
            for fd, _ in stack:
                os.close(fd)

    def file(self, dfd: int, name: str, rel: str, *, strict: bool = False) -> None:
        """Search one file, skipping (``strict``: refusing) what is not a small, singly-linked text file."""
        if self.files >= MAX_SEARCH_FILES:
            self.stopped = f"stopped after {MAX_SEARCH_FILES} files"
            return
        if self.bytes >= MAX_SEARCH_TOTAL_BYTES:
            self.stopped = f"stopped after {MAX_SEARCH_TOTAL_BYTES} bytes"
            return
        try:
            fd = _open_file(dfd, name, os.O_RDONLY, repr(rel))
        except (ToolError, OSError):
            if strict:
                raise
            self.skipped += 1
            return
        with os.fdopen(fd, "rb") as fh:
            if os.fstat(fh.fileno()).st_size > MAX_SEARCH_FILE_BYTES:
                self.skipped += 1
                return
            raw = fh.read(MAX_SEARCH_FILE_BYTES + 1)
        self.files += 1
        self.bytes += len(raw)
        if b"\x00" in raw[:_BINARY_SNIFF]:
            self.skipped += 1
            return
        for lineno, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
            if self.regex.search(line[:MAX_MATCH_LINE_CHARS]):
                shown = line.strip()
                if len(shown) > SHOWN_LINE_CHARS:
                    shown = shown[:SHOWN_LINE_CHARS] + "..."
                self.results.append(f"{rel}:{lineno}: {shown}")
                if len(self.results) >= self.max_results:
                    self.stopped = f"stopped at max_results={self.max_results}"
                    return

    def report(self, pattern: str) -> str:
        """The matches, one per line, then a summary line."""
        summary = f"[{len(self.results)} matches for {pattern!r} in {self.files} files searched"
        if self.skipped:
            summary += f", {self.skipped} skipped (binary, too large, linked or unreadable)"
        if self.stopped:
            summary += f"; {self.stopped}"
        return "\n".join([*self.results, summary + "]"])
