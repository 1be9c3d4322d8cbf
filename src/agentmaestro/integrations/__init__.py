"""Not a home for new code: ``integrations/`` was dissolved into credentials/, notify/, server/chat/, server/mcp/.

What is left: deprecated aliases of the three import paths the docs once named (``credentials``, ``notify_signing``,
``notify_targets``; each warns and forwards to the new module, and goes away in 0.2), and ``mcp_planes.py``, where the
MCP tools act, until the service layer's planes replace it.
"""
