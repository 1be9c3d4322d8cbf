"""MCP tools wired into agents through an agents folder's mcp_servers.yaml, governed by the same gate."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agentmaestro import Orchestrator, RunStatus, load_agents_dir
from agentmaestro.engine.worker import WorkerConfig
from agentmaestro.errors import ConfigError

ECHO = Path(__file__).resolve().parents[1] / "fakes" / "mcp_echo_server.py"


def write_folder(tmp: Path, tools: str, risk: str = "ELEVATED") -> Path:
    folder = tmp / "agents"
    folder.mkdir()
    (folder / "mcp_servers.yaml").write_text(
        f"mcp_servers:\n  - name: echo\n    command: [{sys.executable!r}, {str(ECHO)!r}]\n    risk: {risk}\n"
    )
    (folder / "scripts").mkdir()
    (folder / "scripts" / "script.yaml").write_text(
        "turns:\n"
        "  - tool_calls: [{name: echo__echo, arguments: {text: hello mcp}}]\n"
        "  - content: 'echoed: {{last_tool_result}}'\n"
    )
    (folder / "user.yaml").write_text(f"name: mcpuser\nmodel: scripted:scripts/script.yaml\ntools: [{tools}]\n")
    return folder


def test_mcp_tool_runs_through_the_gate(tmp_path: Path) -> None:
    registry = load_agents_dir(write_folder(tmp_path, "'mcp:echo/echo'"))
    agent = registry.get("mcpuser")
    assert list(agent.tool_map()) == ["echo__echo"]
    with Orchestrator(f"sqlite:///{tmp_path / 'm.db'}", config=WorkerConfig(poll_interval_s=0.05)) as orch:
        report = orch.run(agent, "go", timeout=60)
        assert report.status is RunStatus.COMPLETED and report.output == "echoed: hello mcp"


def test_dangerous_mcp_tool_waits_for_approval(tmp_path: Path) -> None:
    registry = load_agents_dir(write_folder(tmp_path, "'mcp:echo'", risk="DANGEROUS"))
    agent = registry.get("mcpuser")
    assert "echo__echo" in agent.tool_map() and len(agent.tool_map()) > 1
    with Orchestrator(f"sqlite:///{tmp_path / 'm.db'}", config=WorkerConfig(poll_interval_s=0.05)) as orch:
        report = orch.run(agent, "go", timeout=60)
        assert report.status is RunStatus.WAITING_FOR_APPROVAL
        [appr] = orch.approvals()
        assert appr["tool"] == "echo__echo" and appr["risk"] == "DANGEROUS"
        orch.approve(appr["approval_id"])
        assert orch.wait(report.run_id, timeout=60).output == "echoed: hello mcp"


def test_unknown_mcp_server_or_tool_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown MCP server 'nope'"):
        load_agents_dir(write_folder(tmp_path, "'mcp:nope'"))
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ConfigError, match="has no tool 'missing'"):
        load_agents_dir(write_folder(other, "'mcp:echo/missing'"))
