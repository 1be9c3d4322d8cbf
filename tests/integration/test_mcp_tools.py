"""MCP servers as tool sources, over real transports.

Servers used: our own (``tests/fakes/mcp_echo_server.py``, built with the SDK's ``MCPServer``) over stdio and over
streamable HTTP on 127.0.0.1, and the third-party ``mcp-server-time`` from PyPI over stdio.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from agentmaestro.agents import Agent
from agentmaestro.core.risk import RiskLevel
from agentmaestro.errors import ConfigError, ToolError
from agentmaestro.tools.mcp import (
    MCPServerConfig,
    MCPTool,
    close_mcp_sessions,
    load_mcp_tools,
    mcp_configs_from_yaml,
)
from agentmaestro.tools.registry import Tool, ToolRegistry

pytestmark = pytest.mark.anyio

ECHO_SERVER = str(Path(__file__).resolve().parents[1] / "fakes" / "mcp_echo_server.py")
ECHO_COMMAND = [sys.executable, ECHO_SERVER]
TIME_COMMAND = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]


@pytest.fixture
async def sessions() -> AsyncIterator[None]:
    """Stop the stdio servers a test kept running (they would otherwise idle until the event loop closes)."""
    yield
    await close_mcp_sessions()


def process_gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def by_mcp_name(tools: list[Tool]) -> dict[str, MCPTool]:
    out: dict[str, MCPTool] = {}
    for t in tools:
        assert isinstance(t, MCPTool)
        out[t.mcp_name] = t
    return out


# --- configuration -------------------------------------------------------------------------------------------------


def test_config_defaults_and_normalisation() -> None:
    config = MCPServerConfig(
        "srv",
        command=["python", "-m", "x"],
        env={"PORT": 8080},  # type: ignore[dict-item]  # YAML numbers are accepted as strings
        tool_risks={"rm": "dangerous"},  # type: ignore[dict-item]
        idempotent_tools=["get"],  # type: ignore[arg-type]
        timeout_s=5,
    )
    assert config.risk is RiskLevel.ELEVATED
    assert config.tool_risks == {"rm": RiskLevel.DANGEROUS}
    assert config.idempotent_tools == {"get"}
    assert config.env == {"PORT": "8080"}
    assert config.timeout_s == 5.0
    assert config.transport == "stdio"
    assert config.risk_of("rm") is RiskLevel.DANGEROUS
    assert config.risk_of("other") is RiskLevel.ELEVATED
    assert MCPServerConfig("web", url="http://127.0.0.1:1/mcp").transport == "streamable-http"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name", "command": ["x"]}, "invalid MCP server name"),
        ({"name": "", "command": ["x"]}, "invalid MCP server name"),
        ({"name": "s"}, "exactly one of command"),
        ({"name": "s", "command": ["x"], "url": "http://h/mcp"}, "exactly one of command"),
        ({"name": "s", "command": []}, "non-empty list"),
        ({"name": "s", "command": "python -m x"}, "list of strings"),
        ({"name": "s", "url": "ftp://h/mcp"}, "http:// or https://"),
        ({"name": "s", "url": "http://h/mcp", "env": {"A": "1"}}, "stdio servers"),
        ({"name": "s", "command": ["x"], "headers": {"A": "1"}}, "HTTP servers"),
        ({"name": "s", "command": ["x"], "risk": "HIGH"}, "unknown risk level"),
        ({"name": "s", "command": ["x"], "tool_risks": {"t": "nope"}}, "tool_risks['t']"),
        ({"name": "s", "command": ["x"], "timeout_s": 0}, "timeout_s"),
        ({"name": "s", "command": ["x"], "timeout_s": "10"}, "timeout_s"),
        ({"name": "s", "command": ["x"], "deny": "rm"}, "deny"),
        ({"name": "s", "command": ["x"], "env": {"A": None}}, "env['A']"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        MCPServerConfig(**kwargs)  # type: ignore[arg-type]


def test_configs_from_yaml() -> None:
    text = """
