"""The risk gate: which tool calls run, which wait for a human, which are refused. Pure, no I/O.

A call's risk is the tool's level, raised (never lowered) by argument rules. The gate policy maps a
risk level to allow / require approval / deny, and tool allow and deny lists override it. Workspace
and agent policies combine by taking the stricter answer, so an agent can tighten its workspace's
rules but never loosen them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

from agentmaestro.core.risk import RiskLevel
from agentmaestro.errors import ConfigError


class GateDecision(StrEnum):
    """What happens to a tool call. Ordered from permissive to strict."""

    ALLOW = "allow"
    REQUIRE_APPROVAL = "require_approval"
    DENY = "deny"

    @property
    def strictness(self) -> int:
        """0 for allow, 1 for require_approval, 2 for deny."""
        return _ORDER[self]


_ORDER = {GateDecision.ALLOW: 0, GateDecision.REQUIRE_APPROVAL: 1, GateDecision.DENY: 2}

DEFAULT_LEVELS: Mapping[RiskLevel, GateDecision] = {
    RiskLevel.SAFE: GateDecision.ALLOW,
    RiskLevel.ELEVATED: GateDecision.ALLOW,
    RiskLevel.DANGEROUS: GateDecision.REQUIRE_APPROVAL,
}


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The gate's answer for one call."""

    decision: GateDecision
    """Allow, require approval, or deny."""
    risk: RiskLevel
    """The call's computed risk."""
    reasons: tuple[str, ...] = ()
    """Why the risk is what it is and why the decision was taken."""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {"decision": self.decision.value, "risk": self.risk.name, "reasons": list(self.reasons)}


@dataclass(frozen=True, kw_only=True)
class GatePolicy:
    """Approval rules of a workspace or an agent."""

    levels: Mapping[RiskLevel, GateDecision] = field(default_factory=lambda: dict(DEFAULT_LEVELS))
    """Decision per risk level. Defaults: SAFE allow, ELEVATED allow, DANGEROUS require approval."""
    allow_tools: frozenset[str] | None = None
    """If set, only these tools may run at all; others are denied."""
    deny_tools: frozenset[str] = frozenset()
    """Tools that are always denied."""
    approval_ttl_s: float | None = 3600.0
    """How long a pending approval waits before it is automatically denied (None: forever)."""

    def decide(self, tool: str, risk: RiskLevel) -> tuple[GateDecision, str]:
        """The decision for a call of ``tool`` at ``risk``, with the reason."""
        if tool in self.deny_tools:
            return GateDecision.DENY, f"tool {tool!r} is on the deny list"
        if self.allow_tools is not None and tool not in self.allow_tools:
            return GateDecision.DENY, f"tool {tool!r} is not on the allow list"
        decision = self.levels.get(risk, GateDecision.REQUIRE_APPROVAL)
        return decision, f"{risk.name} calls: {decision.value}"

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (as stored in workspace settings and agent specs)."""
        return {
            "levels": {level.name: decision.value for level, decision in sorted(self.levels.items())},
            "allow_tools": sorted(self.allow_tools) if self.allow_tools is not None else None,
            "deny_tools": sorted(self.deny_tools),
            "approval_ttl_s": self.approval_ttl_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> GatePolicy:
        """Parse and validate; unknown keys, levels or decisions are a ConfigError."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError("gate policy must be a mapping")
        unknown = set(data) - {"levels", "allow_tools", "deny_tools", "approval_ttl_s"}
        if unknown:
            raise ConfigError(f"unknown gate field(s) {sorted(unknown)}")
        levels = dict(DEFAULT_LEVELS)
        raw_levels = data.get("levels") or {}
        if not isinstance(raw_levels, Mapping):
            raise ConfigError("gate levels must map SAFE/ELEVATED/DANGEROUS to allow/require_approval/deny")
        for name, value in raw_levels.items():
            try:
                level = RiskLevel.parse(name)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            try:
                levels[level] = GateDecision(str(value).lower())
            except ValueError:
                raise ConfigError(
                    f"gate decision {value!r} for {level.name} must be allow, require_approval or deny"
                ) from None
        allow = data.get("allow_tools")
        deny = data.get("deny_tools") or []
        for label, value in (("allow_tools", allow), ("deny_tools", deny)):
            if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                raise ConfigError(f"gate {label} must be a list of tool names")
        ttl = data.get("approval_ttl_s", 3600.0)
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
            raise ConfigError(f"gate approval_ttl_s must be a positive number or null, got {ttl!r}")
        return cls(
            levels=levels,
            allow_tools=frozenset(allow) if allow is not None else None,
            deny_tools=frozenset(deny),
            approval_ttl_s=None if ttl is None else float(ttl),
        )


def combine(tool: str, risk: RiskLevel, policies: list[GatePolicy], reasons: list[str]) -> Verdict:
    """The strictest decision of all ``policies`` for one call."""
    decision = GateDecision.ALLOW
    why = list(reasons)
    for policy in policies:
        d, reason = policy.decide(tool, risk)
        if d.strictness > decision.strictness:
            decision = d
        if d is not GateDecision.ALLOW:
            why.append(reason)
    return Verdict(decision=decision, risk=risk, reasons=tuple(dict.fromkeys(why)))


PATH_ARGUMENT_NAMES = frozenset(
    {"path", "file", "filename", "file_path", "filepath", "dir", "directory", "cwd", "target", "source", "destination"}
)


def path_argument_risk(arguments: Mapping[str, Any], workdir: str) -> tuple[RiskLevel, list[str]]:
    """Raise risk to DANGEROUS for path-like arguments that point outside the run's work folder.

    Purely lexical (the filesystem tools also check real paths): absolute paths outside ``workdir``
    and any ``..`` component count as outside.
    """
    reasons: list[str] = []
    root: PurePosixPath | None = None  # built only when a path-like argument is present (hot path)
    for key, value in arguments.items():
        if key.lower() not in PATH_ARGUMENT_NAMES or not isinstance(value, str):
            continue
        root = root or PurePosixPath(workdir)
        p = PurePosixPath(value)
        if ".." in p.parts or "\x00" in value:
            reasons.append(f"argument {key!r} escapes the work folder ({value!r})")
        elif p.is_absolute() and not (p == root or root in p.parents):
            reasons.append(f"argument {key!r} points outside the work folder ({value!r})")
    return (RiskLevel.DANGEROUS if reasons else RiskLevel.SAFE), reasons


def args_hash(tool: str, arguments: Mapping[str, Any]) -> str:
    """SHA-256 of the tool name and its canonical JSON arguments: what an approval is bound to."""
    canonical = json.dumps({"tool": tool, "arguments": arguments}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
