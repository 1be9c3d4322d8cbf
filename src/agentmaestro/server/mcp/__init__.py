"""AgentMaestro as an MCP server.

:mod:`.server` builds the MCP tools over a control plane; ``maestro mcp`` serves them over stdio and ``maestro serve``
over streamable HTTP at ``/mcp`` (:mod:`.http`).
"""