mcp_servers:
  - name: time
    command: python -m mcp_server_time --local-timezone 'Europe/Paris'
    risk: safe
  - name: tracker
    url: https://mcp.example.com/mcp
    headers: {Authorization: Bearer abc}
    tool_risks: {delete_issue: DANGEROUS}
    idempotent_tools: [get_issue]
    timeout_s: 12.5
    allow: ["*_issue"]
    deny: [delete_*]
"""
    time_cfg, tracker = mcp_configs_from_yaml(text)
    assert time_cfg.command == ["python", "-m", "mcp_server_time", "--local-timezone", "Europe/Paris"]
    assert time_cfg.risk is RiskLevel.SAFE
    assert tracker.url == "https://mcp.example.com/mcp"
    assert tracker.headers == {"Authorization": "Bearer abc"}
    assert tracker.tool_risks == {"delete_issue": RiskLevel.DANGEROUS}
    assert tracker.idempotent_tools == {"get_issue"}
    assert tracker.timeout_s == 12.5
    assert tracker.exposes("get_issue")
    assert not tracker.exposes("delete_issue")  # deny beats allow
    assert not tracker.exposes("list_projects")  # not allowed
    assert mcp_configs_from_yaml("agents: []") == []
    assert mcp_configs_from_yaml("") == []
    assert mcp_configs_from_yaml({"mcp_servers": [{"name": "a", "command": ["x"], "deny": None}]})[0].deny == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mcp_servers: [", "invalid YAML"),
        ("- name: x", "expected a mapping with an 'mcp_servers' list"),
        ("mcp_servers: {name: x}", "mcp_servers must be a list"),
        ("mcp_servers: [x]", r"mcp_servers\[0\]: expected a mapping"),
        ("mcp_servers: [{command: [x]}]", "missing required field 'name'"),
        (
            "mcp_servers: [{name: a, command: [x], colour: red}]",
            r"mcp_servers\[0\] \('a'\): unknown field\(s\) \['colour'\]",
        ),
        ("mcp_servers: [{name: a, command: [x], risk: extreme}]", r"mcp_servers\[0\] \('a'\): .*unknown risk level"),
        ("mcp_servers: [{name: a, command: [x]}, {name: a, url: 'http://h/mcp'}]", "duplicate MCP server name 'a'"),
        ("mcp_servers: [{name: a, command: 'x \"unclosed'}]", "command: No closing quotation"),
        ("mcp_servers: [{name: a, command: [x], tool_risks: [rm]}]", "tool_risks must be a mapping"),
    ],
)
def test_configs_from_yaml_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        mcp_configs_from_yaml(text, source="servers.yaml")


# --- our own server over stdio -------------------------------------------------------------------------------------


async def test_stdio_tools_names_schemas_and_risks(sessions: None) -> None:
    config = MCPServerConfig(
        "echo",
        command=ECHO_COMMAND,
        tool_risks={"echo": RiskLevel.SAFE, "fail": RiskLevel.DANGEROUS},
        idempotent_tools={"add"},
        timeout_s=30,
    )
    tools = await load_mcp_tools(config)
    assert [t.name for t in tools] == [
        "echo__echo",
        "echo__add",
        "echo__fail",
        "echo__sleep",
        "echo__pid",
        "echo__crash",
        "echo__exit_soon",
        "echo__show_env",
    ]
    byname = by_mcp_name(tools)
    add, echo, fail = byname["add"], byname["echo"], byname["fail"]

    assert add.description == "Add two integers."
    assert add.parameters["type"] == "object"
    assert add.parameters["required"] == ["a", "b"]
    assert {k: v["type"] for k, v in add.parameters["properties"].items()} == {"a": "integer", "b": "integer"}
    assert add.spec().name == "echo__add" and add.spec().parameters == add.parameters
    assert add.risk is RiskLevel.ELEVATED  # the default for MCP tools
    assert echo.risk is RiskLevel.SAFE and fail.risk is RiskLevel.DANGEROUS  # per-tool overrides
    assert add.idempotent and not echo.idempotent
    assert add.timeout_s == 30 and add.import_path is None
    assert all(isinstance(t, Tool) for t in tools)
    # They go wherever tools go.
    assert "echo__add" in ToolRegistry(tools)
    agent = Agent(name="mcp-agent", model="openai:gpt-test", tools=tools)
    assert agent.spec()["tools"][1] == {
        "name": "echo__add",
        "risk": "ELEVATED",
        "idempotent": True,
        "import_path": None,
    }

    result = await add.invoke({"a": 2, "b": 3})
    assert not result.is_error and result.content == "5"
    assert result.data == {"result": 5}  # the server's structured content
    result = await echo.invoke({"text": "héllo\nworld"})
    assert result.content == "héllo\nworld" and not result.is_error

    result = await fail.invoke({})
    assert result.is_error
    assert "fail" in result.content

    assert await add(a=40, b=2) == {"result": 42}  # calling the tool directly
    with pytest.raises(ToolError, match="failed|Error"):
        await fail()


async def test_invalid_arguments_are_errors_not_calls(sessions: None) -> None:
    (add,) = await load_mcp_tools(MCPServerConfig("echo", command=ECHO_COMMAND, allow=["add"]))
    assert isinstance(add, MCPTool)
    # Point the tool at a server that cannot start: invalid arguments must be refused before any connection.
    add.server = MCPServerConfig("echo", command=["no-such-mcp-server-xyz"])
    cases: list[tuple[object, str]] = [
        ({"a": 1}, "arguments: 'b' is a required property"),
        ({"a": "1", "b": 2}, "a: '1' is not of type 'integer'"),
        ({"a": 1, "b": 2, "c": 3}, "c: unexpected argument"),
        ({"a": True, "b": 2}, "a: True is not of type 'integer'"),
        (["a", "b"], "expected a JSON object, got list"),
    ]
    for arguments, message in cases:
        result = await add.invoke(arguments)  # type: ignore[arg-type]
        assert result.is_error
        assert result.content.startswith("invalid arguments for tool 'echo__add': "), result.content
        assert message in result.content
    valid = await add.invoke({"a": 1, "b": 2})  # and valid ones do try to connect
    assert valid.is_error and "not found" in valid.content


async def test_stdio_server_gets_only_path_and_configured_env(sessions: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAESTRO_TEST_SECRET", "hunter2")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    config = MCPServerConfig("echo", command=ECHO_COMMAND, env={"GREETING": "hi"}, allow=["show_env"])
    (show_env,) = await load_mcp_tools(config)

    async def seen(name: str) -> str:
        result = await show_env.invoke({"name": name})
        assert not result.is_error, result.content
        return result.content

    assert await seen("MAESTRO_TEST_SECRET") == "<unset>"
    assert await seen("OPENAI_API_KEY") == "<unset>"
    assert await seen("HOME") == "<unset>"  # not even the SDK's default HOME/USER/SHELL...
    assert await seen("GREETING") == "hi"
    assert await seen("PATH") == os.environ["PATH"]


async def test_timeout_is_an_error_result(sessions: None) -> None:
    config = MCPServerConfig("echo", command=ECHO_COMMAND, allow=["sleep", "pid"], timeout_s=20)
    tools = by_mcp_name(await load_mcp_tools(config))
    sleep, pid = tools["sleep"], tools["pid"]
    ok = await sleep.invoke({"seconds": 0.1})
    assert ok.content == "slept 0.1" and not ok.is_error
    first_pid = (await pid.invoke({})).data

    sleep.timeout_s = 2.0
    started = time.perf_counter()
    result = await sleep.invoke({"seconds": 60})
    assert result.is_error
    assert result.content == "tool 'echo__sleep' timed out after 2s"
    assert 2.0 <= time.perf_counter() - started < 6  # the server is stopped in the background, not awaited
    # A server that timed out is never reused: the next call gets a new one.
    assert (await pid.invoke({})).data not in (None, first_pid)

    # A timeout retires the server, but calls already in flight on it still finish.
    slow = copy.copy(sleep)
    slow.timeout_s = 20
    sleep.timeout_s = 1.0
    timed_out, finished = await asyncio.gather(sleep.invoke({"seconds": 60}), slow.invoke({"seconds": 2.5}))
    assert timed_out.is_error and "timed out" in timed_out.content
    assert not finished.is_error and finished.content == "slept 2.5"

    per_call = MCPServerConfig("echo", command=ECHO_COMMAND, allow=["sleep"], timeout_s=30, keep_alive_s=0)
    (sleep,) = await load_mcp_tools(per_call)
    sleep.timeout_s = 2.0
    result = await sleep.invoke({"seconds": 60})
    assert result.is_error and result.content == "tool 'echo__sleep' timed out after 2s"


async def test_stdio_server_is_kept_alive_and_replaced_when_it_dies(sessions: None) -> None:
    config = MCPServerConfig("echo", command=ECHO_COMMAND, allow=["pid", "crash", "exit_soon", "add"])
    tools = by_mcp_name(await load_mcp_tools(config))
    pid, crash, exit_soon, add = tools["pid"], tools["crash"], tools["exit_soon"], tools["add"]

    async def server_pid() -> int:
        result = await pid.invoke({})
        assert not result.is_error, result.content
        assert isinstance(result.data, dict)
        value = result.data["result"]
        assert isinstance(value, int)
        return value

    first = await server_pid()
    assert await server_pid() == first  # the server that listed the tools serves the calls
    sums = [await add.invoke({"a": i, "b": 1}) for i in range(5)]
    assert [r.content for r in sums] == ["1", "2", "3", "4", "5"]
    concurrent = await asyncio.gather(*(add.invoke({"a": i, "b": i}) for i in range(10)))
    assert [r.content for r in concurrent] == [str(2 * i) for i in range(10)]
    assert await server_pid() == first

    # The server dies during a call: that call is an error (it may or may not have run); the next one gets a new
    # server.
    result = await crash.invoke({})
    assert result.is_error and "echo__crash" in result.content
    second = await server_pid()
    assert second != first

    # The server exits while idle: the next call starts a new one without an error (nothing had been sent).
    assert (await exit_soon.invoke({})).content == "bye"
    deadline = time.monotonic() + 30
    while not process_gone(second) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the end of its stdout reaches the session
    third = await server_pid()
    assert third not in (first, second)

    # Stopping all kept-alive servers of this loop; a later call starts one again.
    await close_mcp_sessions()
    assert await server_pid() not in (first, second, third)


async def test_idle_server_is_stopped_and_per_call_mode(sessions: None) -> None:
    idle = MCPServerConfig("echo", command=ECHO_COMMAND, allow=["pid"], keep_alive_s=0.5)
    (pid,) = await load_mcp_tools(idle)
    first = (await pid.invoke({})).data
    assert (await pid.invoke({})).data == first
    await asyncio.sleep(1.5)
    assert (await pid.invoke({})).data != first

    per_call = MCPServerConfig("echo", command=ECHO_COMMAND, allow=["pid"], keep_alive_s=0)
    (pid,) = await load_mcp_tools(per_call)
    assert (await pid.invoke({})).data != (await pid.invoke({})).data


async def test_allow_deny_and_unknown_tool_names(sessions: None) -> None:
    config = MCPServerConfig("echo", command=ECHO_COMMAND, allow=["e*", "add", "fail"], deny=["fail", "exit_*"])
    assert [t.name for t in await load_mcp_tools(config)] == ["echo__echo", "echo__add"]

    typo = MCPServerConfig("echo", command=ECHO_COMMAND, tool_risks={"fial": RiskLevel.DANGEROUS})
    with pytest.raises(ConfigError, match=r"tool_risks names tools the server does not have: \['fial'\]"):
        await load_mcp_tools(typo)


async def test_unreachable_servers(sessions: None) -> None:
    with pytest.raises(ConfigError, match="command 'no-such-mcp-server-xyz' not found"):
        await load_mcp_tools(MCPServerConfig("nope", command=["no-such-mcp-server-xyz"]))
    with pytest.raises(ToolError, match="MCP server 'crash': cannot list tools"):
        await load_mcp_tools(MCPServerConfig("crash", command=[sys.executable, "-c", "raise SystemExit(3)"]))
    with pytest.raises(ToolError, match="MCP server 'web': cannot list tools"):
        await load_mcp_tools(MCPServerConfig("web", url="http://127.0.0.1:9/mcp", timeout_s=5))


# --- a real third-party server from PyPI ---------------------------------------------------------------------------


async def test_mcp_server_time_from_pypi(sessions: None) -> None:
    config = MCPServerConfig("time", command=TIME_COMMAND, idempotent_tools={"get_current_time"})
    tools = await load_mcp_tools(config)
    assert [t.name for t in tools] == ["time__get_current_time", "time__convert_time"]
    get_time = by_mcp_name(tools)["get_current_time"]
    assert get_time.risk is RiskLevel.ELEVATED and get_time.idempotent
    assert get_time.parameters["required"] == ["timezone"]
    assert get_time.parameters["properties"]["timezone"]["type"] == "string"

    result = await get_time.invoke({"timezone": "Asia/Tokyo"})
    assert not result.is_error, result.content
    payload = json.loads(result.content)
    assert payload["timezone"] == "Asia/Tokyo"
    now = datetime.fromisoformat(payload["datetime"])
    assert now.utcoffset() is not None and now.utcoffset().total_seconds() == 9 * 3600  # type: ignore[union-attr]
    assert abs(now.timestamp() - time.time()) < 120
    assert result.data == payload

    bad = await get_time.invoke({"timezone": "Mars/Olympus_Mons"})
    assert bad.is_error and "Invalid timezone" in bad.content
    missing = await get_time.invoke({})
    assert missing.is_error and "'timezone' is a required property" in missing.content


# --- our own server over streamable HTTP ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_echo_url() -> Iterator[str]:
    """Our echo server over streamable HTTP on 127.0.0.1 (a subprocess that binds a free port and reports it)."""
    proc = subprocess.Popen(
        [*ECHO_COMMAND, "--http"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, bufsize=1
    )
    assert proc.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline() if proc.stdout else ""), daemon=True)
    reader.start()
    reader.join(timeout=60)
    try:
        if not lines or not lines[0].startswith("PORT "):
            pytest.fail(f"the HTTP MCP server did not start (exit code {proc.poll()}, said {lines!r})")
        yield f"http://127.0.0.1:{int(lines[0].split()[1])}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


async def test_streamable_http_transport(sessions: None, http_echo_url: str) -> None:
    config = MCPServerConfig(
        "web",
        url=http_echo_url,
        headers={"X-Test": "1"},
        tool_risks={"echo": "SAFE"},  # type: ignore[dict-item]
        timeout_s=20,
    )
    tools = await load_mcp_tools(config)
    assert [t.name for t in tools][:3] == ["web__echo", "web__add", "web__fail"]
    byname = by_mcp_name(tools)
    assert byname["echo"].risk is RiskLevel.SAFE and byname["add"].risk is RiskLevel.ELEVATED

    result = await byname["add"].invoke({"a": 20, "b": 22})
    assert not result.is_error and result.content == "42"
    result = await byname["echo"].invoke({"text": "over http"})
    assert result.content == "over http"
    assert (await byname["fail"].invoke({})).is_error
    bad = await byname["add"].invoke({"a": 1})
    assert bad.is_error and "'b' is a required property" in bad.content

    sleep = byname["sleep"]
    sleep.timeout_s = 1.5
    started = time.perf_counter()
    result = await sleep.invoke({"seconds": 30})
    assert result.is_error and result.content == "tool 'web__sleep' timed out after 1.5s"
    assert time.perf_counter() - started < 10
    # The server is still fine afterwards.
    assert (await byname["add"].invoke({"a": 1, "b": 1})).content == "2"
