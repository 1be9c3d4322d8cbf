"""/v1/workspace, /v1/keys and /v1/audit: the caller's workspace, its API keys and its audit log."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentmaestro.ceilings import quota_ceiling
from agentmaestro.core.gate import GatePolicy
from agentmaestro.errors import ConfigError, ValidationError
from agentmaestro.server.auth import Admin, Viewer, get_store
from agentmaestro.server.errors import APIError
from agentmaestro.server.quotas import Quotas, effective_quotas, quotas_of
from agentmaestro.service import keys
from agentmaestro.store.base import Store
from agentmaestro.store.keys import user_hash

router = APIRouter(prefix="/v1", tags=["workspace, keys and audit"])
StoreDep = Annotated[Store, Depends(get_store)]

RiskName = Literal["SAFE", "ELEVATED", "DANGEROUS"]
Decision = Literal["allow", "require_approval", "deny"]
ToolName = Annotated[str, Field(min_length=1, max_length=200)]
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class GateRules(_Strict):
    """The workspace's risk gate: a decision per risk level, and tool allow and deny lists."""

    levels: dict[RiskName, Decision] = Field(
        default_factory=dict, description="Decision per risk level; omitted levels keep their defaults."
    )
    allow_tools: list[ToolName] | None = Field(
        default=None, max_length=1000, description="If set, only these tools may run."
    )
    deny_tools: list[ToolName] = Field(default_factory=list, max_length=1000, description="Always denied.")
    approval_ttl_s: float | None = Field(
        default=3600.0, gt=0, le=1e9, description="Seconds before a pending approval is denied (null: never)."
    )


class SettingsPatch(_Strict):
    """Change the workspace's gate rules and quotas.

    Gate rules are replaced as a whole (null restores the defaults); quotas are merged field by field
    (a null field removes that limit, a null object removes all limits). The server's maximums still
    apply to a removed limit, and a value above one is refused (422).
    """

    gate: GateRules | None = None
    quotas: Quotas | None = None


class QuotaUse(BaseModel):
    """Where the workspace stands against its quotas."""

    active_runs: int
    runs_last_hour: int
    month_cost_usd: float


class Caller(BaseModel):
    """The key that made the request."""

    key_id: str
    key_name: str
    role: Literal["viewer", "operator", "admin"]


class Workspace(BaseModel):
    """The caller's workspace: its effective gate rules, quotas and current use."""

    workspace_id: str
    name: str
    created_at: float
    gate: GateRules
    quotas: Quotas = Field(description="The quotas in force: the workspace's own, capped by the server's maximums.")
    quota_ceiling: Quotas = Field(
        description="The server's maximums (MAESTRO_MAX_*; null: none): no workspace quota goes above them."
    )
    usage: QuotaUse
    caller: Caller


class KeyCreate(_Strict):
    """A new API key."""

    name: str = Field(min_length=1, max_length=200, pattern=_PRINTABLE, description="What the key is for.")
    role: Literal["viewer", "operator", "admin"] = "operator"
    user: str | None = Field(
        default=None,
        max_length=320,
        description="The email of the person the key belongs to. Only its SHA-256 is stored (``user_hash``); "
        "runs started and actions taken with the key are attributed to ``user:<user_hash>``.",
    )

    @field_validator("user")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                user_hash(value)
            except ValidationError as exc:
                raise ValueError(str(exc)) from None
        return value


class ApiKey(BaseModel):
    """An API key, without its secret."""

    key_id: str
    workspace_id: str
    name: str
    role: Literal["viewer", "operator", "admin"]
    prefix: str = Field(description="The key's first characters, to recognise it.")
    created_at: float
    created_by: str | None
    user_hash: str | None = Field(default=None, description="SHA-256 of the owner's email, if the key has one.")
    last_used_at: float | None
    revoked_at: float | None


class ApiKeyCreated(ApiKey):
    """A new key: ``key`` is shown only in this response and stored only as a hash."""

    key: str


