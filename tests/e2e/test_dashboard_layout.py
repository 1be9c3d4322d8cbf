"""The dashboard with the bundled examples' content (long model strings and paths, workflows, an objective that
writes files in a git repository), in a real browser: every page fits 1280 and 1440 px wide, the runs list is a
tree of top-level runs, orchestration steps read as cards, and a missing run has a proper page.

One server and one browser for the module: the examples run once, then every test reads the same state.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentmaestro.agents import Agent, AgentRegistry, load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from tests.e2e.browser import Pages, expect, go, shot
from tests.e2e.test_dashboard import api, make_keys, wait_status
from tests.fakes.server import LiveServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WORKFLOWS = {
    "research-summary": "agent orchestration",
    "design-review": "a caching layer",
    "refine-paragraph": "write about queues",
    "support-routing": "I was charged twice on my invoice",
}
AGENTS = {"openai-calculator": "What is (12 + 30) * 2?", "anthropic-researcher": "What do the notes say about leases?"}
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "WAITING_FOR_APPROVAL", "WAITING_FOR_HUMAN"}
NOT_FOUND_LOGS = "status of 404"  # the browser logs the API's 404 answer behind a not-found page
Examples = tuple[LiveServer, dict[str, str], dict[str, str]]
"""The server, its keys by role, and the example runs' ids by workflow, agent or role."""


def examples_registry() -> AgentRegistry:
    """The agents of examples/workflows and examples/objectives, and the two offline provider examples."""
    registry = load_agents_dir(EXAMPLES / "workflows" / "agents")
    objectives = load_agents_dir(EXAMPLES / "objectives" / "agents")
    for name in objectives.names():
        registry.register(objectives.get(name))
    for path in ("openai_calculator/agent.offline.yaml", "anthropic_researcher/agent.offline.yaml"):
        registry.register(Agent.from_yaml(EXAMPLES / path))
    registry.register(load_agents_dir(builtin_agents_dir()).get("janitor"))  # for an item in the human queue
    return registry


def git_repo(path: Path) -> Path:
    path.mkdir()
    for args in (
        ["init", "-q", "-b", "main"],
        ["config", "user.email", "t@example.com"],
        ["config", "user.name", "t"],
        ["commit", "-q", "--allow-empty", "-m", "init"],
    ):
        subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Examples]:
    """A server that has run every bundled workflow, two agents and the objective example: (server, keys, run ids)."""
    tmp = tmp_path_factory.mktemp("examples")
    git_repo(tmp / "greeter")
    url = f"sqlite:///{tmp / 'maestro.db'}"
    keys = make_keys(url)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAESTRO_WORKFLOWS_DIR", str(EXAMPLES / "workflows"))
        mp.setenv("MAESTRO_OBJECTIVE_REPOS", str(tmp))
        with LiveServer(url, examples_registry()) as srv, api(srv, keys["operator"]) as c:
            ids: dict[str, str] = {}
            for name, text in WORKFLOWS.items():
                ids[name] = c.post(f"/v1/workflows/{name}/runs", json={"input": text}).json()["run_id"]
            for name, text in AGENTS.items():
                ids[name] = c.post("/v1/runs", json={"agent": name, "input": text}).json()["run_id"]
            objective = c.post("/v1/objectives", json={"goal": "Build a greeting CLI", "repo": "greeter"})
            assert objective.status_code == 201, objective.text
            ids["objective"] = objective.json()["run_id"]
            for run_id in ids.values():
                assert wait_status(c, run_id, FINAL, timeout=60)["status"] == "COMPLETED"
            ids["janitor"] = c.post("/v1/runs", json={"agent": "janitor", "input": "Tidy the disk, please."}).json()[
                "run_id"
            ]
            assert wait_status(c, ids["janitor"], FINAL)["status"] == "WAITING_FOR_APPROVAL"
            tasks = c.get("/v1/runs", params={"parent_run_id": ids["objective"]}).json()["runs"]
            ids["library_dev"] = next(r["run_id"] for r in tasks if r["agent"] == "library_dev")
            yield srv, keys, ids


