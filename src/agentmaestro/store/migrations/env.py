from __future__ import annotations

from alembic import context

import agentmaestro.store.dialects  # noqa: F401  (MySQL column types and table options)
from agentmaestro.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - always run programmatically
    raise RuntimeError("run migrations through 'maestro db upgrade'")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
context.run_migrations()
