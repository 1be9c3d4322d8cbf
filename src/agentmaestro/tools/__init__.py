"""Tools a model may call: Python functions with a schema, a risk level and a timeout."""

from __future__ import annotations

from agentmaestro.tools.registry import Tool, ToolRegistry, ToolResult, load_tool, tool

__all__ = ["Tool", "ToolRegistry", "ToolResult", "load_tool", "tool"]