class AuditEntry(BaseModel):
    """One entry of the hash-chained audit log."""

    workspace_id: str
    seq: int
    at: float
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]
    prev_hash: str = Field(description="``hash`` of the entry before (64 zeros for the first).")
    hash: str = Field(
        description="HMAC-SHA256 (scheme 2, under the chain key ``key_id`` derived from the server's keyring) or "
        "SHA-256 (scheme 1, entries from before keying) of the canonical JSON of the entry's other fields."
    )
    scheme: int = Field(description="2: keyed (HMAC-SHA256); 1: written before the chain was keyed (SHA-256).")
    key_id: str | None = Field(description="Fingerprint of the chain key (not the key); null for scheme 1.")


class AuditPage(BaseModel):
    """Entries oldest first; pass ``next_after`` as ``after`` for the next page."""

    entries: list[AuditEntry]
    next_after: int


class AuditChain(BaseModel):
    """The result of walking the workspace's audit chain."""

    workspace_id: str
    entries: int
    head_seq: int
    ok: bool
    broken_seq: int | None = Field(description="The first entry where the chain breaks.")
    reason: str | None
    legacy_entries: int = Field(0, description="Entries written before the chain was keyed (plain SHA-256).")
    checkpoint_seq: int | None = Field(None, description="The head seq the checkpoint saw, when given one.")


class CheckpointChain(_Strict):
    """One chain's head, as the checkpoint saw it."""

    workspace_id: str = Field(max_length=64)
    head_seq: int = Field(ge=0, le=2**31 - 1)
    head_hash: str = Field(max_length=64)


class AuditCheckpoint(BaseModel):
    """A signed statement of the workspace's chain head at a time; keep it outside the database."""

    model_config = ConfigDict(extra="forbid")

    format: str = Field(max_length=64)
    created_at: float = Field(allow_inf_nan=False)
    scope: str | None = Field(max_length=64, description="The workspace, or null for every chain.")
    chains: list[CheckpointChain] = Field(max_length=100_000)
    key_id: str = Field(max_length=64, description="Which keyring key signed it (a fingerprint, not the key).")
    signature: str = Field(max_length=128, description="HMAC-SHA256 of the other fields' canonical JSON.")


class AuditVerify(_Strict):
    """Verify against a checkpoint: the chain must also reach the head it recorded."""

    checkpoint: AuditCheckpoint


async def _workspace(store: Store, principal: Any) -> dict[str, Any]:
    row = await store.workspaces.get(principal.workspace_id)
    settings = row["settings"]
    use = await store.usage.quotas(principal.workspace_id)
    return {
        "workspace_id": row["workspace_id"],
        "name": row["name"],
        "created_at": row["created_at"],
        "gate": GatePolicy.from_json(settings.get("gate")).to_json(),
        "quotas": effective_quotas(settings).model_dump(),
        "quota_ceiling": quota_ceiling().to_json(),
        "usage": {k: use[k] for k in ("active_runs", "runs_last_hour", "month_cost_usd")},
        "caller": {"key_id": principal.key_id, "key_name": principal.key_name, "role": principal.role.name},
    }


@router.get("/workspace", response_model=Workspace, summary="The caller's workspace")
async def get_workspace(principal: Viewer, store: StoreDep) -> dict[str, Any]:
    """The workspace of the calling key: gate rules, quotas, current use, and who is calling."""
    return await _workspace(store, principal)