def check_errors(pages: Pages) -> None:
    errors = [e for e in pages.errors if NOT_FOUND_LOGS not in e]
    assert not errors, errors


def wait_quiet(page: Any) -> None:
    """Until the page's requests are answered and its layout settled (charts drawn, graphs laid out)."""
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(200)


def test_every_page_fits_1280_and_1440_px(browser: Any, examples: Examples) -> None:
    srv, keys, ids = examples
    ex = expect()
    ready = {
        "#/runs": "tr[data-run-id]",
        "#/queue": ".queue-item",
        "#/new": "select",
        "#/graph": "main li a",
        "#/usage": '[data-chart="tokens"] canvas',
        "#/catalog": "tr[data-tool]",
        "#/webhooks": "h1",
        "#/admin": "tr[data-key-id]",
        f"#/runs/{ids['design-review']}": ".graph-node",
        f"#/graph/{ids['design-review']}": "#node-title",
        f"#/runs/{ids['objective']}": ".graph-node",
        f"#/graph/{ids['objective']}": "#node-title",
        f"#/runs/{ids['library_dev']}": '.timeline li[data-type="RUN_COMPLETED"]',
        f"#/runs/{ids['openai-calculator']}": '.timeline li[data-type="RUN_COMPLETED"]',
        "#/runs/run_000000000000000000000000": '[data-testid="not-found"]',
        "#/nowhere": '[data-testid="not-found"]',
    }
    pages = Pages(browser, srv.url)
    try:
        page = pages.open(keys["admin"])
        for width in (1280, 1440):
            page.set_viewport_size({"width": width, "height": 800})
            for route, selector in ready.items():
                go(page, route)
                ex(page.locator(selector).first).to_be_visible()
                wait_quiet(page)
                scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
                assert scroll <= inner, f"{route} is {scroll} px wide at {width} px"
        page.set_viewport_size({"width": 1280, "height": 800})
        go(page, "#/usage")
        by_model = page.get_by_role("table", name="By model", exact=True)
        model = by_model.locator("tbody th .ellipsis").filter(has_text="analyst.yaml")
        assert (model.get_attribute("title") or "").startswith(f"scripted:{EXAMPLES}/")  # in full on hover
        ex(model).to_have_text("scripted:…/scripts/analyst.yaml")
        wait_quiet(page)
        shot(page, "costs-and-usage")
        go(page, "#/catalog")
        ex(page.locator('[data-agent="library_dev"]')).to_contain_text("scripted:…/scripts/library_dev.yaml")
        wait_quiet(page)
        shot(page, "agents-and-tools")
    finally:
        pages.close()
    check_errors(pages)


def test_runs_list_is_a_tree_of_top_level_runs(browser: Any, examples: Examples) -> None:
    srv, keys, ids = examples
    ex = expect()
    with api(srv, keys["viewer"]) as c:
        everything = c.get("/v1/runs", params={"limit": 500}).json()["runs"]
    pages = Pages(browser, srv.url)
    try:
        page = pages.open(keys["viewer"])
        rows = page.locator("tbody tr[data-run-id]")
        ex(rows).to_have_count(len(ids) - 1)  # the library_dev task run is a sub-run
        workflow = page.locator(f'tr[data-run-id="{ids["design-review"]}"]')
        ex(workflow).to_contain_text("5/5 sub-runs")
        assert "/50" not in workflow.inner_text()
        ex(page.locator(f'tr[data-run-id="{ids["openai-calculator"]}"]')).to_contain_text("5/12 steps")

        objective = page.locator(f'tr[data-run-id="{ids["objective"]}"]')
        objective.get_by_role("button").click()
        ex(objective.get_by_role("button")).to_have_attribute("aria-expanded", "true")
        child = page.locator(f'tr[data-run-id="{ids["library_dev"]}"]')
        ex(child).to_have_attribute("data-depth", "1")
        ex(child.get_by_role("link", name=f"run {ids['objective']}")).to_be_visible()  # the parent column
        children = [r for r in everything if r["parent_run_id"] == ids["objective"]]
        ex(rows).to_have_count(len(ids) - 1 + len(children))
        shot(page, "runs")

        page.get_by_label("Kind").select_option("workflow")
        ex(rows).to_have_count(len(WORKFLOWS))
        page.get_by_label("Kind").select_option("")
        page.get_by_label("Show", exact=True).select_option("all")
        ex(rows).to_have_count(len(everything))
        ex(page.locator("tbody button.expand")).to_have_count(0)
        page.get_by_label("Agent", exact=True).select_option("strategist")
        ex(rows).to_have_count(len([r for r in everything if r["agent"] == "strategist"]))
    finally:
        pages.close()
    check_errors(pages)


