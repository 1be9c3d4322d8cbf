"""Workspace settings, API keys, audit, quotas, rate limits, usage, metrics and mutual TLS over real HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import create_engine, text

from agentmaestro.agents import load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from agentmaestro.errors import ConfigError
from agentmaestro.server.app import create_app
from agentmaestro.server.tls import uvicorn_ssl_options
from agentmaestro.store.base import Store
from agentmaestro.store.dialects import normalize_url
from tests.e2e.test_server import auth, make_key, wait_status
from tests.fakes.ports import listening_socket
from tests.fakes.server import LiveServer

Server = tuple[LiveServer, dict[str, str]]


@pytest.fixture
def server(db_url: str) -> Iterator[Server]:
    keys = {role: make_key(db_url, "default", role) for role in ("viewer", "operator", "admin")}
    keys["other"] = make_key(db_url, "other", "admin")
    with LiveServer(db_url, load_agents_dir(builtin_agents_dir())) as srv:
        yield srv, keys


def sql(url: str, statement: str, **params: Any) -> list[Any]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def audit_actions(c: httpx.Client, key: str) -> list[tuple[str, str, str | None]]:
    entries = c.get("/v1/audit", params={"limit": 1000}, headers=auth(key)).json()["entries"]
    return [(e["action"], e["actor"], e["target"]) for e in entries]


def test_keys_roles_and_audit(server: Server, db_url: str) -> None:
    srv, keys = server
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        assert c.get("/v1/keys", headers=auth(keys["operator"])).status_code == 403
        bad = c.post("/v1/keys", json={"name": "ci", "role": "root"}, headers=auth(keys["admin"]))
        assert bad.status_code == 422 and set(bad.json()["error"]) == {"code", "message"}
        assert c.post("/v1/keys", json={"name": "x\ny"}, headers=auth(keys["admin"])).status_code == 422
        created = c.post("/v1/keys", json={"name": "ci", "role": "viewer"}, headers=auth(keys["admin"]))
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["key"].startswith(body["prefix"]) and body["role"] == "viewer"
        assert body["created_by"] == "key:default-admin"
        listed = c.get("/v1/keys", headers=auth(keys["admin"])).json()
        assert body["key_id"] in {k["key_id"] for k in listed} and all("key" not in k for k in listed)
        assert all(k["workspace_id"] == "default" for k in listed)
        assert c.get("/v1/runs", headers=auth(body["key"])).status_code == 200
        # another workspace cannot see or revoke our key
        assert body["key_id"] not in {k["key_id"] for k in c.get("/v1/keys", headers=auth(keys["other"])).json()}
        assert c.delete(f"/v1/keys/{body['key_id']}", headers=auth(keys["other"])).status_code == 404
        revoked = c.delete(f"/v1/keys/{body['key_id']}", headers=auth(keys["admin"]))
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        assert c.delete(f"/v1/keys/{body['key_id']}", headers=auth(keys["admin"])).status_code == 409
        gone = c.get("/v1/runs", headers=auth(body["key"]))
        assert gone.status_code == 401 and gone.headers["www-authenticate"] == "Bearer"
        # a wrong secret for a real key id, twice: audited once (per client and key per minute)
        forged = body["prefix"] + "not-the-secret"
        for _ in range(2):
            assert c.get("/v1/runs", headers=auth(forged)).status_code == 401
        for _ in range(2):
            assert c.get("/v1/runs", headers={"X-API-Key": "am_nosuchkey_x"}).status_code == 401

        actions = audit_actions(c, keys["admin"])
        assert ("key.create", "key:default-admin", body["key_id"]) in actions
        assert ("key.revoke", "key:default-admin", body["key_id"]) in actions
        assert ("auth.login", "key:ci", body["key_id"]) in actions
        logins_of_admin = [a for a in actions if a[0] == "auth.login" and a[1] == "key:default-admin"]
        assert len(logins_of_admin) == 1  # at most once per key per minute
        failures = [a for a in actions if a[0] == "auth.failure"]
        assert failures == [("auth.failure", "client:127.0.0.1", body["key_id"])]
        assert all(a[0] != "key.create" for a in audit_actions(c, keys["other"]))
        page = c.get("/v1/audit", params={"after": 1, "limit": 2}, headers=auth(keys["admin"])).json()
        assert [e["seq"] for e in page["entries"]] == [2, 3] and page["next_after"] == 3
        only = c.get("/v1/audit", params={"action": "key.revoke"}, headers=auth(keys["admin"])).json()["entries"]
        assert [e["target"] for e in only] == [body["key_id"]]
        assert c.get("/v1/audit", headers=auth(keys["operator"])).status_code == 403
        verdict = c.get("/v1/audit/verify", headers=auth(keys["admin"])).json()
        assert verdict["ok"] and verdict["entries"] == len(actions) and verdict["workspace_id"] == "default"

    async def system_chain() -> list[dict[str, Any]]:
        store = Store.open(db_url)
        try:
            return await store.audit.page("_system")
        finally:
            await store.close()

    [unknown] = asyncio.run(system_chain())
    assert unknown["action"] == "auth.failure" and unknown["target"] == "nosuchkey"


def test_cancel_and_approval_are_audited(server: Server) -> None:
    srv, keys = server
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        op = auth(keys["operator"])
        run_id = c.post("/v1/runs", json={"agent": "janitor", "input": "tidy"}, headers=op).json()["run_id"]
        wait_status(c, run_id, keys["viewer"], {"WAITING_FOR_APPROVAL"})
        [appr] = c.get("/v1/approvals", headers=op).json()["approvals"]
        decided = c.post(
            f"/v1/approvals/{appr['approval_id']}", json={"decision": "reject", "reason": "no"}, headers=op
        )
        assert decided.status_code == 200
        wait_status(c, run_id, keys["viewer"], {"COMPLETED"})
        run2 = c.post("/v1/runs", json={"agent": "janitor", "input": "again"}, headers=op).json()["run_id"]
        wait_status(c, run2, keys["viewer"], {"WAITING_FOR_APPROVAL"})
        assert c.post(f"/v1/runs/{run2}/cancel", json={"reason": "enough"}, headers=op).status_code == 200
        entries = c.get("/v1/audit", headers=auth(keys["admin"])).json()["entries"]
        by_action = {e["action"]: e for e in entries}
        assert by_action["approval.reject"]["target"] == appr["approval_id"]
        assert by_action["approval.reject"]["detail"] == {
            "run_id": run_id,
            "tool": "purge_logs",
            "reason": "no",
            "edited": False,
        }
        assert by_action["run.cancel"]["target"] == run2 and by_action["run.cancel"]["detail"] == {"reason": "enough"}
        assert by_action["run.cancel"]["actor"] == "key:default-operator"
        assert c.get("/v1/audit/verify", headers=auth(keys["admin"])).json()["ok"]


def test_settings_gate_and_quotas(server: Server, db_url: str) -> None:
    srv, keys = server
    admin, op = auth(keys["admin"]), auth(keys["operator"])
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        ws = c.get("/v1/workspace", headers=auth(keys["viewer"])).json()
        assert ws["workspace_id"] == "default" and ws["caller"]["role"] == "viewer"
        assert ws["gate"]["levels"] == {"SAFE": "allow", "ELEVATED": "allow", "DANGEROUS": "require_approval"}
        assert ws["quotas"] == {"max_concurrent_runs": None, "runs_per_hour": None, "monthly_budget_usd": None}
        assert c.patch("/v1/workspace/settings", json={}, headers=op).status_code == 403
        for bad in (
            {"gate": {"levels": {"DANGEROUS": "maybe"}}},
            {"gate": {"levels": {"HUGE": "deny"}}},
            {"gate": {"approval_ttl_s": 0}},
            {"quotas": {"runs_per_hour": -1}},
            {"quotas": {"runs_per_hour": False}},
            {"quotas": {"runs_per_hour": "3"}},
            {"surprise": 1},
        ):
            r = c.patch("/v1/workspace/settings", json=bad, headers=admin)
            assert r.status_code == 422, (bad, r.text)
        r = c.patch("/v1/workspace/settings", json={"gate": {"deny_tools": ["purge_logs"]}}, headers=admin)
        assert r.status_code == 200 and r.json()["gate"]["deny_tools"] == ["purge_logs"]
        run_id = c.post("/v1/runs", json={"agent": "janitor", "input": "tidy"}, headers=op).json()["run_id"]
        done = wait_status(c, run_id, keys["viewer"], {"COMPLETED", "FAILED"})
        assert done["status"] == "COMPLETED" and "denied by policy" in done["output"]
        # the other workspace is untouched
        assert c.get("/v1/workspace", headers=auth(keys["other"])).json()["gate"]["deny_tools"] == []

        # concurrency quota: 0 means no new run
        q = c.patch("/v1/workspace/settings", json={"quotas": {"max_concurrent_runs": 0}}, headers=admin)
        assert q.json()["quotas"]["max_concurrent_runs"] == 0
        over = c.post("/v1/runs", json={"agent": "calculator", "input": "1+1"}, headers=op)
        assert over.status_code == 429 and over.json()["error"]["code"] == "quota_exceeded"
        assert "max_concurrent_runs=0" in over.json()["error"]["message"]
        assert c.post(f"/v1/runs/{run_id}/restart", headers=op).status_code == 429
        assert c.post(f"/v1/runs/{run_id}/fork", json={"at_seq": 2}, headers=op).status_code == 429
        assert (
            c.post("/v1/runs", json={"agent": "calculator", "input": "1"}, headers=auth(keys["other"])).status_code
            == 201
        )

        # runs per hour: one run exists in the last hour, the limit is 1; quotas merge field by field
        c.patch(
            "/v1/workspace/settings", json={"quotas": {"max_concurrent_runs": None, "runs_per_hour": 1}}, headers=admin
        )
        hourly = c.post("/v1/runs", json={"agent": "calculator", "input": "1+1"}, headers=op)
        assert hourly.status_code == 429 and 1 <= int(hourly.headers["retry-after"]) <= 3600
        assert "runs_per_hour=1" in hourly.json()["error"]["message"]

        # monthly budget: spend recorded on steps this month counts
        c.patch(
            "/v1/workspace/settings", json={"quotas": {"runs_per_hour": None, "monthly_budget_usd": 0.5}}, headers=admin
        )
        assert c.post("/v1/runs", json={"agent": "calculator", "input": "2+2"}, headers=op).status_code == 201
        sql(db_url, "UPDATE steps SET cost_usd = 0.25 WHERE run_id = :r", r=run_id)
        broke = c.post("/v1/runs", json={"agent": "calculator", "input": "2+2"}, headers=op)
        assert broke.status_code == 429 and "monthly_budget_usd=0.5" in broke.json()["error"]["message"]
        assert int(broke.headers["retry-after"]) <= 31 * 86400
        ws = c.get("/v1/workspace", headers=admin).json()
        assert ws["usage"]["month_cost_usd"] >= 0.5
        c.patch("/v1/workspace/settings", json={"quotas": None, "gate": None}, headers=admin)
        ws = c.get("/v1/workspace", headers=admin).json()
        assert ws["quotas"]["monthly_budget_usd"] is None and ws["gate"]["deny_tools"] == []
        actions = [a for a, _, _ in audit_actions(c, keys["admin"])]
        assert actions.count("gate.update") == 2 and actions.count("quotas.update") == 4


def test_server_maximums_cap_every_workspace(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Red-team finding (issue 14, item 9): a workspace admin cleared all quotas ({"quotas": null}) and
    nothing was left. The server's MAESTRO_MAX_* cap every workspace; an admin can lower, never lift."""
    srv, keys = server
    admin, op = auth(keys["admin"]), auth(keys["operator"])
    monkeypatch.setenv("MAESTRO_MAX_RUNS_PER_HOUR", "2")
    monkeypatch.setenv("MAESTRO_MAX_CONCURRENT_RUNS", "50")
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        cleared = c.patch("/v1/workspace/settings", json={"quotas": None}, headers=admin)
        assert cleared.status_code == 200, cleared.text
        ws = cleared.json()
        assert ws["quotas"] == {"max_concurrent_runs": 50, "runs_per_hour": 2, "monthly_budget_usd": None}
        assert ws["quota_ceiling"] == ws["quotas"]
        for lift in ({"runs_per_hour": 1000}, {"max_concurrent_runs": 51}):
            r = c.patch("/v1/workspace/settings", json={"quotas": lift}, headers=admin)
            assert r.status_code == 422 and "above the server's maximum" in r.json()["error"]["message"], r.text
        assert (
            "MAESTRO_MAX_RUNS_PER_HOUR"
            in c.patch("/v1/workspace/settings", json={"quotas": {"runs_per_hour": 3}}, headers=admin).json()["error"][
                "message"
            ]
        )
        lower = c.patch("/v1/workspace/settings", json={"quotas": {"max_concurrent_runs": 10}}, headers=admin)
        assert lower.status_code == 200 and lower.json()["quotas"]["max_concurrent_runs"] == 10
        for i in range(2):
            assert c.post("/v1/runs", json={"agent": "calculator", "input": f"{i}+1"}, headers=op).status_code == 201
        over = c.post("/v1/runs", json={"agent": "calculator", "input": "9+1"}, headers=op)
        assert over.status_code == 429 and "runs_per_hour=2" in over.json()["error"]["message"]
        # the other workspace, with no quotas of its own, is capped too
        other = c.get("/v1/workspace", headers=auth(keys["other"])).json()
        assert other["quotas"]["runs_per_hour"] == 2
    monkeypatch.setenv("MAESTRO_MAX_RUNS_PER_HOUR", "lots")
    with pytest.raises(ConfigError, match="MAESTRO_MAX_RUNS_PER_HOUR must be a whole number"):
        create_app("sqlite:///unused.db", worker=False)


