"""Credentials: ciphertext at rest, never returned, rotated under the newest key, scoped to their workspace; the
integration tools get them at execution time and no secret reaches the run's events.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from agentmaestro import Agent, ScriptedModel
from agentmaestro.agents import AgentRegistry
from agentmaestro.cli import main as maestro
from agentmaestro.core.states import RunStatus
from agentmaestro.crypto import DecryptionError, Keyring, generate_key
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.errors import ConfigError, NotFoundError, ValidationError
from agentmaestro.store.base import Store
from agentmaestro.store.dialects import normalize_url
from agentmaestro.store.records import NewRun, new_run_id
from agentmaestro.store.schema import audit_log, credentials
from agentmaestro.tools.builtin.integrations import integration_tool
from tests.fakes.saas_apis import FakeSaaS

pytestmark = pytest.mark.anyio

SECRET = "sk-live-0123456789abcdef-very-secret"


async def opened(db_url: str) -> Store:
    store = Store.open(db_url)
    await store.workspaces.ensure("default")
    return store


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    k = generate_key()
    monkeypatch.setenv("MAESTRO_SECRET_KEYS", k)
    return k


def raw(db_url: str, table: Any = credentials) -> list[dict[str, Any]]:
    engine = create_engine(normalize_url(db_url))
    try:
        with engine.begin() as conn:
            return [dict(r._mapping) for r in conn.execute(select(table))]
    finally:
        engine.dispose()


async def test_secret_is_ciphertext_at_rest_and_only_a_hint_leaves_the_store(db_url: str, key: str) -> None:
    store = await opened(db_url)
    try:
        row, created = await store.credentials.put(
            "default", name="openai", kind="api_key", secret={"value": SECRET}, actor="test"
        )
        assert created and row["hint"] == "…cret" and SECRET not in json.dumps(row)
        [stored] = raw(db_url)
        assert SECRET not in json.dumps(stored, default=str)
        assert json.loads(Keyring([key]).decrypt(stored["secret"])) == {"value": SECRET}
        assert stored["key_id"] == Keyring([key]).key_id
        listed = await store.credentials.all("default")
        assert [r["name"] for r in listed] == ["openai"] and SECRET not in json.dumps(listed)
        assert SECRET not in json.dumps(await store.credentials.get("default", "openai"))
        revealed = await store.credentials.reveal("default", "openai")
        assert revealed["secret"] == {"value": SECRET}
        # replace, then delete: every change is audited, never with the secret
        _, created = await store.credentials.put(
            "default", name="openai", kind="basic", secret={"username": "u", "password": "short"}, actor="test"
        )
        assert not created and (await store.credentials.get("default", "openai"))["hint"] == "…"
        await store.credentials.delete("default", "openai", actor="test")
        with pytest.raises(NotFoundError):
            await store.credentials.get("default", "openai")
        entries = await store.audit.page("default", action=None)
        actions = [e["action"] for e in entries if e["action"].startswith("credential.")]
        assert actions == ["credential.create", "credential.update", "credential.delete"]
        assert SECRET not in json.dumps(raw(db_url, audit_log), default=str)
    finally:
        await store.close()


async def test_bad_input_is_refused(db_url: str, key: str) -> None:
    store = await opened(db_url)
    try:
        bad: list[dict[str, Any]] = [
            {"name": "../x", "kind": "token", "secret": {"value": SECRET}},
            {"name": "x", "kind": "password", "secret": {"value": SECRET}},
            {"name": "x", "kind": "basic", "secret": {"username": "u"}},
            {"name": "x", "kind": "token", "secret": {"value": SECRET, "extra": "y"}},
        ]
        for body in bad:
            with pytest.raises(ValidationError):
                await store.credentials.put("default", actor="test", **body)
        with pytest.raises(NotFoundError):
            await store.credentials.put("nowhere", name="x", kind="token", secret={"value": SECRET}, actor="t")
    finally:
        await store.close()


async def test_rotation_keeps_values_readable_under_the_new_key_only(
    db_url: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await opened(db_url)
    try:
        await store.workspaces.ensure("other")
        for ws in ("default", "other"):
            await store.credentials.put(ws, name="gh", kind="token", secret={"value": f"{SECRET}-{ws}"}, actor="t")
        new = generate_key()
        monkeypatch.setenv("MAESTRO_SECRET_KEYS", f"{new},{key}")
        assert await store.credentials.rotate(None, actor="t") == {"default": 1, "other": 1}
        for row in raw(db_url):
            assert row["key_id"] == Keyring([new]).key_id
            assert json.loads(Keyring([new]).decrypt(row["secret"]))["value"] == f"{SECRET}-{row['workspace_id']}"
            with pytest.raises(DecryptionError):
                Keyring([key]).decrypt(row["secret"])
        monkeypatch.setenv("MAESTRO_SECRET_KEYS", new)  # the old key is gone: still readable
        assert (await store.credentials.reveal("other", "gh"))["secret"]["value"] == f"{SECRET}-other"
        rotations = [e for e in await store.audit.page("other") if e["action"] == "credential.rotate"]
        assert rotations and rotations[0]["detail"]["credentials"] == 1
        monkeypatch.setenv("MAESTRO_SECRET_KEYS", generate_key())  # a wrong key: a clear error, not garbage
        with pytest.raises(ConfigError, match="encrypted with a key that is not configured"):
            await store.credentials.reveal("default", "gh")
    finally:
        await store.close()


async def test_other_workspaces_credentials_are_invisible(db_url: str, key: str) -> None:
    store = await opened(db_url)
    try:
        await store.workspaces.ensure("other")
        await store.credentials.put("default", name="slack", kind="token", secret={"value": SECRET}, actor="t")
        assert await store.credentials.all("other") == []
        for op in (store.credentials.get, store.credentials.reveal):
            with pytest.raises(NotFoundError):
                await op("other", "slack")
        with pytest.raises(NotFoundError):
            await store.credentials.delete("other", "slack", actor="t")
        assert await store.credentials.rotate("other", actor="t") == {}
        assert (await store.credentials.get("default", "slack"))["name"] == "slack"
    finally:
        await store.close()


# ---------------------------------------------------------------------------------------------------------- tools


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": args}]}


async def run_agent(store: Store, agent: Agent, workspace: str = "default") -> Any:
    await store.workspaces.ensure(workspace)
    [rec] = await store.runs.create(
        [
            NewRun(
                run_id=new_run_id(),
                workspace_id=workspace,
                agent_name=agent.name,
                input="go",
                spec=agent.spec(),
                policy={},
            )
        ]
    )
    worker = Worker(store, AgentRegistry([agent]), config=WorkerConfig(poll_interval_s=0.05))
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(30):
            while True:
                run = await store.runs.get(rec.run_id)
                if run.status.terminal or run.status is RunStatus.WAITING_FOR_APPROVAL:
                    break
                await store.events.wait(None, 0.1)
    finally:
        worker.stop()
        await task
    return await store.runs.get(rec.run_id)


def integration_agent(saas: FakeSaaS, turns: list[dict[str, Any]]) -> Agent:
    """Tools bound by agent YAML's references (as a YAML file binds them), driven by a scripted model."""
    from_yaml = Agent.from_dict(
        {
            "name": "notifier",
            "model": "scripted:calculator",
            "tools": [
                f"builtin:slack_post_message?credential=slack-bot&base_url={saas.slack_url}",
                f"builtin:notion_create_page?credential=notion&base_url={saas.notion_url}",
                f"builtin:rest_call?name=tickets&credential=tickets&base_url={saas.rest_url}/api",
            ],
        }
    )
    return Agent(name="notifier", model=ScriptedModel(turns), tools=list(from_yaml.tools))


