from __future__ import annotations

import pytest

from agentmaestro.core.gate import GateDecision, GatePolicy, args_hash, combine, path_argument_risk
from agentmaestro.core.risk import RiskLevel
from agentmaestro.errors import ConfigError


def test_defaults() -> None:
    g = GatePolicy()
    assert g.decide("x", RiskLevel.SAFE)[0] is GateDecision.ALLOW
    assert g.decide("x", RiskLevel.ELEVATED)[0] is GateDecision.ALLOW
    assert g.decide("x", RiskLevel.DANGEROUS)[0] is GateDecision.REQUIRE_APPROVAL


def test_lists_override_levels() -> None:
    g = GatePolicy.from_json({"deny_tools": ["rm"], "allow_tools": ["rm", "ls"]})
    assert g.decide("rm", RiskLevel.SAFE)[0] is GateDecision.DENY
    assert g.decide("cat", RiskLevel.SAFE)[0] is GateDecision.DENY
    assert g.decide("ls", RiskLevel.SAFE)[0] is GateDecision.ALLOW


def test_stricter_policy_wins_agent_cannot_loosen_workspace() -> None:
    workspace = GatePolicy.from_json({"levels": {"ELEVATED": "require_approval"}})
    agent = GatePolicy.from_json({"levels": {"ELEVATED": "allow", "DANGEROUS": "allow"}})
    v = combine("write", RiskLevel.ELEVATED, [workspace, agent], [])
    assert v.decision is GateDecision.REQUIRE_APPROVAL
    v = combine("shell", RiskLevel.DANGEROUS, [workspace, agent], ["raised"])
    assert v.decision is GateDecision.REQUIRE_APPROVAL and "raised" in v.reasons
    strict_agent = GatePolicy.from_json({"levels": {"DANGEROUS": "deny"}})
    assert combine("shell", RiskLevel.DANGEROUS, [workspace, strict_agent], []).decision is GateDecision.DENY


@pytest.mark.parametrize(
    "data",
    [
        {"levels": {"HUGE": "allow"}},
        {"levels": {"SAFE": "maybe"}},
        {"levels": ["SAFE"]},
        {"deny_tools": "rm"},
        {"allow_tools": [1]},
        {"approval_ttl_s": 0},
        {"approval_ttl_s": True},
        {"surprise": 1},
        "allow",
    ],
)
def test_bad_policies_rejected(data: object) -> None:
    with pytest.raises(ConfigError):
        GatePolicy.from_json(data)  # type: ignore[arg-type]


def test_round_trip() -> None:
    g = GatePolicy.from_json({"levels": {"SAFE": "deny"}, "deny_tools": ["a"], "approval_ttl_s": 5})
    assert GatePolicy.from_json(g.to_json()) == g


@pytest.mark.parametrize(
    ("args", "dangerous"),
    [
        ({"path": "notes.txt"}, False),
        ({"path": "sub/dir/file"}, False),
        ({"path": "/work/run/file"}, False),
        ({"path": "../secret"}, True),
        ({"path": "a/../../b"}, True),
        ({"path": "/etc/passwd"}, True),
        ({"file": "/work/runner/x"}, True),
        ({"destination": "ok\x00/../x"}, True),
        ({"content": "/etc/passwd"}, False),
        ({"path": 3}, False),
    ],
)
def test_path_arguments_raise_risk(args: dict[str, object], dangerous: bool) -> None:
    risk, reasons = path_argument_risk(args, "/work/run")
    assert (risk is RiskLevel.DANGEROUS) is dangerous
    assert bool(reasons) is dangerous


def test_args_hash_is_canonical_and_binding() -> None:
    assert args_hash("t", {"a": 1, "b": [1, 2]}) == args_hash("t", {"b": [1, 2], "a": 1})
    assert args_hash("t", {"a": 1}) != args_hash("t", {"a": 2})
    assert args_hash("t", {"a": 1}) != args_hash("u", {"a": 1})
