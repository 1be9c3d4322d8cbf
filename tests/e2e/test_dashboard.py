"""The dashboard in a real browser: Python playwright driving Debian's chromium against a live server.

The main flow (start a run that needs approval, watch it appear live, approve it in the human queue,
watch it complete) runs on SQLite and on PostgreSQL; the rest on SQLite. The tests also write the
screenshots (into docs/screenshots/ when MAESTRO_UPDATE_SCREENSHOTS=1, else into a temporary folder,
so an ordinary test run leaves the working tree clean).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, insert

from agentmaestro import Agent, RiskLevel, ScriptedModel, tool
from agentmaestro.agents import AgentRegistry, load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from agentmaestro.server.ui import UI_DIR, resolve
from agentmaestro.store.base import Store
from agentmaestro.store.dialects import normalize_url
from agentmaestro.store.schema import human_requests
from tests.e2e.browser import Pages, expect, go, needs_chromium, shot
from tests.fakes.server import LiveServer

XSS_RESULT = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
XSS_INPUT = "<script>window.__pwned=3</script>"


@tool(risk=RiskLevel.SAFE, idempotent=True)
def fetch_page(url: str) -> str:
    """Fetch a web page (test double: the page is hostile)."""
    return XSS_RESULT


def extra_agents() -> list[Agent]:
    """A hostile-output agent, a two-level delegation tree, and an agent whose model call always fails."""
    scraper = Agent(
        name="scraper",
        description="Its tool returns a script tag.",
        model=ScriptedModel(
            [
                {"content": "<b>bold?</b>", "tool_calls": [{"name": "fetch_page", "arguments": {"url": XSS_INPUT}}]},
                {"content": "The page said: {{last_tool_result}}"},
            ]
        ),
        tools=[fetch_page],
    )
    leaf = Agent(name="leaf", model=ScriptedModel([{"content": "leaf did {{input}}"}]))
    mid = Agent(
        name="mid",
        model=ScriptedModel(
            [
                {
                    "tool_calls": [
                        {"name": "delegate", "arguments": {"agent": "leaf", "task": "part A"}},
                        {"name": "delegate", "arguments": {"agent": "leaf", "task": "part B"}},
                    ]
                },
                {"content": "mid got {{last_tool_result}}"},
            ]
        ),
        delegates=[leaf],
    )
    root = Agent(
        name="planner",
        description="Delegates to mid, which delegates to leaf twice.",
        model=ScriptedModel(
            [
                {"tool_calls": [{"name": "delegate", "arguments": {"agent": "mid", "task": "the middle"}}]},
                {"content": "planner got {{last_tool_result}}"},
            ]
        ),
        delegates=[mid],
    )
    flaky = Agent(
        name="flaky",
        model=ScriptedModel([{"error": "the model service is down"}]),
        max_attempts=1,
        retry_backoff_s=0.0,
    )
    return [scraper, root, flaky]


def registry() -> AgentRegistry:
    reg = load_agents_dir(builtin_agents_dir())
    for agent in extra_agents():
        reg.register(agent)
    return reg


def make_keys(url: str) -> dict[str, str]:
    """A viewer, an operator and an admin key (created in a thread: playwright owns this thread's loop)."""

    async def go() -> dict[str, str]:
        store = Store.open(url)
        try:
            await store.workspaces.ensure("default")
            keys = {}
            for role in ("viewer", "operator", "admin"):
                _row, keys[role] = await store.keys.create("default", name=f"ui-{role}", role=role)
            return keys
        finally:
            await store.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


def api(srv: LiveServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def wait_status(client: httpx.Client, run_id: str, statuses: set[str], timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/v1/runs/{run_id}").json()
        if body["status"] in statuses:
            return body
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {statuses}")


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    """One server on SQLite for the tests that do not need a fresh database."""
    url = f"sqlite:///{tmp_path_factory.mktemp('dash') / 'maestro.db'}"
    keys = make_keys(url)
    with LiveServer(url, registry()) as srv:
        yield srv, keys


def moved_to_new_run(page: Any, old_run_id: str) -> str:
    """Wait until the page shows another run's page; its run id."""
    page.wait_for_url(lambda url: "#/runs/run_" in url and not url.endswith(old_run_id))
    return str(page.url.rsplit("/", 1)[1])


# ------------------------------------------------------------------------------ the main flow


@needs_chromium
def test_approval_flow_live(db_url: str, pages: Callable[[str], Pages]) -> None:
    """Start a janitor run from New run, see it appear live in another tab's runs list, approve it with
    edited arguments in the human queue, and watch it complete on its run page, through dropped
    connections on both live streams."""
    check = expect()
    keys = make_keys(db_url)
    with LiveServer(db_url, registry()) as srv:
        p = pages(srv.url)
        p.sign_in_screenshot()
        watcher = p.open(keys["operator"])  # the runs list, left open
        watcher.evaluate("window.__noReload = true")

        starter = p.open(keys["operator"], "#/new")
        starter.get_by_label("Agent", exact=True).select_option("janitor")
        check(starter.get_by_text("Purges old log files")).to_be_visible()
        starter.get_by_label("Input").fill("Tidy the disk, please.")
        starter.get_by_label("Max steps").fill("6")
        shot(starter, "new-run")
        starter.get_by_role("button", name="Start run").click()
        starter.wait_for_url(re.compile(r".*#/runs/run_[0-9a-f]+$"))
        run_id = starter.url.rsplit("/", 1)[1]

        # The run page follows the run over SSE: it stops at the approval.
        check(starter.locator(".run-head [data-status]")).to_have_attribute("data-status", "WAITING_FOR_APPROVAL")
        check(starter.locator('.timeline li[data-type="APPROVAL_REQUESTED"]')).to_have_count(1)
        check(starter.get_by_text("This run is waiting for a person.")).to_be_visible()

        # The other tab saw it appear, without a reload.
        row = watcher.locator(f'tr[data-run-id="{run_id}"]')
        check(row).to_have_attribute("data-status", "WAITING_FOR_APPROVAL")
        check(row).to_contain_text("janitor")
        check(watcher.locator("#queue-count")).to_have_text("1")
        assert watcher.evaluate("window.__noReload") is True
        shot(starter, "run-waiting")

        go(watcher, "#/queue")
        card = watcher.locator(".queue-item").filter(has_text="purge_logs")
        check(card).to_contain_text("DANGEROUS")
        check(card).to_contain_text("DANGEROUS calls: require_approval")
        check(card.locator("pre")).to_contain_text('"older_than_days": 30')
        check(card).to_contain_text("janitor: Tidy the disk, please.")
        card.get_by_label("Reason (recorded in the audit log)").fill("45 days is enough")
        shot(watcher, "human-queue")

        # Both live connections drop; each resumes from where it was.
        starter.evaluate("window.__maestro.dropRunStream()")
        watcher.evaluate("window.__maestro.dropFirehose()")
        card.get_by_label("Edit arguments (JSON object)").fill("{not json")
        card.get_by_role("button", name="Approve with these arguments").click()
        check(card.get_by_role("alert")).to_contain_text("Not valid JSON")
        card.get_by_label("Edit arguments (JSON object)").fill('{"older_than_days": 45}')
        card.get_by_role("button", name="Approve with these arguments").click()
        check(watcher.get_by_text("No tool call is waiting for approval.")).to_be_visible()
        check(watcher.locator("#queue-count")).to_be_hidden()

        # The run page shows the rest as it happens, each event once.
        check(starter.locator(".run-head [data-status]")).to_have_attribute("data-status", "COMPLETED")
        check(starter.get_by_test_id("run-output")).to_contain_text("purged 12 log files older than 45 days")
        granted = starter.locator('.timeline li[data-type="APPROVAL_GRANTED"]')
        check(granted).to_contain_text("Approved by key:ui-operator with edited arguments")
        check(granted).to_contain_text("45 days is enough")
        check(starter.locator('.timeline li[data-type="RUN_COMPLETED"]')).to_have_count(1)
        seqs = starter.locator(".timeline li[data-seq]").evaluate_all("els => els.map(e => Number(e.dataset.seq))")
        with api(srv, keys["viewer"]) as c:
            events = c.get(f"/v1/runs/{run_id}/events").json()["events"]
        assert seqs == [e["seq"] for e in events]  # every event, in order, none twice
        check(starter.get_by_text("Finished (COMPLETED)")).to_be_visible()
        check(starter.locator(f'.graph-node[data-node-id="{run_id}"]')).to_have_attribute("data-status", "COMPLETED")
        shot(starter, "run-completed")

        go(watcher, "#/runs")
        check(watcher.locator(f'tr[data-run-id="{run_id}"]')).to_have_attribute("data-status", "COMPLETED")


# ------------------------------------------------------------------------------ roles


@needs_chromium
def test_viewer_sees_no_actions(shared: tuple[LiveServer, dict[str, str]], pages: Callable[[str], Pages]) -> None:
    check = expect()
    srv, keys = shared
    with api(srv, keys["operator"]) as c:
        run_id = c.post("/v1/runs", json={"agent": "janitor", "input": "viewer test"}).json()["run_id"]
        wait_status(c, run_id, {"WAITING_FOR_APPROVAL"})
    page = pages(srv.url).open(keys["viewer"])
    check(page.locator(f'tr[data-run-id="{run_id}"]')).to_be_visible()
    check(page.locator("#whoami")).to_have_text("ui-viewer (viewer)")
    check(page.get_by_role("link", name="New run")).to_be_hidden()
    check(page.get_by_role("link", name="Keys & audit")).to_be_hidden()

    go(page, f"#/runs/{run_id}")
    check(page.locator('.timeline li[data-type="APPROVAL_REQUESTED"]')).to_have_count(1)
    assert page.locator("main button").count() == 0  # no cancel, restart or fork

    go(page, "#/queue")
    card = page.locator(".queue-item").filter(has_text="viewer test")
    check(card).to_contain_text("purge_logs")
    check(page.get_by_text("Your key is a viewer key")).to_be_visible()
    assert page.locator("main button").count() == 0  # no approve or reject

    go(page, "#/new")
    check(page.get_by_text("starting runs needs the operator role")).to_be_visible()
    assert page.locator("main form").count() == 0
    go(page, "#/admin")
    check(page.get_by_text("needs an admin key")).to_be_visible()
    go(page, "#/catalog")
    check(page.locator('[data-agent="janitor"]')).to_contain_text("DANGEROUS")
    assert page.get_by_role("link", name="Start a janitor run").count() == 0


# ------------------------------------------------------------------------------ escaping


@needs_chromium
def test_script_in_model_and_tool_output_is_text(
    shared: tuple[LiveServer, dict[str, str]], pages: Callable[[str], Pages]
) -> None:
    check = expect()
    srv, keys = shared
    with api(srv, keys["operator"]) as c:
        run_id = c.post("/v1/runs", json={"agent": "scraper", "input": XSS_INPUT}).json()["run_id"]
        wait_status(c, run_id, {"COMPLETED"})
    page = pages(srv.url).open(keys["operator"], f"#/runs/{run_id}")
    check(page.locator('.timeline li[data-type="RUN_COMPLETED"]')).to_contain_text(XSS_RESULT)
    check(page.locator('.timeline li[data-type="RUN_CREATED"]')).to_contain_text(XSS_INPUT)
    check(page.locator('.timeline li[data-type="STEP_COMPLETED"]').first).to_contain_text("<b>bold?</b>")
    tool_card = page.locator('.timeline li[data-type="STEP_COMPLETED"]').filter(has_text="Tool fetch_page")
    check(tool_card.locator("pre").nth(1)).to_have_text(XSS_RESULT)
    check(page.get_by_test_id("run-output")).to_have_text(f"The page said: {XSS_RESULT}")
    go(page, "#/runs")
    check(page.locator(f'tr[data-run-id="{run_id}"]')).to_contain_text(XSS_INPUT)
    go(page, f"#/graph/{run_id}")
    check(page.locator("#node-title")).to_contain_text("scraper")
    check(page.locator('.panel li[data-type="RUN_COMPLETED"]')).to_contain_text(XSS_RESULT)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main script, main img, main b").count() == 0


# ------------------------------------------------------------------------------ the sub-run tree


@needs_chromium
def test_sub_run_tree_and_task_graph(shared: tuple[LiveServer, dict[str, str]], pages: Callable[[str], Pages]) -> None:
    check = expect()
    srv, keys = shared
    with api(srv, keys["operator"]) as c:
        root_id = c.post("/v1/runs", json={"agent": "planner", "input": "the whole job"}).json()["run_id"]
        done = wait_status(c, root_id, {"COMPLETED"})
        assert done["output"] == "planner got mid got leaf did part B"
        [mid] = c.get("/v1/runs", params={"parent_run_id": root_id}).json()["runs"]
    page = pages(srv.url).open(keys["operator"], f"#/runs/{root_id}")
    nodes = page.locator(".graph-node")
    check(nodes).to_have_count(4)  # planner -> mid -> leaf, leaf
    check(page.locator(".graph-edge")).to_have_count(3)
    assert set(nodes.evaluate_all("els => els.map(e => e.dataset.status)")) == {"COMPLETED"}
    check(page.locator(f'.graph-node.current[data-node-id="{root_id}"]')).to_have_count(1)
    check(page.get_by_text("4 runs in this tree.")).to_be_visible()

    # From a leaf, the tree is the same (walked up to the root), with the leaf outlined.
    page.locator(f'.graph-node[data-node-id="{mid["run_id"]}"]').click()
    page.wait_for_url(re.compile(f".*#/runs/{mid['run_id']}$"))
    check(page.locator(".run-head [data-status]")).to_have_attribute("data-status", "COMPLETED")
    check(page.locator(".graph-node")).to_have_count(4)
    check(page.locator(f'.graph-node.current[data-node-id="{mid["run_id"]}"]')).to_have_count(1)
    check(page.locator('.timeline li[data-type="CHILDREN_SPAWNED"]')).to_contain_text("Started 2 sub-runs")

    go(page, f"#/graph/{root_id}")
    check(page.locator(".graph-node")).to_have_count(4)
    check(page.locator("#node-title")).to_contain_text("planner")
    node = page.locator(f'.graph-node[data-node-id="{mid["run_id"]}"]')
    node.focus()
    page.keyboard.press("Enter")  # nodes work from the keyboard
    check(page.locator("#node-title")).to_contain_text("mid")
    check(page.locator('.panel li[data-type="RUN_COMPLETED"]')).to_contain_text("mid got leaf did part B")
    shot(page, "task-graph")


# ------------------------------------------------------------------------------ a workflow graph

RELEASE_WORKFLOW = """\
name: release
description: Build, then two checks in parallel, then a cleanup that needs approval.
nodes:
  - id: build
    agent: leaf
  - id: unit_tests
    agent: leaf
    depends_on: [build]
  - id: lint
    agent: leaf
    depends_on: [build]
  - id: cleanup
    agent: janitor
    depends_on: [unit_tests, lint]
"""


@needs_chromium
def test_workflow_graph_follows_its_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pages: Callable[[str], Pages]
) -> None:
    check = expect()
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "release.yaml").write_text(RELEASE_WORKFLOW)
    monkeypatch.setenv("MAESTRO_WORKFLOWS_DIR", str(folder))
    url = f"sqlite:///{tmp_path / 'maestro.db'}"
    keys = make_keys(url)
    with LiveServer(url, registry()) as srv, api(srv, keys["operator"]) as c:
        page = pages(srv.url).open(keys["operator"], "#/catalog")
        check(page.locator('[data-workflow="release"]')).to_contain_text("build, unit_tests, lint, cleanup")
        page.get_by_label("Workflow YAML").fill(
            "name: broken\nnodes:\n  - id: a\n    agent: nobody\n    depends_on: [zz]\n"
        )
        page.get_by_role("button", name="Validate").click()
        check(page.locator("ul.problems")).to_contain_text("line 4")
        check(page.locator("ul.problems")).to_contain_text("nobody")
        page.get_by_label("Workflow YAML").fill(RELEASE_WORKFLOW)
        page.get_by_role("button", name="Validate").click()
        check(page.get_by_text("Valid: workflow release.")).to_be_visible()

        page.get_by_role("link", name="Run release").click()
        page.get_by_label("Input").fill("v1.2")
        page.get_by_role("button", name="Start run").click()
        root_id = moved_to_new_run(page, "-")
        check(page.locator("#tree-title")).to_have_text("Workflow release")
        deadline = time.monotonic() + 20
        while not c.get("/v1/approvals").json()["approvals"]:
            assert time.monotonic() < deadline, "the cleanup node never asked for approval"
            time.sleep(0.05)

        go(page, f"#/graph/{root_id}")
        nodes = page.locator(".graph-node")
        check(nodes).to_have_count(4)
        check(page.locator(".graph-edge.depends_on")).to_have_count(4)
        for node_id in ("build", "unit_tests", "lint"):
            check(page.locator(f'[data-node-id="node:{node_id}"]')).to_have_attribute("data-status", "completed")
        cleanup = page.locator('[data-node-id="node:cleanup"]')
        check(cleanup).to_have_attribute("data-status", "waiting_human")
        check(page.get_by_text("Workflow release run")).to_be_visible()
        cleanup.click()
        check(page.locator("#node-title")).to_contain_text("cleanup (janitor)")
        check(page.locator('.panel li[data-type="APPROVAL_REQUESTED"]')).to_contain_text("purge_logs")
        shot(page, "task-graph-workflow")

        [approval] = c.get("/v1/approvals").json()["approvals"]
        c.post(f"/v1/approvals/{approval['approval_id']}", json={"decision": "approve"}).raise_for_status()
        check(cleanup).to_have_attribute("data-status", "completed")  # live, through the firehose
        assert wait_status(c, root_id, {"COMPLETED"})["output"]

        go(page, f"#/runs/{root_id}")
        check(page.locator("#tree-title")).to_have_text("Workflow release")
        check(page.locator(".graph-node")).to_have_count(4)
        page.locator('[data-node-id="node:lint"]').click()  # a node opens its run
        moved_to_new_run(page, root_id)
        check(page.locator(".facts")).to_contain_text("leaf")
        check(page.locator('.graph-node.current[data-node-id="node:lint"]')).to_have_count(1)


# ------------------------------------------------------------------------------ run actions


@needs_chromium
def test_run_actions_resume_fork_restart_cancel(
    shared: tuple[LiveServer, dict[str, str]], pages: Callable[[str], Pages]
) -> None:
    check = expect()
    srv, keys = shared
    with api(srv, keys["operator"]) as c:
        body = {"agent": "calculator", "input": "What is (2 + 3) * 4?", "policy": {"max_steps": 1}}
        run_id = c.post("/v1/runs", json=body).json()["run_id"]
        wait_status(c, run_id, {"FAILED"})
        page = pages(srv.url).open(keys["operator"], f"#/runs/{run_id}")
        status = page.locator(".run-head [data-status]")
        check(status).to_have_attribute("data-status", "FAILED")
        check(page.locator('.timeline li[data-type="POLICY_VIOLATION"]')).to_contain_text("Policy violation: max_steps")

        # Resume with a higher limit: the timeline picks up again.
        page.get_by_text("Resume with new limits").click()
        page.get_by_label("Max steps").fill("10")
        page.get_by_role("button", name="Resume", exact=True).click()
        check(status).to_have_attribute("data-status", "COMPLETED")
        check(page.locator('.timeline li[data-type="RUN_RESUMED"]')).to_contain_text("Resumed by key:ui-operator")
        check(page.get_by_test_id("run-output")).to_contain_text("20")

        # Fork at the first step after the resume (so with the raised limit): a new run with that
        # history, which completes on its own.
        events = c.get(f"/v1/runs/{run_id}/events").json()["events"]
        resumed = next(e["seq"] for e in events if e["type"] == "RUN_RESUMED")
        at = next(e["seq"] for e in events if e["type"] == "STEP_COMPLETED" and e["seq"] > resumed)
        page.get_by_role("button", name=f"Fork a new run from event {at}", exact=True).click()
        fork_id = moved_to_new_run(page, run_id)
        check(page.locator('.timeline li[data-type="RUN_FORKED"]')).to_contain_text(f"at event {at} by key:ui-operator")
        check(status).to_have_attribute("data-status", "COMPLETED")

        page.get_by_role("button", name="Restart afresh").click()
        restart_id = moved_to_new_run(page, fork_id)
        assert restart_id != run_id
        assert wait_status(c, restart_id, {"COMPLETED"})["input"] == "What is (2 + 3) * 4?"

        waiting = c.post("/v1/runs", json={"agent": "janitor", "input": "to be cancelled"}).json()["run_id"]
        wait_status(c, waiting, {"WAITING_FOR_APPROVAL"})
        go(page, f"#/runs/{waiting}")
        check(status).to_have_attribute("data-status", "WAITING_FOR_APPROVAL")
        page.get_by_label("Cancel reason").fill("not today")
        page.get_by_role("button", name="Cancel run").click()
        check(status).to_have_attribute("data-status", "CANCELLED")
        check(page.locator('.timeline li[data-type="RUN_CANCELLED"]')).to_contain_text("not today")
        assert page.get_by_role("button", name="Cancel run").count() == 0


# ------------------------------------------------------------------------------ escalations


@needs_chromium
def test_escalation_answered_in_queue(shared: tuple[LiveServer, dict[str, str]], pages: Callable[[str], Pages]) -> None:
    check = expect()
    srv, keys = shared
    with api(srv, keys["operator"]) as c:
        run_id = c.post("/v1/runs", json={"agent": "flaky", "input": "try"}).json()["run_id"]
        wait_status(c, run_id, {"WAITING_FOR_HUMAN"})
        page = pages(srv.url).open(keys["operator"], "#/queue")
        card = page.locator(f'.queue-item[data-request-id]:has(a[href="#/runs/{run_id}"])')
        check(card).to_contain_text("step failed")
        check(card).to_contain_text("flaky: try")
        card.get_by_label("Answer", exact=True).fill("42, answered by a person")
        card.get_by_role("button", name="Answer").click()
        check(page.locator(f'.queue-item:has(a[href="#/runs/{run_id}"])')).to_have_count(0)
        assert wait_status(c, run_id, {"COMPLETED"})["output"] == "42, answered by a person"


@needs_chromium
def test_queue_pages_with_load_more(tmp_path: Path, pages: Callable[[str], Pages]) -> None:
    check = expect()
    url = f"sqlite:///{tmp_path / 'maestro.db'}"
    keys = make_keys(url)
    with LiveServer(url, registry()) as srv, api(srv, keys["operator"]) as c:
        run_id = c.post("/v1/runs", json={"agent": "flaky", "input": "try"}).json()["run_id"]
        wait_status(c, run_id, {"WAITING_FOR_HUMAN"})
        now = time.time()
        rows = [
            {
                "request_id": f"hum_{int(now * 1000) + i:012x}{i:012x}",
                "workspace_id": "default",
                "run_id": run_id,
                "kind": "step_failed",
                "question": f"extra question {i}",
                "detail": {},
                "options": ["retry", "answer", "abandon"],
                "status": "pending",
                "created_at": now + i,
            }
            for i in range(55)
        ]
        engine = create_engine(normalize_url(url))
        with engine.begin() as conn:
            conn.execute(insert(human_requests), rows)
        engine.dispose()
        page = pages(srv.url).open(keys["operator"], "#/queue")
        items = page.locator(".queue-item[data-request-id]")
        check(items).to_have_count(50)
        check(page.locator("#requests-title")).to_have_text("Escalations (50+)")
        check(page.locator("#queue-count")).to_have_text("56")
        page.get_by_role("button", name="Load more escalations").click()
        check(items).to_have_count(56)
        check(page.locator("#requests-title")).to_have_text("Escalations (56)")
        check(page.get_by_role("button", name="Load more escalations")).to_have_count(0)


# ------------------------------------------------------------------------------ admin, usage, catalog


@needs_chromium
def test_keys_usage_and_catalog_pages(shared: tuple[LiveServer, dict[str, str]], pages: Callable[[str], Pages]) -> None:
    check = expect()
    srv, keys = shared
    with api(srv, keys["operator"]) as c:
        run_id = c.post("/v1/runs", json={"agent": "calculator", "input": "What is (2 + 3) * 4?"}).json()["run_id"]
        wait_status(c, run_id, {"COMPLETED"})
    page = pages(srv.url).open(keys["admin"], "#/admin")

    page.get_by_label("Name").fill("ci-bot")
    page.get_by_label("Role").select_option("viewer")
    page.get_by_role("button", name="Create key").click()
    new_key = page.locator("#new-key-value").inner_text()
    assert new_key.startswith("am_")
    check(page.get_by_text("It is shown only now")).to_be_visible()
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        me = c.get("/v1/workspace", headers={"Authorization": f"Bearer {new_key}"}).json()
        assert me["caller"] == {"key_id": me["caller"]["key_id"], "key_name": "ci-bot", "role": "viewer"}
        row = page.locator("tr[data-key-id]").filter(has_text="ci-bot")
        check(row).to_contain_text("active")
        check(page.get_by_text("Chain verified")).to_be_visible()
        shot(page, "keys-and-audit")
        row.get_by_role("button", name="Revoke", exact=True).click()
        row.get_by_role("button", name="Confirm: revoke ci-bot").click()
        check(row).to_contain_text("revoked")
        assert c.get("/v1/workspace", headers={"Authorization": f"Bearer {new_key}"}).status_code == 401
    check(page.locator("td code").filter(has_text="key.revoke")).to_have_count(1)

    go(page, "#/usage")
    tokens = page.locator('[data-chart="tokens"]').first
    check(tokens.locator("canvas")).to_be_visible()
    check(tokens.locator("thead")).to_contain_text("calculator")
    check(page.locator(".tile").first).to_contain_text("Spend")
    check(page.get_by_text("Budget and quotas")).to_be_visible()
    check(page.get_by_role("table", name="By agent", exact=True)).to_contain_text("calculator")
    check(page.get_by_role("table", name="By user", exact=True)).to_contain_text("key:")

    go(page, "#/catalog")
    check(page.locator('tr[data-tool="purge_logs"]')).to_contain_text("DANGEROUS")
    check(page.locator('tr[data-tool="add"]')).to_contain_text("SAFE")

    page.get_by_role("button", name="Sign out").click()
    check(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


# ------------------------------------------------------------------------------ serving


def test_dashboard_is_served_with_a_strict_csp(shared: tuple[LiveServer, dict[str, str]]) -> None:
    srv, _keys = shared
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        index = c.get("/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        csp = index.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert index.headers["x-content-type-options"] == "nosniff"
        assert "set-cookie" not in index.headers
        js = c.get("/ui/js/app.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        for bad in (
            "/ui/../server/ui.py",
            "/ui/%2e%2e/server/ui.py",
            "/ui/js/../../server/app.py",
            "/ui/.hidden",
            "/ui/",
        ):
            assert c.get(bad).status_code == 404, bad
        assert "/" not in c.get("/openapi.json").json()["paths"]
    assert resolve("vendor/VERSIONS.txt") is not None and resolve("../server/ui.py") is None


def test_dashboard_never_parses_data_as_html() -> None:
    """Our JavaScript builds the page with text nodes only; no HTML sinks, no eval."""
    sinks = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|srcdoc")
    for path in sorted((UI_DIR / "js").rglob("*.js")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not sinks.search(line), f"{path.name}:{n}: {line.strip()}"


def test_vendored_libraries_match_versions_file() -> None:
    vendor = UI_DIR / "vendor"
    rows = [
        line.split() for line in (vendor / "VERSIONS.txt").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert {r[0] for r in rows} >= {"chart.js", "@dagrejs/dagre"}
    for name, version, file, sha in rows:
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), (name, version)
        assert hashlib.sha256((vendor / file).read_bytes()).hexdigest() == sha, file
    libraries = {r[2] for r in rows if r[2].endswith(".js")}
    index = (UI_DIR / "index.html").read_text()
    assert all(f"/ui/vendor/{lib}" in index for lib in libraries)
    assert all(any("LICENSE" in r[2] for r in rows if r[0] == name) for name, *_ in rows)