async def test_scripted_agent_calls_integrations_and_no_secret_reaches_the_events(db_url: str, key: str) -> None:
    store = await opened(db_url)
    try:
        with FakeSaaS() as saas:
            for name, token in (
                ("slack-bot", saas.slack_token),
                ("notion", saas.notion_token),
                ("tickets", saas.rest_token),
            ):
                await store.credentials.put("default", name=name, kind="token", secret={"value": token}, actor="t")
            agent = integration_agent(
                saas,
                [
                    call("slack_post_message", channel="#ops", text="deploy finished"),
                    call("notion_create_page", parent_id="p-1", title="Report", content="one\n\ntwo"),
                    call("tickets", method="POST", endpoint="tickets", query={"q": "1"}, body={"title": "bug"}),
                    call("tickets", method="GET", endpoint="../../slack/api/chat.postMessage"),
                    call("tickets", method="GET", endpoint="http://evil.example/x"),
                    {"content": "done"},
                ],
            )
            run = await run_agent(store, agent)
            assert run.status is RunStatus.COMPLETED, run.state
            slack, notion, rest = saas.requests
            assert slack.path == "/slack/api/chat.postMessage"
            assert slack.headers["authorization"] == f"Bearer {saas.slack_token}"
            assert slack.body == {"channel": "#ops", "text": "deploy finished"}
            assert notion.headers["authorization"] == f"Bearer {saas.notion_token}"
            assert notion.headers["notion-version"] and len(notion.body["children"]) == 2
            assert rest.headers["authorization"] == f"Bearer {saas.rest_token}"
            assert (rest.method, rest.path, rest.query, rest.body) == (
                "POST",
                "/rest/api/tickets",
                {"q": "1"},
                {"title": "bug"},
            )
            events = json.dumps([e.payload for e in await store.events.read(run.run_id)])
            for token in (saas.slack_token, saas.notion_token, saas.rest_token):
                assert token not in events
            assert "[REDACTED]" in events  # the REST API echoed the credential; the model saw it redacted
            assert "may not contain '.', '..'" in events and "must be a plain path" in events
            # the same agent in a workspace without these credentials: a clear error, nothing sent
            before = len(saas.requests)
            other = await run_agent(
                store,
                integration_agent(
                    saas, [call("slack_post_message", channel="#x", text="y"), {"content": "{{last_tool_result}}"}]
                ),
                "other",
            )
            assert "credential 'slack-bot' not found in this workspace" in other.state.output
            assert len(saas.requests) == before
    finally:
        await store.close()