@router.patch("/workspace/settings", response_model=Workspace, summary="Change gate rules and quotas")
async def patch_settings(body: SettingsPatch, principal: Admin, store: StoreDep) -> dict[str, Any]:
    """Change the gate rules and quotas (admin); every change is recorded in the audit log."""
    changes: dict[str, Any] = {}
    fields = body.model_fields_set
    if "gate" in fields:
        if body.gate is None:
            changes["gate"] = None
        else:
            try:
                changes["gate"] = GatePolicy.from_json(body.gate.model_dump()).to_json()
            except ConfigError as exc:
                raise APIError(422, "invalid_request", f"gate: {exc}") from None
    if "quotas" in fields:
        if body.quotas is None:
            changes["quotas"] = None
        else:
            current = quotas_of(await store.workspaces.settings(principal.workspace_id)).model_dump()
            current.update(body.quotas.model_dump(exclude_unset=True))
            above = quota_ceiling().above(current)
            if above:
                raise APIError(422, "invalid_request", "quotas: " + "; ".join(above))
            changes["quotas"] = current
    if changes:
        await store.workspaces.update_settings_audited(principal.workspace_id, changes, actor=principal.actor)
    return await _workspace(store, principal)


@router.get("/keys", response_model=list[ApiKey], summary="List API keys")
async def list_keys(principal: Admin, store: StoreDep) -> list[dict[str, Any]]:
    """The workspace's keys, newest first (never their secrets)."""
    return await store.keys.all(principal.workspace_id)


@router.post("/keys", status_code=201, response_model=ApiKeyCreated, summary="Create an API key")
async def create_key(body: KeyCreate, principal: Admin, store: StoreDep) -> dict[str, Any]:
    """Create a key in the caller's workspace. The key is in this response only; store it safely."""
    cmd = keys.CreateKey(name=body.name, role=body.role, user=body.user)
    row, key = await keys.create_key(store, cmd, principal.as_actor())
    return {**row, "key": key}


@router.delete("/keys/{key_id}", response_model=ApiKey, summary="Revoke an API key")
async def revoke_key(
    key_id: Annotated[str, Path(min_length=1, max_length=64)], principal: Admin, store: StoreDep
) -> dict[str, Any]:
    """Revoke a key of the caller's workspace (another workspace's key answers 404)."""
    return await keys.revoke_key(store, keys.RevokeKey(key_id=key_id), principal.as_actor())


@router.get("/audit", response_model=AuditPage, summary="Read the audit log")
async def list_audit(
    principal: Admin,
    store: StoreDep,
    after: Annotated[int, Query(ge=0, le=2**31 - 1, description="Only entries with a greater seq.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    action: Annotated[str | None, Query(max_length=64, description="Only this action, e.g. key.create.")] = None,
) -> dict[str, Any]:
    """The workspace's audit entries, oldest first; continue with ``after=next_after``."""
    rows = await store.audit.page(principal.workspace_id, after_seq=after, limit=limit, action=action)
    return {"entries": rows, "next_after": rows[-1]["seq"] if rows else after}


@router.get("/audit/verify", response_model=AuditChain, summary="Verify the audit chain")
async def verify_audit(principal: Admin, store: StoreDep) -> dict[str, Any]:
    """Walk the workspace's chain: every entry must hash to its stored hash and link to the one before."""
    [report] = await store.audit.verify(principal.workspace_id)
    out: dict[str, Any] = report.to_json()
    return out


@router.post("/audit/verify", response_model=AuditChain, summary="Verify the audit chain against a checkpoint")
async def verify_audit_checkpoint(body: AuditVerify, principal: Admin, store: StoreDep) -> dict[str, Any]:
    """Walk the chain, which must also reach the checkpoint's head with its hash (truncation, a vanished chain).

    A checkpoint not signed by this server's keyring, or edited, answers 400.
    """
    checkpoint = body.checkpoint.model_dump()
    [report] = await store.audit.verify(principal.workspace_id, checkpoint=checkpoint)
    out: dict[str, Any] = report.to_json()
    return out


@router.get("/audit/checkpoint", response_model=AuditCheckpoint, summary="Sign a checkpoint of the audit chain")
async def audit_checkpoint(principal: Admin, store: StoreDep) -> dict[str, Any]:
    """The workspace's chain head (seq, hash) and the time, signed with the server's keyring.

    Keep it outside the database; ``POST /v1/audit/verify`` with it detects a chain cut below it.
    A broken chain gets no checkpoint (400).
    """
    return await store.audit.checkpoint(principal.workspace_id)
