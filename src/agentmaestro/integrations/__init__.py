"""Integrations: where AgentMaestro meets the tools teams already use (chat, MCP, notifications, credentials)."""
