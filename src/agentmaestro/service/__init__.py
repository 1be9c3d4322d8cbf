"""The use cases: one function per thing a person (or key) does, whichever door they come through.

Each takes the store, one input dataclass and an :class:`~agentmaestro.actor.Actor`; it checks the
actor's role (and, for an API key, the workspace's quotas), makes the change and writes its audit entry
in one transaction, and returns what the store returned. The REST routes, the CLI (locally and, through
the server, with ``--server``), the MCP server and the SDK all call these, so a cancel is a cancel
everywhere: same checks, same events, same audit entry.

- :mod:`~agentmaestro.service.runs`: start, cancel, resume, fork, restart.
- :mod:`~agentmaestro.service.approvals`: approve or reject a held tool call, resolve an escalation.
- :mod:`~agentmaestro.service.keys`: create and revoke API keys.
- :mod:`~agentmaestro.service.workflows`, :mod:`~agentmaestro.service.objectives`: start them, steer objectives.
- :mod:`~agentmaestro.service.credentials`, :mod:`~agentmaestro.service.webhooks`,
  :mod:`~agentmaestro.service.workspaces`: the workspace's credentials, webhooks; new workspaces.
- :mod:`~agentmaestro.service.quotas`: the workspace quotas a key's new run is held to.
- :mod:`~agentmaestro.service.access`: the role each use case checks first.
- :mod:`~agentmaestro.service.plane`: the interface the CLI and the MCP tools are written against (local or remote).
"""
