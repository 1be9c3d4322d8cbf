"""MCP servers as tool sources, through the official ``mcp`` SDK (2.x).

An MCP server is configured by an operator (a stdio command or a streamable HTTP URL). :func:`load_mcp_tools`
connects, lists the server's tools and returns one AgentMaestro :class:`~agentmaestro.tools.registry.Tool` per MCP
tool, named ``<server>__<tool>``, with the server's input schema as its parameters. Every MCP tool goes through the
same gate as any other tool: its risk comes from the configuration only (default ELEVATED; per-tool overrides),
never from the server's own annotations, and so does ``idempotent``.

Calling an MCP tool (:meth:`MCPTool.invoke`) validates the arguments against the input schema, opens a session to
the server, calls the tool under the tool's timeout (connecting included) and maps the result to a
:class:`~agentmaestro.tools.registry.ToolResult`. Like every tool it never raises for a failing call.

A stdio server gets only ``PATH`` and the configured ``env`` in its environment, never the worker's own variables
(API keys, database URLs). Example configuration::

    mcp_servers:
      - name: time
        command: [python, -m, mcp_server_time]
        risk: SAFE
      - name: tracker
        url: https://mcp.example.com/mcp
        headers: {Authorization: "Bearer ..."}
        tool_risks: {delete_issue: DANGEROUS}
        idempotent_tools: [get_issue]
        deny: ["admin_*"]
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fnmatch
import hashlib
import importlib
import json
import logging
import os
import re
import shlex
import shutil
import sys
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import yaml

from agentmaestro.core.risk import RiskLevel
from agentmaestro.errors import ConfigError, ToolError
from agentmaestro.tools.context import ToolContext
from agentmaestro.tools.registry import Tool, ToolResult

if TYPE_CHECKING:
    import mcp_types
    from mcp import Client
    from mcp.client import Transport

__all__ = ["MCPServerConfig", "MCPTool", "close_mcp_sessions", "load_mcp_tools", "mcp_configs_from_yaml"]

logger = logging.getLogger(__name__)

DEFAULT_MCP_TIMEOUT_S = 60.0
DEFAULT_KEEP_ALIVE_S = 300.0
MAX_DESCRIPTION_CHARS = 4_000
"""Longer tool descriptions from a server are cut: they are untrusted text shown to the model."""

_SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_UNSAFE_CHARS_RE = re.compile(r"[^A-Za-z0-9_-]")
_MAX_TOOL_NAME = 64
_MAX_LIST_PAGES = 100
_MAX_ERRORS_SHOWN = 10
_MAX_ERROR_CHARS = 300

# Runs a stdio server with exactly the environment we chose. The SDK always merges a few of the worker's variables
# (HOME, USER, SHELL...) into a stdio server's environment; this launcher (``python -I -S -c``) keeps only the keys
# named in argv[1], then execs the server in place, so the server keeps the launcher's pid, pipes and process group
# and the SDK's shutdown (close stdin, SIGTERM, SIGKILL to the group) applies to it unchanged. Values travel in the
# environment, never in argv, so they do not show in a process listing.
_LAUNCHER = (
    "import json, os, sys\n"
    "keep = json.loads(sys.argv[1])\n"
    "env = {k: os.environ[k] for k in keep if k in os.environ}\n"
    "os.execve(sys.argv[2], sys.argv[3:], env)\n"
)


# --- configuration ---------------------------------------------------------------------------------------------------


@dataclass
class MCPServerConfig:
    """One MCP server that provides tools: a stdio command or a streamable HTTP URL (exactly one of them).

    Raises:
        ConfigError: From construction, when a field is invalid.
    """

    name: str
    """Server name, ``[A-Za-z0-9_-]{1,32}``; its tools are named ``<name>__<tool>``."""
    command: list[str] | None = None
    """Command line of a stdio server, e.g. ``["python", "-m", "mcp_server_time"]``; resolved on ``PATH``."""
    url: str | None = None
    """Endpoint of a streamable HTTP server, e.g. ``http://127.0.0.1:8000/mcp``."""
    env: dict[str, str] | None = None
    """The whole environment of a stdio server, besides ``PATH`` (which it may override)."""
    risk: RiskLevel = RiskLevel.ELEVATED
    """Risk of every tool of this server, unless ``tool_risks`` says otherwise."""
    tool_risks: dict[str, RiskLevel] = field(default_factory=dict)
    """Risk per MCP tool name (the server's name for it, without the ``<server>__`` prefix)."""
    idempotent_tools: set[str] = field(default_factory=set)
    """MCP tool names whose calls may safely be repeated; all others are not idempotent."""
    timeout_s: float = DEFAULT_MCP_TIMEOUT_S
    """Seconds one call may take, connecting included (also the bound for connecting and listing at load)."""
    allow: list[str] | None = None
    """If set, only MCP tools matching one of these names or glob patterns are exposed."""
    deny: list[str] = field(default_factory=list)
    """MCP tools matching one of these names or glob patterns are never exposed (deny beats allow)."""
    headers: dict[str, str] | None = None
    """Extra HTTP headers sent to a streamable HTTP server (e.g. ``Authorization``)."""
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    """Seconds an idle stdio server is kept running for the next call (one server per event loop); 0 starts a
    server per call. HTTP servers get a session per call (cheap: no process to start)."""

    def __post_init__(self) -> None:
        """Validate and normalise the fields."""
        if not isinstance(self.name, str) or not _SERVER_NAME_RE.match(self.name):
            raise ConfigError(f"invalid MCP server name {self.name!r}: use 1-32 letters, digits, '_' or '-'")
        where = f"MCP server {self.name!r}"
        if (self.command is None) == (self.url is None):
            raise ConfigError(f"{where}: give exactly one of command (stdio) or url (streamable HTTP)")
        if self.command is not None:
            if isinstance(self.command, str):
                raise ConfigError(f"{where}: command must be a list of strings, e.g. ['python', '-m', 'server']")
            if not self.command or not all(isinstance(part, str) for part in self.command) or not self.command[0]:
                raise ConfigError(f"{where}: command must be a non-empty list of strings")
            self.command = list(self.command)
        if self.url is not None:
            if not isinstance(self.url, str) or not re.match(r"^https?://[^/\s]+", self.url):
                raise ConfigError(f"{where}: url must be an http:// or https:// URL, got {self.url!r}")
            if self.env:
                raise ConfigError(f"{where}: env applies to stdio servers (command) only")
        if self.headers is not None:
            if self.url is None:
                raise ConfigError(f"{where}: headers apply to HTTP servers (url) only")
            self.headers = _str_map(self.headers, f"{where}: headers")
        if self.env is not None:
            self.env = _str_map(self.env, f"{where}: env")
        self.risk = _risk(self.risk, f"{where}: risk")
        if not isinstance(self.tool_risks, Mapping):
            raise ConfigError(f"{where}: tool_risks must be a mapping of tool name to risk level")
        self.tool_risks = {
            _tool_ref(k, f"{where}: tool_risks"): _risk(v, f"{where}: tool_risks[{k!r}]")
            for k, v in self.tool_risks.items()
        }
        if isinstance(self.idempotent_tools, str) or not isinstance(self.idempotent_tools, Iterable):
            raise ConfigError(f"{where}: idempotent_tools must be a list of tool names")
        self.idempotent_tools = {_tool_ref(t, f"{where}: idempotent_tools") for t in self.idempotent_tools}
        self.timeout_s = _seconds(self.timeout_s, f"{where}: timeout_s", positive=True)
        self.keep_alive_s = _seconds(self.keep_alive_s, f"{where}: keep_alive_s", positive=False)
        if self.allow is not None:
            self.allow = _patterns(self.allow, f"{where}: allow")
        self.deny = _patterns(self.deny, f"{where}: deny")

    @property
    def transport(self) -> str:
        """``"stdio"`` or ``"streamable-http"``."""
        return "stdio" if self.command is not None else "streamable-http"

    def exposes(self, mcp_tool_name: str) -> bool:
        """Whether the allow and deny lists let this MCP tool through."""
        if any(fnmatch.fnmatchcase(mcp_tool_name, p) for p in self.deny):
            return False
        return self.allow is None or any(fnmatch.fnmatchcase(mcp_tool_name, p) for p in self.allow)

    def risk_of(self, mcp_tool_name: str) -> RiskLevel:
        """The configured risk of one MCP tool."""
        return self.tool_risks.get(mcp_tool_name, self.risk)


