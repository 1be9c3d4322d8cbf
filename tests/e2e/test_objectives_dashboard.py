"""An objective's task graph in the dashboard (playwright driving Debian's chromium): nodes coloured by
task status, a node's attempts and conversation, link mode editing a dependency (a cycle refused), and
starting an objective from the New run page."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.browser import Pages, expect, shot
from tests.e2e.test_dashboard import make_keys
from tests.e2e.test_objectives_http import objective_agents, settled
from tests.fakes.server import LiveServer


def deps(c: httpx.Client, oid: str) -> dict[str, list[str]]:
    body = c.get(f"/v1/objectives/{oid}").json()
    return {t["task_id"]: t["depends_on"] for t in body["tasks"]}


def wait_objective(c: httpx.Client, oid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = c.get(f"/v1/objectives/{oid}").json()
        if settled(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_task_graph_link_mode_edits_a_dependency(browser: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'maestro.db'}"
    keys = make_keys(url)
    with (
        LiveServer(url, objective_agents(), rate_limit_per_min=0) as srv,
        httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {keys['operator']}"}, timeout=10) as c,
    ):
        oid = c.post("/v1/objectives", json={"goal": "tidy up and add", "max_concurrent_workers": 2}).json()["run_id"]
        wait_objective(c, oid)
        pages = Pages(browser, srv.url)
        try:
            page = pages.open(keys["operator"], f"#/graph/{oid}")
            ex = expect()
            graph = page.locator(".graph-wrap svg")
            ex(graph).to_have_attribute("aria-label", "Objective: 5 tasks")

            def node(task: str) -> Any:
                return page.locator(f'.graph-node[data-node-id="task:{task}"]')

            ex(node("quick")).to_have_attribute("data-status", "complete")
            ex(node("approve")).to_have_attribute("data-status", "active")
            ex(node("sum")).to_have_attribute("data-status", "planned")
            assert "fill-green" in (node("quick").locator("rect").get_attribute("class") or "")
            assert "fill-blue" in (node("approve").locator("rect").get_attribute("class") or "")
            assert "fill-grey" in (node("sum").locator("rect").get_attribute("class") or "")

            # A node shows its attempts and its run's conversation.
            node("quick").click()
            detail = page.locator("section.panel")
            ex(detail.get_by_role("heading", name="quick")).to_be_visible()
            ex(detail.get_by_text("QA: ok")).to_be_visible()
            ex(detail.locator("ol.timeline li").first).to_be_visible()

            # Link mode: quick -> report adds "report depends on quick".
            page.get_by_test_id("link-mode").click()
            ex(page.get_by_test_id("link-mode")).to_have_attribute("aria-pressed", "true")
            node("quick").click()
            node("report").click()
            ex(page.get_by_test_id("link-status")).to_have_text("Added: report now depends on quick.")
            assert deps(c, oid)["report"] == ["sum", "quick"]
            ex(page.locator(".graph-edge.depends_on")).to_have_count(4)

            # A cycle is refused with the API's reason: report -> sum (sum already leads to report).
            wait_objective(c, oid)
            node("report").click()
            node("sum").click()
            ex(page.get_by_test_id("link-status")).to_have_text(
                "Refused: dependency cycle: sum -> report -> sum", timeout=10_000
            )
            assert deps(c, oid)["sum"] == ["approve"]

            # Clicking an existing pair removes the dependency.
            wait_objective(c, oid)
            node("quick").click()
            node("report").click()
            ex(page.get_by_test_id("link-status")).to_have_text("Removed: report no longer depends on quick.")
            assert deps(c, oid)["report"] == ["sum"]
            ex(page.locator(".graph-edge.depends_on")).to_have_count(3)
            shot(page, "objective-graph")

            # New run: an objective from the dashboard opens its run page, with the task graph.
            page.goto(srv.url + "/#/new")
            page.get_by_label("an objective").check()
            ex(page.get_by_label("Planner")).to_have_value("planner")
            ex(page.get_by_label("Strategist")).to_have_value("strategist")
            page.get_by_label("Input").fill("tidy up and add, again")
            page.get_by_label("Workers at once").fill("2")
            shot(page, "new-objective")
            page.get_by_role("button", name="Start run").click()
            page.wait_for_url(lambda u: "#/runs/run_" in u and not u.endswith(oid))
            new_id = page.url.rsplit("/", 1)[1]
            started = c.get(f"/v1/objectives/{new_id}").json()
            assert started["goal"] == "tidy up and add, again" and started["planner"] == "planner"
        finally:
            # the refused cycle is a 400 answer the browser logs; anything else is a page bug
            errors = [e for e in pages.errors if "status of 400" not in e]
            pages.close()
        assert not errors, errors
