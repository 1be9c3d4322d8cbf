"""Credentials and OAuth over a real server on 127.0.0.1, against a fake authorization server, SQLite and PostgreSQL.

The flow end to end: start (state + S256 challenge) -> the provider's consent redirect -> the callback exchanges the
code with the verifier -> an encrypted oauth2 credential. Replayed and unknown states are refused; a scripted agent's
tool gets a token refreshed before expiry, and the run's events hold no token.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, update

from agentmaestro import Agent, ScriptedModel
from agentmaestro.agents import AgentRegistry
from agentmaestro.cli import main as maestro
from agentmaestro.credentials import oauth
from agentmaestro.crypto import generate_key
from agentmaestro.store.dialects import normalize_url
from agentmaestro.store.schema import oauth_states
from agentmaestro.tools.builtin.integrations import rest_call_tool
from tests.e2e.test_server import auth, make_key, wait_status
from tests.fakes.oauth_server import FakeOAuthServer, query_of
from tests.fakes.server import LiveServer

PROVIDER = "fakeauth"


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": args}]}


@dataclass
class World:
    srv: LiveServer
    authz: FakeOAuthServer
    keys: dict[str, str]
    db_url: str
    http: httpx.Client

    def post(self, path: str, key: str, body: Any = None) -> httpx.Response:
        return self.http.post(path, json=body, headers=auth(self.keys[key]))

    def get(self, path: str, key: str) -> httpx.Response:
        return self.http.get(path, headers=auth(self.keys[key]))

    def tokens(self) -> list[str]:
        """Every token the authorization server ever issued."""
        return [*self.authz.access_tokens, *self.authz.refresh_tokens]


def agents(resource_url: str) -> AgentRegistry:
    api = rest_call_tool(name="api", credential="fake", base_url=resource_url)
    stale = rest_call_tool(name="stale_api", credential="stale", base_url=resource_url)
    user = Agent(
        name="oauth-user",
        model=ScriptedModel([call("api", method="GET", endpoint="me"), {"content": "{{last_tool_result}}"}]),
        tools=[api],
    )
    stale_user = Agent(
        name="stale-user",
        model=ScriptedModel([call("stale_api", method="GET", endpoint="me"), {"content": "{{last_tool_result}}"}]),
        tools=[stale],
    )
    return AgentRegistry([user, stale_user])


@pytest.fixture
def world(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("MAESTRO_SECRET_KEYS", generate_key())
    keys = {role: make_key(db_url, "default", role) for role in ("viewer", "operator", "admin")}
    keys["other"] = make_key(db_url, "other", "admin")
    with FakeOAuthServer(token_ttl_s=60) as authz:  # shorter than the refresh margin: every use refreshes
        with LiveServer(db_url, agents(f"{authz.url}/resource"), rate_limit_per_min=0) as srv:
            config = tmp_path / "oauth.yaml"
            redirect = f"{srv.url}/v1/integrations/oauth/callback"
            config.write_text(yaml.safe_dump({"providers": {PROVIDER: authz.provider_config(redirect)}}))
            monkeypatch.setenv("MAESTRO_OAUTH_CONFIG", str(config))
            with httpx.Client(base_url=srv.url, timeout=20) as http:
                yield World(srv, authz, keys, db_url, http)


def authorize(w: World, name: str, key: str = "operator") -> httpx.Response:
    """Start, consent at the fake provider, and follow its redirect to the callback (as a browser, no API key)."""
    started = w.post("/v1/integrations/oauth/start", key, {"provider": PROVIDER, "name": name})
    assert started.status_code == 200, started.text
    location = w.authz.authorize(started.json()["authorization_url"])
    return w.http.get(location)


def test_oauth_flow_end_to_end(world: World) -> None:
    w = world
    started = w.post("/v1/integrations/oauth/start", "operator", {"provider": PROVIDER, "name": "fake"}).json()
    q = query_of(started["authorization_url"])
    assert started["authorization_url"].startswith(f"{w.authz.url}/authorize?")
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert q["client_id"] == w.authz.client_id and q["scope"] == "read write" and q["response_type"] == "code"
    assert q["redirect_uri"] == f"{w.srv.url}/v1/integrations/oauth/callback" and len(q["state"]) >= 32
    assert w.post("/v1/integrations/oauth/start", "viewer", {"provider": PROVIDER, "name": "x"}).status_code == 403
    unknown = w.post("/v1/integrations/oauth/start", "operator", {"provider": "nobody", "name": "x"})
    assert unknown.status_code == 404 and "not configured" in unknown.json()["error"]["message"]

    location = w.authz.authorize(started["authorization_url"])
    done = w.http.get(location)  # the browser, redirected: no API key
    assert done.status_code == 200, done.text
    cred = done.json()
    assert (cred["name"], cred["kind"], cred["provider"], cred["workspace_id"]) == (
        "fake",
        "oauth2",
        PROVIDER,
        "default",
    )
    assert cred["scopes"] == ["read", "write"] and cred["expires_at"] > time.time()
    exchange = w.authz.token_requests[-1]
    assert exchange["grant_type"] == "authorization_code" and 43 <= len(exchange["code_verifier"]) <= 128
    assert not any(t in done.text for t in w.tokens())

    replay = w.http.get(location)  # the same state again
    assert replay.status_code == 400 and "unknown or already used" in replay.json()["error"]["message"]
    forged = w.http.get("/v1/integrations/oauth/callback", params={"code": "x", "state": "made-up-state"})
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "invalid_input"
    denied = w.post("/v1/integrations/oauth/start", "operator", {"provider": PROVIDER, "name": "d"}).json()
    state = query_of(denied["authorization_url"])["state"]
    refused = w.http.get("/v1/integrations/oauth/callback", params={"state": state, "error": "access_denied"})
    assert refused.status_code == 400 and "did not grant access (access_denied)" in refused.text
    assert w.http.get("/v1/integrations/oauth/callback", params={"state": state, "code": "c"}).status_code == 400

    # an expired state is refused
    late = w.post("/v1/integrations/oauth/start", "operator", {"provider": PROVIDER, "name": "late"}).json()
    engine = create_engine(normalize_url(w.db_url))
    with engine.begin() as conn:
        conn.execute(update(oauth_states).values(expires_at=time.time() - 1))
    engine.dispose()
    expired = w.http.get(w.authz.authorize(late["authorization_url"]))
    assert expired.status_code == 400 and "expired" in expired.json()["error"]["message"]

    # the state is bound to the workspace that started the flow
    assert authorize(w, "theirs", key="other").status_code == 200
    assert w.get("/v1/credentials/theirs", "admin").status_code == 404
    assert w.get("/v1/credentials/theirs", "other").json()["workspace_id"] == "other"
    audit = w.get("/v1/audit?action=credential.create", "admin").json()["entries"]
    assert [e["target"] for e in audit] == ["fake"] and audit[0]["actor"] == "key:default-operator"


def test_tools_get_tokens_refreshed_before_expiry_and_runs_hold_no_token(world: World) -> None:
    w = world
    assert authorize(w, "fake").status_code == 200
    before = w.get("/v1/credentials/fake", "viewer").json()
    run_id = w.post("/v1/runs", "operator", {"agent": "oauth-user", "input": "who am i"}).json()["run_id"]
    run = wait_status(w.http, run_id, w.keys["operator"], {"COMPLETED", "FAILED"})
    assert run["status"] == "COMPLETED", run
    assert "HTTP 200" in run["output"] and '"ok":true' in run["output"].replace(" ", "")
    grants = [r["grant_type"] for r in w.authz.token_requests]
    assert grants == ["authorization_code", "refresh_token"]  # refreshed because it expired within the margin
    after = w.get("/v1/credentials/fake", "viewer").json()
    assert after["expires_at"] > before["expires_at"] and after["updated_by"] == f"run:{run_id}"
    events = w.get(f"/v1/runs/{run_id}/events?limit=1000", "operator").text
    assert not any(t in events for t in w.tokens())
    assert [e["target"] for e in w.get("/v1/audit?action=credential.refresh", "admin").json()["entries"]] == ["fake"]

    # a token that expired and cannot be refreshed: a clear error for the model and on the credential
    body = {
        "name": "stale",
        "kind": "oauth2",
        "access_token": "at-long-gone-token-000000",
        "refresh_token": "rt-revoked-token-00000000",
        "provider": PROVIDER,
        "expires_at": time.time() - 10,
    }
    assert w.post("/v1/credentials", "admin", body).status_code == 201
    stale_id = w.post("/v1/runs", "operator", {"agent": "stale-user", "input": "x"}).json()["run_id"]
    stale = wait_status(w.http, stale_id, w.keys["operator"], {"COMPLETED", "FAILED"})
    assert "access token expired and token refresh failed" in stale["output"]
    assert f"maestro oauth start {PROVIDER} --name stale" in stale["output"]
    assert "invalid_grant" in w.get("/v1/credentials/stale", "viewer").json()["refresh_error"]


def test_pkce_verifier_must_match_the_challenge(world: World) -> None:
    w = world
    providers = oauth.load_providers()
    provider = providers[PROVIDER]
    verifier, challenge = oauth.pkce_pair()
    assert challenge == oauth.s256(verifier) and len(challenge) == 43
    url = oauth.authorization_url(provider, state="s" * 40, challenge=challenge, scopes=["read"])
    code = query_of(w.authz.authorize(url))["code"]
    with pytest.raises(oauth.OAuthError, match="PKCE verification failed"):
        asyncio.run(oauth.exchange_code(provider, code=code, verifier=oauth.pkce_pair()[0]))
    code = query_of(w.authz.authorize(url))["code"]
    tokens = asyncio.run(oauth.exchange_code(provider, code=code, verifier=verifier))
    assert tokens.access_token in w.authz.access_tokens and tokens.refresh_token and "token" not in repr(tokens)[30:]
    post = oauth.Provider(**{**provider.__dict__, "token_auth": "post"})
    code = query_of(w.authz.authorize(url))["code"]
    assert asyncio.run(oauth.exchange_code(post, code=code, verifier=verifier)).access_token
    wrong = oauth.Provider(**{**provider.__dict__, "client_secret": "not-the-secret"})
    with pytest.raises(oauth.OAuthError, match="invalid_client"):
        asyncio.run(oauth.refresh_tokens(wrong, tokens.refresh_token or ""))


def test_credentials_api_never_returns_secrets_and_is_scoped(world: World) -> None:
    w = world
    secret = "xoxb-1234567890-abcdefghijkl"
    body = {"name": "slack", "kind": "token", "value": secret, "scopes": ["chat:write"]}
    created = w.post("/v1/credentials", "admin", body)
    assert created.status_code == 201 and created.json()["hint"] == "…ijkl"
    replaced = w.post("/v1/credentials", "admin", {**body, "value": secret + "-v2"})
    assert replaced.status_code == 200 and replaced.json()["hint"] == "…l-v2"
    listed = w.get("/v1/credentials", "viewer")
    assert [c["name"] for c in listed.json()] == ["slack"]
    one = w.get("/v1/credentials/slack", "viewer")
    for r in (created, replaced, listed, one):
        assert secret not in r.text
    assert w.post("/v1/credentials", "operator", body).status_code == 403
    assert w.get("/v1/credentials/slack", "other").status_code == 404
    assert w.get("/v1/credentials", "other").json() == []
    assert w.http.delete("/v1/credentials/slack", headers=auth(w.keys["other"])).status_code == 404
    for bad in (
        {"name": "x", "kind": "basic", "username": "u"},
        {"name": "x", "kind": "token", "value": "v", "password": "p"},
        {"name": "../x", "kind": "token", "value": "v"},
        {"name": "x", "kind": "token"},
    ):
        r = w.post("/v1/credentials", "admin", bad)
        assert r.status_code == 422 and set(r.json()["error"]) == {"code", "message"}, r.text
    rotated = w.post("/v1/credentials/rotate", "admin")
    assert rotated.status_code == 200 and rotated.json()["rotated"] == 1
    assert w.http.delete("/v1/credentials/slack", headers=auth(w.keys["admin"])).status_code == 200
    assert w.get("/v1/credentials/slack", "admin").status_code == 404


def test_cli_through_the_server(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = world
    base = ["--server", w.srv.url, "--api-key", w.keys["admin"]]

    def cli(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        with pytest.raises(SystemExit) as exc:
            maestro([*base, *args])
        captured = capsys.readouterr()
        return int(exc.value.code or 0), captured.out, captured.err

    secret = "ghp_" + "a" * 36
    code, out, _ = cli("credentials", "set", "github", "--kind", "token", "--scope", "repo", stdin=secret)
    assert code == 0 and "…aaaa" in out and secret not in out
    code, out, _ = cli("--json", "credentials", "list")
    assert code == 0 and json.loads(out)[0]["scopes"] == ["repo"] and secret not in out
    code, out, _ = cli("oauth", "start", PROVIDER, "--name", "viaCLI")
    assert code == 0 and f"{w.authz.url}/authorize?" in out and "code_challenge_method=S256" in out
    code, out, _ = cli("credentials", "rotate")
    assert code == 0 and "re-encrypted 1 credential(s)" in out
    code, out, _ = cli("credentials", "rm", "github")
    assert code == 0 and "deleted credential 'github'" in out
    code, out, err = cli("credentials", "rm", "github")
    assert code == 1 and "credential 'github' not found" in err and len(err.strip().splitlines()) == 1


def test_concurrent_refreshes_share_the_winners_tokens(world: World) -> None:
    from agentmaestro.credentials.runtime import StoreCredentials
    from agentmaestro.store.base import Store

    w = world
    assert authorize(w, "fake").status_code == 200

    async def go() -> list[dict[str, Any]]:
        store = Store.open(w.db_url)
        try:
            creds = [StoreCredentials(store=store, workspace_id="default", run_id=f"run-{i}") for i in range(3)]
            return list(await asyncio.gather(*(c.get("fake") for c in creds)))
        finally:
            await store.close()

    got = asyncio.run(go())
    for cred in got:  # every caller ends up with a live token, although refresh tokens work once
        assert w.authz.access_tokens[cred["secret"]["access_token"]] > time.time()
    assert w.get("/v1/credentials/fake", "viewer").json()["refresh_error"] is None
    assert [r["grant_type"] for r in w.authz.token_requests].count("refresh_token") >= 1