def _risk(value: Any, where: str) -> RiskLevel:
    if isinstance(value, bool) or not isinstance(value, RiskLevel | str | int):
        raise ConfigError(f"{where}: expected SAFE, ELEVATED or DANGEROUS, got {value!r}")
    try:
        return RiskLevel.parse(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _seconds(value: Any, where: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (positive and value == 0):
        expected = "a positive number of seconds" if positive else "a number of seconds >= 0"
        raise ConfigError(f"{where}: expected {expected}, got {value!r}")
    return float(value)


def _tool_ref(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: tool names must be non-empty strings, got {value!r}")
    return value


def _patterns(value: Any, where: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(f"{where}: expected a list of tool names or glob patterns, got {value!r}")
    out = list(value)
    for p in out:
        if not isinstance(p, str) or not p:
            raise ConfigError(f"{where}: expected non-empty strings, got {p!r}")
    return out


def _str_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping of names to strings, got {type(value).__name__}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k:
            raise ConfigError(f"{where}: names must be non-empty strings, got {k!r}")
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise ConfigError(f"{where}[{k!r}]: expected a string, got {v!r}")
        out[k] = str(v)
    return out


_YAML_FIELDS = (
    "name",
    "command",
    "url",
    "env",
    "headers",
    "risk",
    "tool_risks",
    "idempotent_tools",
    "timeout_s",
    "allow",
    "deny",
    "keep_alive_s",
)


def mcp_configs_from_yaml(data: str | Mapping[str, Any] | None, *, source: str = "<config>") -> list[MCPServerConfig]:
    """MCP server configurations from the ``mcp_servers:`` list of a YAML document.

    Each entry has the fields of :class:`MCPServerConfig` (``risk`` and the values of ``tool_risks`` as level names;
    ``command`` as a list, or a string split like a shell would). A document without ``mcp_servers`` has none.

    Args:
        data: YAML text, or the already-parsed document (a mapping).
        source: Where the document came from, for error messages.

    Returns:
        The configurations, in order.

    Raises:
        ConfigError: Invalid YAML, a bad shape, an unknown or invalid field, or a duplicate server name.
    """
    if isinstance(data, str):
        try:
            data = yaml.safe_load(data)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping with an 'mcp_servers' list, got {type(data).__name__}")
    entries = data.get("mcp_servers")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: mcp_servers must be a list of servers, got {type(entries).__name__}")
    configs: list[MCPServerConfig] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{source}: mcp_servers[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a mapping with name and command or url, got {entry!r}")
        if isinstance(entry.get("name"), str):
            where = f"{where} ({entry['name']!r})"
        unknown = sorted(str(k) for k in entry if k not in _YAML_FIELDS)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {list(_YAML_FIELDS)}")
        if "name" not in entry:
            raise ConfigError(f"{where}: missing required field 'name'")
        fields = dict(entry)
        command = fields.get("command")
        if isinstance(command, str):
            try:
                fields["command"] = shlex.split(command)
            except ValueError as exc:
                raise ConfigError(f"{where}: command: {exc}") from None
        for key in ("deny", "idempotent_tools", "tool_risks"):  # an empty YAML key (null) means none
            if key in fields and fields[key] is None:
                del fields[key]
        try:
            config = MCPServerConfig(**fields)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        except TypeError as exc:  # a field of the wrong kind that __post_init__ could not even look at
            raise ConfigError(f"{where}: {exc}") from None
        if config.name in seen:
            raise ConfigError(f"{where}: duplicate MCP server name {config.name!r}")
        seen.add(config.name)
        configs.append(config)
    return configs


# --- tools -----------------------------------------------------------------------------------------------------------


ArgumentCheck = Callable[[dict[str, Any]], list[str]]
"""Returns the problems with a set of arguments (empty when they are valid)."""


class MCPTool(Tool):
    """A tool of an MCP server, callable like any other :class:`Tool` (``invoke`` never raises).

    Attributes:
        server: The server's configuration.
        mcp_name: The server's own name for the tool (``name`` is ``<server>__<tool>``, sanitised).
        input_schema: The tool's input schema as the server listed it (``parameters`` is a copy).
    """

    server: MCPServerConfig
    mcp_name: str
    input_schema: dict[str, Any]

    def __init__(
        self,
        *,
        server: MCPServerConfig,
        mcp_name: str,
        name: str,
        description: str,
        input_schema: dict[str, Any],
        check_arguments: ArgumentCheck,
    ) -> None:
        """Build the tool; use :func:`load_mcp_tools` rather than calling this directly."""

        async def mcp_tool() -> None:
            """MCP tool."""  # placeholder: MCPTool overrides invoke and carries the server's schema

        super().__init__(
            mcp_tool,
            name=name,
            description=description,
            risk=server.risk_of(mcp_name),
            idempotent=mcp_name in server.idempotent_tools,
            timeout_s=server.timeout_s,
        )
        self.server = server
        self.mcp_name = mcp_name
        self.input_schema = input_schema
        self.parameters = copy.deepcopy(input_schema)
        self.import_path = None
        self._check_arguments = check_arguments
        self.fn = self._call_directly
        self.__name__ = self.__qualname__ = name
        self.__module__ = __name__
        self.__doc__ = description
        self.__wrapped__ = self.fn

    def __repr__(self) -> str:
        return (
            f"MCPTool(name={self.name!r}, server={self.server.name!r}, mcp_name={self.mcp_name!r}, "
            f"risk={self.risk.name}, idempotent={self.idempotent})"
        )

    async def invoke(self, arguments: dict[str, Any], context: ToolContext | None = None) -> ToolResult:
        """Validate ``arguments`` against the input schema, call the tool on its server and describe the outcome.

        Never raises for a failing call: invalid arguments, an error result from the server, a connection failure
        and a timeout all come back as a result with ``is_error=True``. Cancellation of the caller propagates.

        Args:
            arguments: Decoded JSON arguments, as the model proposed them.
            context: Facts about the call; MCP tools do not use them (the server runs elsewhere).

        Returns:
            The result to hand back to the model.
        """
        started = time.perf_counter()

        def done(content: str, *, is_error: bool = False, data: Any = None) -> ToolResult:
            text, truncated = _truncate(content, self.max_output_chars)
            return ToolResult(
                content=text,
                is_error=is_error,
                data=None if truncated else data,
                duration_ms=(time.perf_counter() - started) * 1000,
            )

        if not isinstance(arguments, dict):
            return done(
                f"invalid arguments for tool {self.name!r}: expected a JSON object, got {type(arguments).__name__}",
                is_error=True,
            )
        problems = self._check_arguments(arguments)
        if problems:
            return done(f"invalid arguments for tool {self.name!r}: {'; '.join(problems)}", is_error=True)

        with anyio.move_on_after(self.timeout_s) as scope:
            try:
                result = await _call_tool(self.server, self.mcp_name, arguments)
            except Exception as exc:
                if scope.cancel_called:
                    return done(f"tool {self.name!r} timed out after {self.timeout_s:g}s", is_error=True)
                logger.debug("MCP tool %r failed", self.name, exc_info=True)
                return done(f"tool {self.name!r} failed: {_describe(exc)}", is_error=True)
        if scope.cancelled_caught:
            return done(f"tool {self.name!r} timed out after {self.timeout_s:g}s", is_error=True)
        text, data = _result_content(result)
        if result.is_error:
            return done(text or f"tool {self.name!r} reported an error", is_error=True)
        return done(text, data=data)

    async def _call_directly(self, **kwargs: Any) -> Any:
        """``await tool(**kwargs)``: the structured result (or text); raises :class:`ToolError` on failure."""
        result = await self.invoke(kwargs)
        if result.is_error:
            raise ToolError(result.content)
        return result.data if result.data is not None else result.content


async def load_mcp_tools(config: MCPServerConfig) -> list[Tool]:
    """Connect to an MCP server, list its tools and wrap each one the configuration exposes.

    Args:
        config: The server.

    Returns:
        One :class:`MCPTool` per exposed MCP tool, in the server's order, named ``<server>__<tool>`` (characters
        outside ``[A-Za-z0-9_-]`` become ``_``; a name that would be too long or clash gets a short hash suffix).

    Raises:
        ConfigError: The ``mcp`` SDK is missing, the command is not found, or ``tool_risks`` /
            ``idempotent_tools`` name a tool the server does not have (a typo there must not leave a risky tool at
            the default level).
        ToolError: The server could not be reached or listed within ``timeout_s``.
    """
    _require_sdk()
    try:
        with anyio.fail_after(config.timeout_s):
            listed = await _list_tools(config)
    except ConfigError:
        raise
    except TimeoutError:
        raise ToolError(f"MCP server {config.name!r}: listing tools timed out after {config.timeout_s:g}s") from None
    except Exception as exc:
        raise ToolError(f"MCP server {config.name!r}: cannot list tools: {_describe(exc)}") from exc

    known = {t.name for t in listed}
    for what, names in (("tool_risks", set(config.tool_risks)), ("idempotent_tools", config.idempotent_tools)):
        missing = sorted(names - known)
        if missing:
            raise ConfigError(
                f"MCP server {config.name!r}: {what} names tools the server does not have: {missing}; "
                f"it has: {sorted(known)}"
            )

    tools: list[Tool] = []
    taken: set[str] = set()
    for listed_tool in listed:
        if not config.exposes(listed_tool.name):
            continue
        schema = listed_tool.input_schema
        try:
            check = _argument_check(schema)
        except ConfigError as exc:
            logger.warning("MCP server %r: skipping tool %r: %s", config.name, listed_tool.name, exc)
            continue
        name = _tool_name(config.name, listed_tool.name, taken)
        taken.add(name)
        tools.append(
            MCPTool(
                server=config,
                mcp_name=listed_tool.name,
                name=name,
                description=_description(config.name, listed_tool),
                input_schema=copy.deepcopy(dict(schema)),
                check_arguments=check,
            )
        )
    return tools


# --- connections -----------------------------------------------------------------------------------------------------


def _require_sdk() -> None:
    try:
        importlib.import_module("mcp")
    except ImportError:
        raise ConfigError("MCP servers need the official mcp SDK: pip install 'agentmaestro[mcp]'") from None


def _client(config: MCPServerConfig, *, on_eof: Callable[[], None] | None = None) -> Client:
    """An MCP client for one session with the server (enter it with ``async with``)."""
    from mcp import Client
    from mcp_types import Implementation

    from agentmaestro._version import __version__

    transport: Transport
    if config.command is not None:
        transport = _stdio_transport(config.command, config.env or {}, on_eof)
    else:
        assert config.url is not None
        transport = _http_transport(config.url, config.headers or {}, config.timeout_s)
    return Client(
        transport,
        read_timeout_seconds=config.timeout_s,
        client_info=Implementation(name="agentmaestro", version=__version__),
        cache=None,
    )


def _stdio_transport(command: list[str], env: dict[str, str], on_eof: Callable[[], None] | None) -> Transport:
    from mcp import StdioServerParameters
    from mcp.client.stdio import stdio_client

    full_env = {"PATH": os.environ.get("PATH", os.defpath), **env}
    executable = shutil.which(command[0], path=full_env["PATH"])
    if executable is None:
        raise ConfigError(f"MCP server command {command[0]!r} not found (PATH={full_env['PATH']!r})")
    executable = os.path.abspath(executable)
    if sys.platform == "win32" or not sys.executable:  # pragma: no cover - no exec() there: the SDK's env merge
        params = StdioServerParameters(command=executable, args=command[1:], env=full_env)
    else:
        params = StdioServerParameters(
            command=sys.executable,
            args=["-I", "-S", "-c", _LAUNCHER, json.dumps(sorted(full_env)), executable, *command],
            env=full_env,
        )
    transport = stdio_client(params)
    return transport if on_eof is None else _watch_eof(transport, on_eof)


@contextlib.asynccontextmanager
async def _watch_eof(transport: Transport, on_eof: Callable[[], None]) -> AsyncIterator[Any]:
    async with transport as (read_stream, write_stream):
        yield _EOFWatchingStream(read_stream, on_eof), write_stream


class _EOFWatchingStream:
    """A transport's read stream that reports its end (the stdio server exited) as soon as the session reads it."""

    def __init__(self, inner: Any, on_eof: Callable[[], None]) -> None:
        self._inner = inner
        self._on_eof = on_eof

    def __getattr__(self, name: str) -> Any:  # e.g. ``last_context``
        if name == "_inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_eof()
            raise

    def __aiter__(self) -> _EOFWatchingStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _EOFWatchingStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def _http_transport(url: str, headers: dict[str, str], timeout_s: float) -> AsyncIterator[Any]:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    timeout = httpx2.Timeout(min(30.0, timeout_s), read=timeout_s)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            yield streams


_T = TypeVar("_T")


async def _with_client(config: MCPServerConfig, fn: Callable[[Client], Awaitable[_T]]) -> _T:
    """Run ``fn`` with a client connected to the server.

    A stdio server with ``keep_alive_s > 0`` is started once per event loop and kept for later calls; otherwise
    (HTTP, or ``keep_alive_s == 0``) a session is opened for this call only.
    """
    if config.command is None or config.keep_alive_s <= 0:
        async with _client(config) as client:
            return await fn(client)
    for attempt in range(2):
        session = _StdioSession.for_config(config)
        try:
            return await session.run(fn)
        except _SessionGone as gone:
            if gone.was_connected and attempt == 0:
                continue  # the server exited while idle, so nothing was sent: start it again, once
            if gone.cause is not None:
                raise gone.cause from None
            raise ToolError(f"MCP server {config.name!r} exited") from None
    raise AssertionError("unreachable")  # pragma: no cover


async def close_mcp_sessions() -> None:
    """Stop the stdio MCP servers kept running for the current event loop (calls in flight fail).

    Servers are also stopped after ``keep_alive_s`` idle seconds, and when their event loop's tasks are cancelled
    at shutdown (as ``asyncio.run`` does); call this for a prompt, orderly stop (e.g. when a worker shuts down).
    """
    sessions = list(_LIVE_SESSIONS.get(asyncio.get_running_loop(), ()))
    for session in sessions:
        session.stop()
    if sessions:
        await asyncio.gather(*(session.task for session in sessions), return_exceptions=True)


class _SessionGone(Exception):
    """A kept-alive session could not take the call; nothing was sent."""

    def __init__(self, cause: BaseException | None, *, was_connected: bool) -> None:
        super().__init__(str(cause) if cause else "MCP session closed")
        self.cause = cause
        self.was_connected = was_connected


_LIVE_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[_StdioSession]] = weakref.WeakKeyDictionary()


class _StdioSession:
    """One running stdio server and its MCP session, owned by a background task of one event loop.

    The owner task enters and leaves the client (anyio needs both in the same task); calls come from any task of
    the loop and share the session (JSON-RPC multiplexes them). A session is *retired* (takes no new calls, stops
    once idle) after ``keep_alive_s`` idle seconds, and after a call that timed out, was cancelled or broke the
    connection: a server that may be stuck or confused is never reused. When the server exits on its own, the end
    of its stdout retires the session at once, so the next call starts a new server instead of failing.
    """

    def __init__(self, config: MCPServerConfig) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.retired = False
        self._client: Client | None = None
        self._connected = False
        self._error: BaseException | None = None
        self._busy = 0
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._idle_timer: asyncio.TimerHandle | None = None
        _LIVE_SESSIONS.setdefault(self.loop, set()).add(self)
        self.task = self.loop.create_task(self._run(), name=f"mcp-stdio-{config.name}")

    @classmethod
    def for_config(cls, config: MCPServerConfig) -> _StdioSession:
        """The current event loop's live session with this server, started if there is none."""
        for session in _LIVE_SESSIONS.get(asyncio.get_running_loop(), ()):
            if session.config is config and not session.retired:
                return session
        return cls(config)

    async def _run(self) -> None:
        try:
            async with _client(self.config, on_eof=self.retire) as client:
                self._client = client
                self._connected = True
                self._ready.set()
                self._touch()
                await self._stop.wait()
        except Exception as exc:
            self._error = exc
            logger.debug("MCP server %r: session ended with an error", self.config.name, exc_info=True)
        finally:
            self._client = None
            self.retired = True
            self._stop.set()
            self._ready.set()
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            _LIVE_SESSIONS.get(self.loop, set()).discard(self)

    async def run(self, fn: Callable[[Client], Awaitable[_T]]) -> _T:
        """Run ``fn`` on the session.

        Raises:
            _SessionGone: The session ended (or failed to start) before the call was sent.
        """
        await self._ready.wait()
        client = self._client
        if client is None or self.retired:
            raise _SessionGone(self._error, was_connected=self._connected)
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        self._busy += 1
        healthy = False
        try:
            result = await fn(client)
            healthy = True
            return result
        except MCPError as exc:
            healthy = exc.code != CONNECTION_CLOSED  # the server answered with an error: the session is fine
            raise
        finally:
            self._busy -= 1
            if not healthy:
                self.retire()
            if self.retired and self._busy == 0:
                self._stop.set()
            elif healthy:
                self._touch()

    def retire(self) -> None:
        """Take no new calls; stop the server once the calls in flight are done."""
        self.retired = True
        if self._busy == 0:
            self._stop.set()

    def stop(self) -> None:
        """Stop the server now."""
        self.retired = True
        self._stop.set()

    def _touch(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = self.loop.call_later(self.config.keep_alive_s, self._idle_check)

    def _idle_check(self) -> None:
        if self._busy == 0:
            self.retire()


async def _call_tool(config: MCPServerConfig, mcp_name: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
    async def call(client: Client) -> mcp_types.CallToolResult:
        return await client.call_tool(mcp_name, arguments, read_timeout_seconds=config.timeout_s)

    return await _with_client(config, call)


async def _list_tools(config: MCPServerConfig) -> list[mcp_types.Tool]:
    async def list_all(client: Client) -> list[mcp_types.Tool]:
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return listed

    return await _with_client(config, list_all)


# --- helpers ---------------------------------------------------------------------------------------------------------


def _tool_name(server: str, mcp_name: str, taken: set[str]) -> str:
    name = f"{server}__{_UNSAFE_CHARS_RE.sub('_', mcp_name)}"
    if len(name) <= _MAX_TOOL_NAME and name not in taken:
        return name
    digest = hashlib.sha256(mcp_name.encode()).hexdigest()
    for size in (8, 16, 64):
        candidate = f"{name[: _MAX_TOOL_NAME - size - 1]}_{digest[:size]}"
        if candidate not in taken:
            return candidate
    raise ConfigError(f"MCP server {server!r}: cannot name tool {mcp_name!r} uniquely")  # pragma: no cover


def _description(server: str, listed: mcp_types.Tool) -> str:
    text = " ".join((listed.description or "").split()) or (listed.title or "").strip()
    if not text:
        text = f"Tool {listed.name!r} of the MCP server {server!r}."
    if len(text) > MAX_DESCRIPTION_CHARS:
        text = text[: MAX_DESCRIPTION_CHARS - 3] + "..."
    return text


def _argument_check(schema: Mapping[str, Any]) -> ArgumentCheck:
    """A checker for arguments against a tool's input schema: jsonschema when installed, else a minimal one.

    Unknown top-level arguments are refused unless the schema explicitly allows extra properties: a misspelt
    optional argument would otherwise be silently ignored by most servers.

    Raises:
        ConfigError: The schema is not a valid JSON schema of an object.
    """
    if not isinstance(schema, Mapping) or schema.get("type", "object") != "object":
        raise ConfigError("its input schema does not describe an object")
    properties = schema.get("properties") or {}
    if not isinstance(properties, Mapping):
        raise ConfigError("its input schema's 'properties' is not a mapping")
    required = schema.get("required") or []
    closed = "additionalProperties" not in schema and "patternProperties" not in schema
    try:
        jsonschema: Any = importlib.import_module("jsonschema")
    except ImportError:  # pragma: no cover - jsonschema comes with the mcp SDK
        jsonschema = None
    validator: Any = None
    if jsonschema is not None:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema.exceptions.SchemaError as exc:
            raise ConfigError(f"its input schema is invalid: {_cut(str(exc.message))}") from None
        validator = cls(schema)

    def check(arguments: dict[str, Any]) -> list[str]:
        problems: list[str] = []
        if closed:
            problems.extend(f"{key}: unexpected argument" for key in arguments if key not in properties)
        if validator is not None:
            errors = sorted(validator.iter_errors(arguments), key=lambda e: [str(p) for p in e.absolute_path])
            for err in errors:
                loc = ".".join(str(p) for p in err.absolute_path) or "arguments"
                problems.append(f"{loc}: {_cut(str(err.message))}")
        else:  # pragma: no cover
            problems.extend(f"{key}: missing required argument" for key in required if key not in arguments)
        if len(problems) > _MAX_ERRORS_SHOWN:
            problems = [*problems[:_MAX_ERRORS_SHOWN], f"and {len(problems) - _MAX_ERRORS_SHOWN} more"]
        return problems

    return check


def _result_content(result: mcp_types.CallToolResult) -> tuple[str, Any]:
    """The text of a tool result (text blocks joined; other blocks described) and its structured data, if any."""
    from mcp_types import (
        AudioContent,
        BlobResourceContents,
        EmbeddedResource,
        ImageContent,
        ResourceLink,
        TextContent,
        TextResourceContents,
    )

    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, ImageContent | AudioContent):
            parts.append(f"[{block.type}: {block.mime_type}, {len(block.data)} base64 characters]")
        elif isinstance(block, ResourceLink):
            parts.append(f"[resource link: {block.uri}]")
        elif isinstance(block, EmbeddedResource):
            resource = block.resource
            if isinstance(resource, TextResourceContents):
                parts.append(resource.text)
            elif isinstance(resource, BlobResourceContents):
                parts.append(f"[resource: {resource.uri}, {len(resource.blob)} base64 characters]")
        else:  # pragma: no cover - a content type newer than this code
            parts.append(f"[{getattr(block, 'type', 'unknown')} content]")
    data = result.structured_content
    text = "\n".join(parts)
    if not parts and data is not None:
        text = json.dumps(data, ensure_ascii=False)
    return text, data


def _describe(exc: BaseException) -> str:
    """One line about an exception, looking through exception groups of a single error."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    with contextlib.suppress(ImportError):
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
            return "the MCP server closed the connection (did it exit? see its stderr)"
    message = " ".join(str(exc).split())
    kind = type(exc).__name__
    return _cut(f"{kind}: {message}" if message else kind)


def _cut(text: str, limit: int = _MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _truncate(content: str, limit: int) -> tuple[str, bool]:
    if len(content) <= limit:
        return content, False
    return f"{content[:limit]}\n[truncated {len(content) - limit} chars]", True
