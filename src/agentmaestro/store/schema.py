"""SQLAlchemy Core tables. Every table carries ``workspace_id``; times are Unix seconds (float)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = JSON().with_variant(JSONB(), "postgresql")

DEFAULT_WORKSPACE = "default"

workspaces = Table(
    "workspaces",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("settings", Json, nullable=False, server_default=text("'{}'")),
)

agents = Table(
    "agents",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("spec", Json, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    ForeignKeyConstraint(["workspace_id"], ["workspaces.workspace_id"]),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(40), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("agent_name", String(200), nullable=False),
    Column("parent_run_id", String(40), nullable=True),
    Column("created_by", String(300), nullable=True),  # user:<sha256 of email> | key:<name> | cli:<login>
    Column("input", Text, nullable=False),
    Column("spec", Json, nullable=False),
    # Snapshot: the folded state (JSON) plus the columns that queries filter and sort on.
    Column("state", Json, nullable=False),
    Column("status", String(32), nullable=False),
    Column("phase", String(16), nullable=False),
    Column("steps", Integer, nullable=False, server_default=text("0")),
    Column("tool_calls", Integer, nullable=False, server_default=text("0")),
    Column("tokens", Integer, nullable=False, server_default=text("0")),
    Column("cost_usd", Float, nullable=False, server_default=text("0")),
    Column("output", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("last_seq", Integer, nullable=False),
    # Concurrency control: optimistic version, lease with fencing epoch.
    Column("version", Integer, nullable=False),
    Column("lease_owner", String(120), nullable=True),
    Column("lease_epoch", Integer, nullable=False, server_default=text("0")),
    Column("lease_expires_at", Float, nullable=True),
    # Signals from outside the lease holder (read by the worker, recorded as events by it).
    Column("cancel_requested", Boolean, nullable=False, server_default=text("false")),
    Column("cancel_reason", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    ForeignKeyConstraint(["workspace_id"], ["workspaces.workspace_id"]),
    Index("ix_runs_claim", "status", "created_at"),
    Index("ix_runs_workspace_created", "workspace_id", "created_at"),
    Index("ix_runs_parent", "parent_run_id"),
)

steps = Table(
    "steps",
    metadata,
    Column("run_id", String(40), primary_key=True),
    Column("step_index", Integer, primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=True),
    Column("status", String(16), nullable=False),
    Column("input_tokens", Integer, nullable=False, server_default=text("0")),
    Column("output_tokens", Integer, nullable=False, server_default=text("0")),
    Column("cost_usd", Float, nullable=False, server_default=text("0")),
    Column("duration_ms", Float, nullable=False, server_default=text("0")),
    Column("seq", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
)
"""One row per finished step; ``seq`` names the event that holds the step's payload."""