def test_orchestration_pages_read_as_cards(browser: Any, examples: Examples) -> None:
    srv, keys, ids = examples
    ex = expect()
    pages = Pages(browser, srv.url)
    try:
        page = pages.open(keys["operator"], f"#/runs/{ids['objective']}")
        ex(page.locator(".run-head [data-status]")).to_have_attribute("data-status", "COMPLETED")
        timeline = page.locator(".timeline")
        ex(timeline.locator('li[data-type="RUN_COMPLETED"]')).to_have_count(1)
        ex(timeline).to_contain_text("Planned 3 tasks: library (library_dev), cli (cli_dev, after library)")
        ex(timeline).to_contain_text("Task library accepted")
        assert '"op"' not in timeline.inner_text() and '"kind": "MESSAGE"' not in timeline.inner_text()
        spawned = timeline.locator('li[data-type="CHILDREN_SPAWNED"]').first
        ex(spawned).to_be_hidden()  # the sub-run bookkeeping is under "system events"
        page.get_by_label("Show system events").check()
        ex(spawned).to_be_visible()
        page.get_by_label("Show system events").uncheck()
        shot(page, "run-objective")

        go(page, f"#/graph/{ids['objective']}")
        ex(page.locator(".graph-node")).to_have_count(3)
        ex(page.get_by_test_id("link-mode")).to_be_hidden()  # a completed objective's tasks cannot change

        go(page, f"#/runs/{ids['library_dev']}")
        tool = page.locator('.timeline li[data-type="STEP_COMPLETED"]').filter(has_text="Tool write_file")
        content = tool.locator("dl.args pre")
        ex(content).to_have_count(1)
        assert content.inner_text().startswith('def greet(name: str) -> str:\n    """Greet someone by name."""')

        go(page, f"#/runs/{ids['design-review']}")  # the workflow's 5 nodes fit the side panel
        ex(page.locator(".graph-node")).to_have_count(5)
        wrap = page.locator(".graph-wrap").bounding_box()
        for box in page.locator(".graph-node").evaluate_all("els => els.map(e => e.getBoundingClientRect().toJSON())"):
            assert wrap and wrap["x"] <= box["left"] and box["right"] <= wrap["x"] + wrap["width"], box
        ex(page.locator(".timeline")).to_contain_text("Workflow started security, performance, cost")

        go(page, "#/runs/run_000000000000000000000000")
        ex(page.get_by_role("heading", name="Run not found")).to_be_visible()
        ex(page.get_by_role("link", name="Back to the runs")).to_be_visible()
        go(page, "#/graph/run_000000000000000000000000")
        ex(page.get_by_role("heading", name="Run not found")).to_be_visible()
        page.wait_for_timeout(300)
        assert page.locator("#toasts .toast").count() == 0  # a page, not an error toast
    finally:
        pages.close()
    check_errors(pages)