async def test_rest_call_risk_follows_the_method(db_url: str, key: str) -> None:
    store = await opened(db_url)
    try:
        with FakeSaaS() as saas:
            await store.credentials.put(
                "default", name="tickets", kind="token", secret={"value": saas.rest_token}, actor="t"
            )
            agent = integration_agent(saas, [call("tickets", method="DELETE", endpoint="tickets/1"), {"content": "x"}])
            tool = agent.tool_map()["tickets"]
            assert [tool.assess({"method": m})[0].name for m in ("GET", "POST", "PATCH", "DELETE")] == [
                "SAFE",
                "ELEVATED",
                "ELEVATED",
                "DANGEROUS",
            ]
            run = await run_agent(store, agent)
            assert run.status is RunStatus.WAITING_FOR_APPROVAL  # DANGEROUS: held for a person
            assert saas.requests == []
    finally:
        await store.close()


def test_tool_references_are_checked() -> None:
    for ref, message in (
        ("rest_call", "rest_call needs a binding"),
        ("rest_call?credential=x", "rest_call needs a binding"),
        ("rest_call?credential=x&base_url=ftp://h", "base_url must be an http"),
        ("slack_post_message?token=abc", "unknown parameter"),
    ):
        with pytest.raises(ConfigError, match=message):
            integration_tool(ref)
    assert integration_tool("read_file") is None
    with pytest.raises(ConfigError, match="rest_call needs a binding"):
        Agent.from_dict({"name": "a", "model": "scripted:x", "tools": ["builtin:rest_call"]})


# ------------------------------------------------------------------------------------------------------------ CLI


def cli(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    *args: str,
    stdin: str | None = None,
) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    with pytest.raises(SystemExit) as exc:
        maestro(["--database-url", db_url, *args])
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, captured.err