run_events = Table(
    "run_events",
    metadata,
    Column("run_id", String(40), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("type", String(40), nullable=False),
    Column("step_index", Integer, nullable=True),
    Column("payload", Json, nullable=False),
    Column("created_at", Float, nullable=False),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
)

approvals = Table(
    "approvals",
    metadata,
    Column("approval_id", String(40), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("run_id", String(40), nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("call_id", String(200), nullable=False),
    Column("tool", String(200), nullable=False),
    Column("arguments", Json, nullable=False),
    Column("args_hash", String(64), nullable=False),
    Column("risk", String(16), nullable=False),
    Column("reasons", Json, nullable=False),
    Column("status", String(16), nullable=False),
    Column("requested_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("decided_at", Float, nullable=True),
    Column("decided_by", String(200), nullable=True),
    Column("decision_reason", Text, nullable=True),
    Column("approved_arguments", Json, nullable=True),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
    Index("ix_approvals_workspace_status", "workspace_id", "status"),
    Index("ix_approvals_status_expires", "status", "expires_at"),
)
"""Tool calls held for a human decision; one row per request, bound to a hash of the exact arguments."""

human_requests = Table(
    "human_requests",
    metadata,
    Column("request_id", String(40), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("run_id", String(40), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("question", Text, nullable=False),
    Column("detail", Json, nullable=False),
    Column("options", Json, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("resolved_at", Float, nullable=True),
    Column("resolved_by", String(200), nullable=True),
    Column("resolution", Json, nullable=True),
    ForeignKeyConstraint(["run_id"], ["runs.run_id"], ondelete="CASCADE"),
    Index("ix_human_requests_workspace_status", "workspace_id", "status"),
)
"""Escalations waiting for a person: failed steps, uncertain tool calls."""

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(40), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("user_hash", String(64), nullable=True),  # SHA-256 of the owner's normalised email; never the email
    Column("created_at", Float, nullable=False),
    Column("created_by", String(200), nullable=True),
    Column("last_used_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    ForeignKeyConstraint(["workspace_id"], ["workspaces.workspace_id"]),
    Index("ix_api_keys_workspace", "workspace_id"),
)
"""API keys: only a SHA-256 hash of the secret is stored; the key is shown once at creation."""

# --------------------------------------------------------------------------- audit log (0004)

audit_log = Table(
    "audit_log",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("at", Float, nullable=False),
    Column("actor", String(300), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(300), nullable=True),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("scheme", Integer, nullable=False, server_default="1"),
    Column("key_id", String(16), nullable=True),
    Index("ix_audit_log_workspace_action", "workspace_id", "action"),
)
"""Security-relevant actions, append-only and hash-chained per workspace.

``detail`` holds canonical JSON text (exactly what was hashed). ``hash`` is the HMAC-SHA256 (scheme
2, under the chain key ``key_id`` derived from the keyring; scheme 1: plain SHA-256, entries written
before 0013) of the canonical JSON of the entry including ``prev_hash``, the hash of the entry
before it in the same workspace (64 zeros for the first). On PostgreSQL a trigger refuses UPDATE,
DELETE and TRUNCATE.
"""

audit_heads = Table(
    "audit_heads",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("updated_at", Float, nullable=False),
)
"""The last entry of each audit chain: the row appenders lock (so two processes cannot fork a chain)
and the anchor that makes a truncated tail detectable."""

Index("ix_steps_workspace_created", steps.c.workspace_id, steps.c.created_at)
"""Usage reports and the monthly budget sum a workspace's steps over a time range."""

budget_ledgers = Table(
    "budget_ledgers",
    metadata,
    Column("ledger_id", String(120), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("limit_usd", Float, nullable=True),
    Column("limit_tokens", Integer, nullable=True),
    Column("spent_usd", Float, nullable=False, server_default=text("0")),
    Column("spent_tokens", Integer, nullable=False, server_default=text("0")),
    Column("reserved_usd", Float, nullable=False, server_default=text("0")),
    Column("reserved_tokens", Integer, nullable=False, server_default=text("0")),
    Column("updated_at", Float, nullable=False),
)
"""Hard budgets: one ledger per run tree (``run:<root id>``) and per workspace month (``ws:<id>:<YYYY-MM>``).

A model call reserves its worst case first (refused if it could exceed the limit) and settles to
the actual cost in the same transaction as its step.
"""

memories = Table(
    "memories",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("scope", String(220), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    Column("run_id", String(40), nullable=True),
    Column("agent", String(200), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    ForeignKeyConstraint(["workspace_id"], ["workspaces.workspace_id"]),
)
"""Key-value memory per workspace (scope ``workspace``) or per agent (scope ``agent:<name>``), with the
run that last wrote each entry (provenance). Never shared across workspaces."""

# --- stored workflows (per workspace; docs/workflows.md) --------------------------------------------

stored_workflows = Table(
    "stored_workflows",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("yaml", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("updated_by", String(200), nullable=False),
    Column("deleted_at", Float, nullable=True),
    ForeignKeyConstraint(["workspace_id"], ["workspaces.workspace_id"]),
)
"""Workflows saved through the API or CLI, one row per name in a workspace (``version`` counts saves).
A stored workflow shadows a folder workflow of the same name, in its workspace only. Deleting one sets
``deleted_at`` (so runs already started can still be claimed by name, and versions keep counting)."""

# --- knowledge (RAG): collections and documents; the vectors live in Qdrant (docs/knowledge.md) -------------

knowledge_collections = Table(
    "knowledge_collections",
    metadata,
    Column("collection_id", String(40), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("name", String(100), nullable=False),
    Column("description", Text, nullable=False, server_default=text("''")),
    Column("embedder", String(200), nullable=False),
    Column("dimension", Integer, nullable=False),
    Column("created_by", String(300), nullable=True),
    Column("created_by_run", String(40), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    ForeignKeyConstraint(["workspace_id"], ["workspaces.workspace_id"]),
    Index("ix_knowledge_collections_workspace_name", "workspace_id", "name", unique=True),
)
"""Knowledge collections of a workspace: the embedder and vector dimension every document and query uses.
Each has its own Qdrant collection (``km_<collection_id>``), so workspaces never share vectors."""

knowledge_documents = Table(
    "knowledge_documents",
    metadata,
    Column("document_id", String(40), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("collection_id", String(40), nullable=False),
    Column("source", String(1000), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("chars", Integer, nullable=False),
    Column("chunk_count", Integer, nullable=False),
    Column("created_by", String(300), nullable=True),
    Column("created_by_run", String(40), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    ForeignKeyConstraint(["collection_id"], ["knowledge_collections.collection_id"]),
    Index("ix_knowledge_documents_collection_source", "collection_id", "source", unique=True),
    Index("ix_knowledge_documents_workspace_collection", "workspace_id", "collection_id"),
)
"""Documents ingested into a collection: the SHA-256 of their text (an unchanged file is not ingested again),
their chunk count and who ingested them (a user or key, and the run when an agent did)."""

# --------------------------------------------------------------- webhooks and notifications (0007)

webhooks = Table(
    "webhooks",
    metadata,
    Column("webhook_id", String(40), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("format", String(16), nullable=False),
    Column("url_enc", Text, nullable=True),
    Column("url_display", String(500), nullable=False),
    Column("events", Json, nullable=False),
    Column("config", Json, nullable=False),
    Column("secret_enc", Text, nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("link_base_url", String(500), nullable=True),
    Column("link_ttl_s", Float, nullable=False),
    Column("active_since", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(300), nullable=True),
    Column("updated_at", Float, nullable=False),
    Column("links_valid_from", Float, nullable=True),
    ForeignKeyConstraint(["workspace_id"], ["workspaces.workspace_id"]),
    Index("ix_webhooks_workspace_id", "workspace_id"),
)
"""Outgoing webhooks of a workspace (``json``, ``slack``, ``telegram``). The target URL, the signing secret
(``json``) and the bot token (``telegram``) are stored encrypted with the keyring and never returned.
``links_valid_from`` (0014): approval links this webhook carried that were issued before it are revoked; set
when the webhook is disabled or its target changes (deleting the webhook revokes every link it carried)."""

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("delivery_id", String(40), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("webhook_id", String(40), nullable=False),
    Column("event", String(40), nullable=False),
    Column("dedupe_key", String(200), nullable=False),
    Column("run_id", String(40), nullable=True),
    Column("payload", Json, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", Float, nullable=False),
    Column("claimed_by", String(120), nullable=True),
    Column("claimed_until", Float, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("delivered_at", Float, nullable=True),
    ForeignKeyConstraint(["webhook_id"], ["webhooks.webhook_id"], ondelete="CASCADE"),
    Index("ix_webhook_deliveries_webhook_id_dedupe_key", "webhook_id", "dedupe_key", unique=True),
    Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_workspace_id_created_at", "workspace_id", "created_at"),
)
"""The outbox: one row per (webhook, notification), unique on ``dedupe_key`` so that producers in many
processes enqueue each notification once. ``status``: pending -> sending (claimed) -> delivered | pending
(retry later) | failed. The payload holds no secrets and no tool arguments."""

webhook_cursors = Table(
    "webhook_cursors",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("watermark", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    ForeignKeyConstraint(["workspace_id"], ["workspaces.workspace_id"]),
)
"""How far the notification producer has followed each workspace's run events: every event created at or
before ``watermark`` has had its deliveries enqueued."""
# --------------------------------------------------------------------------- credentials (0008)

credentials = Table(
    "credentials",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("provider", String(100), nullable=True),
    Column("scopes", Json, nullable=False),
    Column("secret", Text, nullable=False),
    Column("hint", String(16), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("refresh_error", Text, nullable=True),
    Column("version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(300), nullable=True),
    Column("updated_at", Float, nullable=False),
    Column("updated_by", String(300), nullable=True),
    ForeignKeyConstraint(["workspace_id"], ["workspaces.workspace_id"]),
)
"""Named credentials of a workspace. ``secret`` is a Fernet token (see ``agentmaestro.crypto``) of the JSON secret
fields; ``hint`` is a masked tail (``…abcd``); ``key_id`` the fingerprint of the key that encrypted it."""

oauth_states = Table(
    "oauth_states",
    metadata,
    Column("state_hash", String(64), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("provider", String(100), nullable=False),
    Column("credential", String(100), nullable=False),
    Column("verifier", Text, nullable=False),
    Column("redirect_url", Text, nullable=False),
    Column("scopes", Json, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(300), nullable=True),
    Column("expires_at", Float, nullable=False),
    ForeignKeyConstraint(["workspace_id"], ["workspaces.workspace_id"]),
    Index("ix_oauth_states_expires", "expires_at"),
)
"""Pending OAuth authorizations: the SHA-256 of ``state`` (single use: deleted when consumed), the PKCE verifier
(encrypted), bound to the workspace that started it."""

# ------------------------------------------------------------------------------ workers (0015)

workers = Table(
    "workers",
    metadata,
    Column("owner", String(200), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)
"""Worker processes that claim any run, and when each was last heard of. A worker refreshes its row on every
heartbeat interval (busy or idle) and deletes it when it stops; one whose ``expires_at`` has passed is gone.
``maestro run`` reads it to say honestly whether a queued run will be picked up. The one table without
``workspace_id``: workers serve every workspace (a reference table on a distributed database)."""