def test_usage_and_metrics(server: Server, db_url: str) -> None:
    srv, keys = server
    op, viewer = auth(keys["operator"]), auth(keys["viewer"])
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        run_id = c.post("/v1/runs", json={"agent": "calculator", "input": "(2 + 3) * 4"}, headers=op).json()["run_id"]
        wait_status(c, run_id, keys["viewer"], {"COMPLETED"})
        sql(db_url, "UPDATE steps SET cost_usd = 0.125 WHERE run_id = :r AND kind = 'MODEL_CALL'", r=run_id)
        # seq 4 is the first tool step (RUN_CREATED, RUN_STARTED, model, tool): the fork makes the second call again
        fork = c.post(f"/v1/runs/{run_id}/fork", json={"at_seq": 4}, headers=op).json()["run_id"]
        wait_status(c, fork, keys["viewer"], {"COMPLETED"})

        by_agent = c.get("/v1/usage", params={"group_by": "agent"}, headers=viewer).json()
        [calc] = by_agent["groups"]
        assert calc["key"] == "calculator" and calc["runs"] == 2 and calc["model_calls"] >= 3
        assert calc["tool_calls"] >= 2 and calc["tokens"] == calc["input_tokens"] + calc["output_tokens"] > 0
        assert by_agent["total"]["steps"] == calc["steps"]
        # the fork's copied steps are not counted twice: only the source run's model calls cost
        source_steps = c.get(f"/v1/runs/{run_id}", headers=viewer).json()["steps_detail"]
        model_calls = sum(1 for s in source_steps if s["kind"] == "MODEL_CALL")
        fork_new = [s for s in c.get(f"/v1/runs/{fork}", headers=viewer).json()["steps_detail"] if s["cost_usd"] == 0]
        assert calc["cost_usd"] == pytest.approx(0.125 * model_calls)
        assert fork_new
        by_model = c.get("/v1/usage", params={"group_by": "model"}, headers=viewer).json()
        assert [g["key"] for g in by_model["groups"]] == ["scripted:calculator"]
        assert by_model["groups"][0]["tool_calls"] == 0 and by_model["total"]["tool_calls"] == calc["tool_calls"]
        today = dt.datetime.now(dt.UTC).date().isoformat()
        by_day = c.get("/v1/usage", params={"group_by": "day", "since": "2000-01-01"}, headers=viewer).json()
        assert [g["key"] for g in by_day["groups"]] == [today]
        empty = c.get("/v1/usage", params={"until": "2001-01-01T00:00:00Z", "since": "2000-01-01"}, headers=viewer)
        assert empty.json()["groups"] == [] and empty.json()["total"]["runs"] == 0
        assert (
            c.get("/v1/usage", params={"since": "2030-01-01", "until": "2020-01-01"}, headers=viewer).status_code == 422
        )
        assert c.get("/v1/usage", params={"group_by": "tool"}, headers=viewer).status_code == 422
        assert c.get("/v1/usage", headers=auth(keys["other"])).json()["groups"] == []

        metrics = c.get("/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        lines = metrics.text.splitlines()

        def value(prefix: str) -> float:
            [line] = [ln for ln in lines if ln.startswith(prefix + " ")]
            return float(line.rsplit(" ", 1)[1])

        assert value('maestro_runs{status="COMPLETED"}') == 2
        assert value("maestro_queue_depth") == 0
        assert value('maestro_steps_total{kind="MODEL_CALL",status="ok"}') >= 4
        assert value('maestro_tool_calls_total{status="ok"}') >= 3
        assert value('maestro_step_duration_seconds_count{kind="TOOL_CALL"}') >= 3
        assert value('maestro_tokens_total{direction="input"}') > 0
        assert value('maestro_runs_finished_total{status="COMPLETED"}') == 2


def test_rate_limit_per_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    key, other = make_key(url, "default", "viewer"), make_key(url, "default", "operator")
    with (
        LiveServer(url, load_agents_dir(builtin_agents_dir()), worker=False, rate_limit_per_min=5) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        codes = [c.get("/v1/runs", headers=auth(key)).status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]
        limited = c.get("/v1/runs", headers=auth(key))
        assert limited.json()["error"]["code"] == "rate_limited" and int(limited.headers["retry-after"]) >= 1
        assert c.get("/v1/runs", headers=auth(other)).status_code == 200


# ---------------------------------------------------------------------------------- mutual TLS


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        assert issuer is not None
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


def test_mutual_tls(tmp_path: Path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("maestro test CA", ca_key, None, ca_key, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    _write(tmp_path / "ca.pem", ca)
    _write(tmp_path / "server.pem", _cert("127.0.0.1", server_key, ca, ca_key, server=True), server_key)
    _write(tmp_path / "client.pem", _cert("client", client_key, ca, ca_key), client_key)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue_ca = _cert("rogue CA", rogue_key, None, rogue_key, ca=True)
    _write(tmp_path / "rogue.pem", _cert("client", client_key, rogue_ca, rogue_key), client_key)

    url = f"sqlite:///{tmp_path / 'm.db'}"
    key = make_key(url, "default", "viewer")
    options = uvicorn_ssl_options(tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem")
    sock = listening_socket()  # held until uvicorn serves it: no other process can take the port
    port = int(sock.getsockname()[1])
    app = create_app(url, agents=load_agents_dir(builtin_agents_dir()), worker=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="on", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "TLS server did not start"
            time.sleep(0.02)
        base = f"https://127.0.0.1:{port}"

        def client(cert: str | None) -> httpx.Client:
            ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
            if cert:
                ctx.load_cert_chain(str(tmp_path / f"{cert}.pem"), str(tmp_path / f"{cert}.key"))
            return httpx.Client(base_url=base, verify=ctx, timeout=10)

        with client(None) as anonymous, pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            anonymous.get("/healthz")
        with client("rogue") as rogue, pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            rogue.get("/healthz")
        with client("client") as trusted:
            assert trusted.get("/healthz").json()["status"] == "ok"
            assert trusted.get("/v1/runs").status_code == 401  # API keys are still required
            assert trusted.get("/v1/runs", headers=auth(key)).status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def test_tls_options_validation(tmp_path: Path) -> None:
    from agentmaestro.errors import ConfigError

    assert uvicorn_ssl_options(None, None) == {}
    with pytest.raises(ConfigError, match="needs --tls-cert and --tls-key"):
        uvicorn_ssl_options(None, None, tmp_path / "ca.pem")
    with pytest.raises(ConfigError, match="both"):
        uvicorn_ssl_options(tmp_path / "c.pem", None)
    with pytest.raises(ConfigError, match="does not exist"):
        uvicorn_ssl_options(tmp_path / "c.pem", tmp_path / "k.pem")
    (tmp_path / "c.pem").write_text("not a certificate")
    (tmp_path / "k.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="cannot load"):
        uvicorn_ssl_options(tmp_path / "c.pem", tmp_path / "k.pem")


def test_failure_throttle_and_token_bucket() -> None:
    from agentmaestro.server.auth import FailureThrottle
    from agentmaestro.server.quotas import RateLimiter

    t = FailureThrottle(interval_s=60, per_client=3)
    assert [t.allow("a", "k", 0), t.allow("a", "k", 30), t.allow("a", "k", 61)] == [True, False, True]
    assert [t.allow("b", str(i), 0) for i in range(5)] == [True, True, True, False, False]  # made-up key ids
    assert t.allow("b", "new", 61) and t.allow("c", "0", 0)

    bucket = RateLimiter(per_minute=60)
    assert all(bucket.take("k", 0.0) is None for _ in range(60))  # a full burst
    wait = bucket.take("k", 0.0)
    assert wait == pytest.approx(1.0)
    assert bucket.take("k", 1.0) is None and bucket.take("other", 1.0) is None
    assert RateLimiter.from_env(0) is None


def test_audit_checkpoint_over_http_and_the_remote_cli(
    server: Server, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint signed by the server catches a tail cut below it (with the head moved back)."""
    from agentmaestro.cli import main

    srv, keys = server
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        for i in range(6):
            c.post("/v1/keys", json={"name": f"k{i}", "role": "viewer"}, headers=auth(keys["admin"]))
        assert c.get("/v1/audit/checkpoint", headers=auth(keys["operator"])).status_code == 403
        cp = c.get("/v1/audit/checkpoint", headers=auth(keys["admin"])).json()
        [chain] = cp["chains"]
        assert cp["scope"] == "default" and chain["workspace_id"] == "default" and chain["head_seq"] >= 6
        entries = c.get("/v1/audit", params={"limit": 1000}, headers=auth(keys["admin"])).json()["entries"]
        assert {e["scheme"] for e in entries} == {2} and all(e["key_id"] for e in entries)
        ok = c.post("/v1/audit/verify", json={"checkpoint": cp}, headers=auth(keys["admin"]))
        assert ok.status_code == 200 and ok.json()["ok"] and ok.json()["checkpoint_seq"] == chain["head_seq"]
        forged = {**cp, "chains": [{**chain, "head_seq": 1}]}
        bad = c.post("/v1/audit/verify", json={"checkpoint": forged}, headers=auth(keys["admin"]))
        assert bad.status_code == 400 and "signature" in bad.json()["error"]["message"]
        # a checkpoint of every chain (signed next to the database) reports on the caller's chain only
        c.get("/v1/runs", headers=auth(keys["other"]))  # an auth.login entry: "other" has a chain
        everything = asyncio.run(_checkpoint_of_all(db_url))
        assert {ch["workspace_id"] for ch in everything["chains"]} >= {"default", "other"}
        theirs = c.post("/v1/audit/verify", json={"checkpoint": everything}, headers=auth(keys["other"])).json()
        assert theirs["ok"] and theirs["workspace_id"] == "other" and "default" not in json.dumps(theirs)
        path = tmp_path / "cp.json"
        remote = ["--server", srv.url, "--api-key", keys["admin"], "audit"]
        with pytest.raises(SystemExit) as made:
            main([*remote, "checkpoint", "--out", str(path)])
        assert made.value.code == 0 and "default: head" in capsys.readouterr().out
        # someone with database access cuts the tail and moves the head back (PostgreSQL: trigger off)
        keep = chain["head_seq"] - 3
        pg = db_url.startswith("postgres")
        cut = [
            *(["ALTER TABLE audit_log DISABLE TRIGGER USER"] if pg else []),
            f"DELETE FROM audit_log WHERE workspace_id = 'default' AND seq > {keep}",
            "UPDATE audit_heads SET seq = :s, hash = (SELECT hash FROM audit_log WHERE workspace_id = 'default' "
            "AND seq = :s) WHERE workspace_id = 'default'",
            *(["ALTER TABLE audit_log ENABLE TRIGGER USER"] if pg else []),
        ]
        engine = create_engine(normalize_url(db_url))
        with engine.begin() as conn:
            for statement in cut:
                conn.execute(text(statement), {"s": keep})
        engine.dispose()
        report = c.post("/v1/audit/verify", json={"checkpoint": cp}, headers=auth(keys["admin"])).json()
        assert not report["ok"] and report["broken_seq"] == keep + 1 and "truncated" in report["reason"]
    with pytest.raises(SystemExit) as caught:
        main([*remote, "verify", "--checkpoint", str(path)])
    err = capsys.readouterr().err
    assert caught.value.code == 1 and "truncated" in err and err.count("\n") == 1


async def _checkpoint_of_all(db_url: str) -> dict[str, Any]:
    store = Store.open(db_url)
    try:
        return await store.audit.checkpoint()
    finally:
        await store.close()