def test_cli_set_list_rm_rotate_never_print_the_secret(
    db_url: str, key: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not db_url.startswith("sqlite"):
        asyncio.run(_migrate(db_url))
    code, out, _ = cli(capsys, monkeypatch, db_url, "credentials", "set", "gh", "--kind", "token", stdin=SECRET + "\n")
    assert code == 0 and "…cret" in out and SECRET not in out
    monkeypatch.setenv("BASIC_PW", "hunter2-but-longer")
    code, out, _ = cli(
        capsys,
        monkeypatch,
        db_url,
        "credentials",
        "set",
        "jira",
        "--kind",
        "basic",
        "--username",
        "bot",
        "--from-env",
        "BASIC_PW",
    )
    assert code == 0 and "hunter2" not in out
    code, out, _ = cli(capsys, monkeypatch, db_url, "--json", "credentials", "list")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["gh", "jira"] and SECRET not in out and "hunter2" not in out
    new = generate_key()
    monkeypatch.setenv("MAESTRO_SECRET_KEYS", f"{new},{key}")
    code, out, _ = cli(capsys, monkeypatch, db_url, "credentials", "rotate")
    assert code == 0 and "re-encrypted 2 credential(s)" in out
    assert {r["key_id"] for r in raw(db_url)} == {Keyring([new]).key_id}
    code, out, _ = cli(capsys, monkeypatch, db_url, "credentials", "rm", "gh")
    assert code == 0 and "deleted credential 'gh'" in out
    for field, value in (
        ("CLIENT_ID", "cid"),
        ("AUTHORIZE_URL", "https://auth.example/authorize"),
        ("TOKEN_URL", "https://auth.example/token"),
        ("REDIRECT_URL", "https://m.example/cb"),
    ):
        monkeypatch.setenv(f"MAESTRO_OAUTH_EXAMPLE_{field}", value)
    code, out, _ = cli(capsys, monkeypatch, db_url, "--json", "oauth", "start", "example", "--name", "ex")
    started = json.loads(out)
    assert code == 0 and started["authorization_url"].startswith("https://auth.example/authorize?response_type=code")
    assert "code_challenge=" in started["authorization_url"] and started["name"] == "ex"
    # errors: one line on stderr, non-zero exit
    for args, stdin, message in (
        (("credentials", "rm", "gh"), None, "credential 'gh' not found"),
        (("credentials", "set", "x", "--kind", "basic"), None, "needs --username"),
        (("credentials", "set", "x", "--kind", "token"), "", "no secret given"),
        (("credentials", "set", "x", "--from-env", "NOPE_NOT_SET"), None, "'NOPE_NOT_SET' is not set"),
        (("oauth", "start", "nobody", "--name", "x"), None, "OAuth provider 'nobody' is not configured"),
    ):
        code, out, err = cli(capsys, monkeypatch, db_url, *args, stdin=stdin)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, (args, err)


async def _migrate(db_url: str) -> None:
    store = Store.open(db_url)
    await store.close()


# ------------------------------------------------------------------------------------ config, confinement, redaction


def test_oauth_providers_from_yaml_and_environment(tmp_path: Any) -> None:
    from agentmaestro.credentials.oauth import authorization_url, load_providers

    config = tmp_path / "oauth.yaml"
    config.write_text(
        "providers:\n  gh:\n    client_id: abc\n    client_secret_env: GH_SECRET\n"
        "    authorize_url: https://auth.example/authorize?audience=x\n    token_url: https://auth.example/token\n"
        "    scopes: [repo, 'read:org']\n    redirect_url: https://m.example/v1/integrations/oauth/callback\n"
    )
    env = {
        "MAESTRO_OAUTH_CONFIG": str(config),
        "GH_SECRET": "s3cret-value",
        "MAESTRO_OAUTH_LINEAR_CLIENT_ID": "lin",
        "MAESTRO_OAUTH_LINEAR_AUTHORIZE_URL": "https://linear.example/oauth/authorize",
        "MAESTRO_OAUTH_LINEAR_TOKEN_URL": "https://linear.example/oauth/token",
        "MAESTRO_OAUTH_LINEAR_SCOPES": "read,write",
        "MAESTRO_OAUTH_REDIRECT_URL": "https://m.example/cb",
        "MAESTRO_OAUTH_LINEAR_TOKEN_AUTH": "post",
    }
    providers = load_providers(environ=env)
    gh, linear = providers["gh"], providers["linear"]
    assert gh.client_secret == "s3cret-value" and "s3cret" not in repr(gh) and gh.scopes == ("repo", "read:org")
    assert (linear.scopes, linear.redirect_url, linear.token_auth) == (
        ("read", "write"),
        "https://m.example/cb",
        "post",
    )
    url = authorization_url(gh, state="st", challenge="ch", scopes=gh.scopes)
    assert url.startswith("https://auth.example/authorize?audience=x&response_type=code&client_id=abc")
    assert "scope=repo%20read%3Aorg" in url and "code_challenge_method=S256" in url
    for bad, message in (
        ({"MAESTRO_OAUTH_X_CLIENT_ID": "x"}, "needs redirect_url"),
        ({"MAESTRO_OAUTH_X_CLIENT_ID": "x", "MAESTRO_OAUTH_REDIRECT_URL": "ftp://x"}, "must be an http"),
        ({"MAESTRO_OAUTH_CONFIG": str(tmp_path / "missing.yaml")}, "cannot read OAuth config"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_providers(environ=bad)


def test_rest_call_stays_under_its_base_url() -> None:
    from agentmaestro.errors import ToolError
    from agentmaestro.tools.builtin.integrations import confined_url

    base = "https://api.example/v1"
    assert confined_url(base, "users/1") == "https://api.example/v1/users/1"
    assert confined_url(base, "/users/1/") == "https://api.example/v1/users/1/"
    assert confined_url(base, "") == base
    for escape in (
        "../admin",
        "users/../../x",
        "users/%2e%2e/%2E%2E/x",
        "https://evil.example/x",
        "//evil.example/x",
        "users?id=1",
        "a\\b",
        "users/./1",
        "a//b",
        "x y",
    ):
        with pytest.raises(ToolError):
            confined_url(base, escape)


def test_registered_secrets_are_redacted() -> None:
    from agentmaestro.tools.redact import redact, register_secret

    register_secret("opaque-token-without-a-known-shape-42")
    register_secret("short")  # too short to redact safely: ignored
    assert redact("got opaque-token-without-a-known-shape-42 back; short") == "got [REDACTED] back; short"
