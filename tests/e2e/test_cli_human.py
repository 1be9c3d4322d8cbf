"""The human side of the CLI: approvals, escalations and gate rules, through the real executable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

MAESTRO = str(Path(sys.executable).parent / "maestro")


def sh(tmp: Path, url: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([MAESTRO, "--database-url", url, *args], cwd=tmp, capture_output=True, text=True, timeout=120)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_approve_reject_and_gate(db_url: str, tmp_path: Path) -> None:
    sh(tmp_path, db_url, "db", "upgrade")
    out = sh(tmp_path, db_url, "run", "janitor", "tidy", "--wait").stdout
    assert "WAITING_FOR_APPROVAL" in out and "maestro approvals list" in out
    [appr] = json.loads(sh(tmp_path, db_url, "--json", "approvals", "list").stdout)["approvals"]
    assert appr["tool"] == "purge_logs" and appr["risk"] == "DANGEROUS"

    bad = sh(tmp_path, db_url, "approvals", "approve", appr["approval_id"], "--args", "[1]", ok=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error:")

    done = sh(
        tmp_path,
        db_url,
        "approvals",
        "approve",
        appr["approval_id"],
        "--args",
        '{"older_than_days": 90}',
        "--by",
        "ann",
        "--wait",
    )
    assert "COMPLETED" in done.stdout and "older than 90 days" in done.stdout

    again = sh(tmp_path, db_url, "approvals", "approve", appr["approval_id"], ok=False)
    assert again.returncode == 1 and "already approved" in again.stderr

    sh(tmp_path, db_url, "run", "janitor", "tidy again", "--wait")
    [appr2] = json.loads(sh(tmp_path, db_url, "--json", "approvals", "list").stdout)["approvals"]
    rejected = sh(tmp_path, db_url, "approvals", "reject", appr2["approval_id"], "--reason", "not today", "--wait")
    assert "COMPLETED" in rejected.stdout and "not today" in rejected.stdout

    bad_gate = sh(tmp_path, db_url, "gate", "set", "--level", "DANGEROUS=maybe", ok=False)
    assert bad_gate.returncode == 1 and bad_gate.stderr.count("\n") == 1
    gate = json.loads(sh(tmp_path, db_url, "gate", "set", "--deny-tool", "purge_logs").stdout)
    assert gate["deny_tools"] == ["purge_logs"]
    denied = sh(tmp_path, db_url, "run", "janitor", "third", "--wait").stdout
    assert "COMPLETED" in denied and "denied by policy" in denied
    escalations = json.loads(sh(tmp_path, db_url, "--json", "escalations", "list").stdout)
    assert escalations == {"human_requests": [], "next": None}


def test_runs_show_tree(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tree.db'}"
    sh(tmp_path, url, "demo")
    runs = json.loads(sh(tmp_path, url, "--json", "runs", "list", "--agent", "tidy-and-report").stdout)["runs"]
    wf = runs[0]["run_id"]
    text = sh(tmp_path, url, "runs", "show", wf, "--tree").stdout.splitlines()
    assert text[0].startswith(f"{wf} tidy-and-report WAITING_FOR_CHILDREN")
    assert sorted(line.split()[1] for line in text[1:]) == ["calculator", "janitor", "wordsmith"]
    assert all(line.startswith("  run_") for line in text[1:])
    tree = json.loads(sh(tmp_path, url, "--json", "runs", "show", wf, "--tree").stdout)["tree"]
    assert {c["agent"]: c["status"] for c in tree["children"]} == {
        "wordsmith": "COMPLETED",
        "calculator": "COMPLETED",
        "janitor": "WAITING_FOR_APPROVAL",
    }


def test_tools_list(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tools.db'}"
    rows = json.loads(sh(tmp_path, url, "--json", "tools", "list").stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["purge_logs"]["risk"] == "DANGEROUS" and by_name["purge_logs"]["agents"] == ["janitor"]
    assert by_name["add"]["idempotent"] is True
