// Task graph: a DAG laid out by dagre and drawn as SVG, nodes coloured by status.
//
// A graph comes from a *source*: {load(root run) -> {nodes, edges}}. Two exist:
// - "workflow": a workflow run's nodes (from the workflow's definition, GET /v1/workflows/{name})
//   with their dependencies as dashed arrows, each node's status folded from the run's events (the
//   same rules as core/events.py apply_workflow) and refined by its child run's status;
// - "objective": an objective run's tasks (GET /v1/objectives/{id}: folded from its events by the
//   server with core/tasks.py), coloured by task status, dependencies as dashed arrows;
// - "runs": the sub-agent run tree (runs started through the `delegate` tool have a parent_run_id).
// `loadGraph(runId)` walks up to the run's root and picks the source that fits it.
// On an objective's graph, *link mode* adds or removes a dependency by clicking two nodes (through
// POST /v1/objectives/{id}/tasks/{task}/dependencies, which refuses cycles and started tasks).

import { ApiError, api, get } from "../api.js";
import {
  STATUS_COLOUR, TERMINAL, append, clear, field, fmtCost, fmtInt, h, kv, link, notFound, runHref, runLink, shorten, statusBadge, svg,
  throttle,
} from "../dom.js";
import { eventItem } from "./timeline.js";

const MAX_NODES = 300;

/** Graph sources by kind. */
export const SOURCES = {
  runs: {
    label: "Sub-agent runs",
    /** The tree under `root`, breadth first. */
    async load(root) {
      const nodes = [runNode(root)];
      const edges = [];
      let frontier = [root.run_id];
      let truncated = false;
      while (frontier.length && !truncated) {
        const next = [];
        for (const parent of frontier) {
          let cursor;
          do {
            const page = await get("/v1/runs", { parent_run_id: parent, limit: 500, cursor });
            for (const child of page.runs) {
              if (nodes.length >= MAX_NODES) {
                truncated = true;
                break;
              }
              nodes.push(runNode(child));
              edges.push({ from: parent, to: child.run_id, kind: "spawned" });
              next.push(child.run_id);
            }
            cursor = truncated ? null : page.next_cursor;
          } while (cursor);
        }
        frontier = next;
      }
      return { kind: "runs", rootId: root.run_id, nodes, edges, truncated };
    },
  },
  objective: {
    label: "Objective",
    /** The objective's tasks and their dependencies. */
    async load(root) {
      const obj = await get(`/v1/objectives/${encodeURIComponent(root.run_id)}`);
      const nodes = obj.tasks.map((t) => {
        const last = t.attempts.length ? t.attempts[t.attempts.length - 1] : null;
        const runId = t.run_id || (last && last.run_id) || null;
        const attempt = t.attempts.length > 1 ? ` · attempt ${t.attempts.length}` : "";
        return {
          id: `task:${t.task_id}`,
          label: t.task_id,
          sublabel: `${t.worker} · ${t.status.replaceAll("_", " ")}${attempt}`,
          status: t.status,
          runId,
          href: runId ? runHref(runId) : null,
          objectiveTask: t,
        };
      });
      const edges = obj.tasks.flatMap((t) => t.depends_on.map((dep) => ({ from: `task:${dep}`, to: `task:${t.task_id}`, kind: "depends_on" })));
      return { kind: "objective", name: obj.goal, objective: obj, rootId: root.run_id, root, nodes, edges, truncated: false };
    },
  },
  workflow: {
    label: "Workflow",
    /** The workflow's nodes and dependencies, with each node's status. */
    async load(root, definition) {
      const events = await allEvents(root.run_id);
      const state = foldWorkflow(events);
      const children = await childRuns(root.run_id);
      const nodes = definition.nodes.map((n) => {
        const st = state[n.id] || { status: "pending" };
        const run = st.run_id ? children.get(st.run_id) : undefined;
        const status = nodeStatus(st.status, run);
        return {
          id: `node:${n.id}`,
          label: n.id,
          sublabel: `${n.agent} · ${status.replaceAll("_", " ")}${st.runs > 1 ? ` · attempt ${st.runs}` : ""}`,
          status,
          runId: st.run_id || null,
          href: st.run_id ? runHref(st.run_id) : null,
          run,
          task: { id: n.id, agent: n.agent, ...st },
        };
      });
      const edges = definition.nodes.flatMap((n) => (n.depends_on || []).map((dep) => ({ from: `node:${dep}`, to: `node:${n.id}`, kind: "depends_on" })));
      return { kind: "workflow", name: definition.name, rootId: root.run_id, root, nodes, edges, truncated: false };
    },
  },
};

/** A workflow node's status for colouring: the folded status, or what its run is waiting for. */
function nodeStatus(status, run) {
  if (status === "running" && run && (run.status === "WAITING_FOR_APPROVAL" || run.status === "WAITING_FOR_HUMAN")) return "waiting_human";
  return status;
}

async function allEvents(runId) {
  const out = [];
  let after = 0;
  for (;;) {
    const page = await get(`/v1/runs/${encodeURIComponent(runId)}/events`, { after, limit: 1000 });
    out.push(...page.events);
    if (page.events.length < 1000) return out;
    after = page.next_after;
  }
}

async function childRuns(runId) {
  const runs = new Map();
  let cursor;
  do {
    const page = await get("/v1/runs", { parent_run_id: runId, limit: 500, cursor });
    for (const r of page.runs) runs.set(r.run_id, r);
    cursor = page.next_cursor;
  } while (cursor && runs.size < MAX_NODES * 4);
  return runs;
}

/** Node states of a workflow run from its events: {id: {status, run_id, output, error, runs}}. */
export function foldWorkflow(events) {
  const nodes = {};
  for (const ev of events) {
    const p = ev.payload || {};
    if (ev.type === "CHILDREN_FINISHED") {
      for (const r of p.results || []) {
        if (!nodes[r.call_id]) continue;
        const ok = r.status === "COMPLETED";
        Object.assign(nodes[r.call_id], { status: ok ? "completed" : "failed", output: r.output, error: ok ? null : r.error || `child run ${r.status}` });
      }
      continue;
    }
    const section = p.workflow;
    if (!section || !["CHILDREN_SPAWNED", "STEP_COMPLETED", "RUN_FAILED"].includes(ev.type)) continue;
    for (const id of section.reset || []) nodes[id] = { ...(nodes[id] || {}), status: "pending" };
    for (const id of section.skipped || []) nodes[id] = { ...(nodes[id] || {}), status: "skipped" };
    if (ev.type === "CHILDREN_SPAWNED") {
      for (const c of p.children || []) {
        const prev = nodes[c.call_id] || {};
        nodes[c.call_id] = { ...prev, status: "running", run_id: c.run_id, error: null, runs: (prev.runs || 0) + 1 };
      }
    }
  }
  return nodes;
}

/** The graph `runId` belongs to: the workflow of its root run if it is one, else its sub-run tree. */
export async function loadGraph(runId) {
  let root = await get(`/v1/runs/${encodeURIComponent(runId)}`);
  const seen = new Set([root.run_id]);
  while (root.parent_run_id && !seen.has(root.parent_run_id)) {
    seen.add(root.parent_run_id);
    root = await get(`/v1/runs/${encodeURIComponent(root.parent_run_id)}`);
  }
  if (root.agent === "objective") return SOURCES.objective.load(root);
  const definition = await workflowDefinition(root);
  return definition ? SOURCES.workflow.load(root, definition) : SOURCES.runs.load(root);
}

let workflowNames = null; // {at, names: Promise<Set>} (re-read after a minute)
const definitions = new Map();

/** The definition of the workflow `run` runs, or null if it is an agent run. */
async function workflowDefinition(run) {
  if (!workflowNames || Date.now() - workflowNames.at > 60_000) {
    workflowNames = { at: Date.now(), names: get("/v1/workflows").then((list) => new Set(list.map((w) => w.name)), () => new Set()) };
  }
  if (!(await workflowNames.names).has(run.agent)) return null;
  if (!definitions.has(run.agent)) {
    definitions.set(run.agent, get(`/v1/workflows/${encodeURIComponent(run.agent)}`).then((w) => w.definition, () => null));
  }
  const definition = await definitions.get(run.agent);
  if (!definition) return null;
  // A workflow and an agent could share a name: a workflow run records workflow decisions.
  const first = await get(`/v1/runs/${encodeURIComponent(run.run_id)}/events`, { limit: 1000 });
  const spawned = first.events.filter((e) => e.type === "CHILDREN_SPAWNED");
  return spawned.length === 0 || spawned.some((e) => e.payload && e.payload.workflow) ? definition : null;
}

function runNode(run) {
  return {
    id: run.run_id,
    runId: run.run_id,
    label: run.agent,
    sublabel: `${run.run_id.slice(-8)} · ${run.status.toLowerCase().replaceAll("_", " ")}`,
    status: run.status,
    href: runHref(run.run_id),
    run,
  };
}

/** Wide enough for the node's two lines of text (12px and 11px sans-serif). */
function nodeWidth(n) {
  return Math.min(260, Math.max(140, Math.ceil(Math.max(n.label.length * 7.6, n.sublabel.length * 6.3)) + 22));
}

/** Legend of the status colours used by `nodes`. */
export function legend(nodes) {
  const statuses = [...new Set(nodes.map((n) => n.status))];
  return h("div", { class: "legend", "aria-label": "Status colours" }, statuses.map((s) => statusBadge(s)));
}

/**
 * Draw `graph` into `container`. Nodes are focusable buttons: click, Enter or Space selects.
 * Options: current (id to outline), onSelect(node).
 */
export function drawGraph(container, graph, { current, onSelect, selected } = {}) {
  clear(container);
  if (typeof dagre === "undefined") {
    container.appendChild(h("p", { class: "error-text" }, "The graph layout library did not load."));
    return;
  }
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "TB", nodesep: 24, ranksep: 42, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of graph.nodes) g.setNode(n.id, { width: nodeWidth(n), height: 46 });
  for (const e of graph.edges) g.setEdge(e.from, e.to, { kind: e.kind });
  dagre.layout(g);
  const { width, height } = g.graph();
  const root = svg("svg", {
    width: Math.max(width, 200), height: Math.max(height, 60), viewBox: `0 0 ${Math.max(width, 200)} ${Math.max(height, 60)}`,
    role: "group",
    "aria-label": graph.kind === "workflow" ? `Workflow ${graph.name}: ${graph.nodes.length} nodes`
      : graph.kind === "objective" ? `Objective: ${graph.nodes.length} tasks` : `Graph of ${graph.nodes.length} runs`,
  });
  root.appendChild(svg("defs", null, svg("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse",
  }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#7b8496" }))));
  for (const e of graph.edges) {
    const pts = g.edge(e.from, e.to).points;
    const d = pts.map((p, i) => `${i ? "L" : "M"} ${p.x.toFixed(1)} ${p.y.toFixed(1)}`).join(" ");
    root.appendChild(svg("path", { d, class: `graph-edge ${e.kind || ""}`, "marker-end": "url(#arrow)" }));
  }
  for (const n of graph.nodes) {
    const pos = g.node(n.id);
    const colour = STATUS_COLOUR[n.status] || "grey";
    const isCurrent = current !== undefined && (n.id === current || n.runId === current);
    const node = svg("g", {
      class: ["graph-node", isCurrent ? "current" : null, n.id === selected ? "selected" : null],
      transform: `translate(${pos.x - pos.width / 2}, ${pos.y - pos.height / 2})`,
      tabindex: "0", role: "button", "data-node-id": n.id, "data-run-id": n.runId || n.id, "data-status": n.status,
      "aria-label": `${n.label}, ${n.status.replaceAll("_", " ")}${isCurrent ? ", this run" : ""}`,
    },
    svg("title", null, `${n.label} · ${n.sublabel} · ${n.id}`),
    svg("rect", { width: pos.width, height: pos.height, class: `fill-${colour}` }),
    svg("text", { x: "10", y: "19", "font-weight": "600" }, shorten(n.label, Math.floor((pos.width - 20) / 7.6))),
    svg("text", { x: "10", y: "36", class: "sub" }, shorten(n.sublabel, Math.floor((pos.width - 20) / 6.3))));
    const choose = () => onSelect && onSelect(n);
    node.addEventListener("click", choose);
    node.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        choose();
      }
    });
    root.appendChild(node);
  }
  container.appendChild(root);
  // A graph wider than its box is scaled down to fit (CSS), but not to illegible text: past that it scrolls.
  if (container.clientWidth && Math.max(width, 200) > container.clientWidth * 1.8) root.classList.add("scroll");
}

// ------------------------------------------------------------------------------- the page

export function render(main, { params }, ctx) {
  const [runId] = params;
  if (!runId) return renderPicker(main, ctx);
  let alive = true;
  let graph = null;
  let selected = null;
  let linking = false; // link mode (objectives): the first click picks the dependency, the second the dependant
  let linkFrom = null;

  const wrap = h("div", { class: "graph-wrap" });
  const linkStatus = h("p", { class: "muted", role: "status", "aria-live": "polite", "data-testid": "link-status" });
  const linkButton = h("button", {
    type: "button", "aria-pressed": "false", hidden: true, "data-testid": "link-mode",
    onclick: () => setLinking(!linking),
  }, "Link mode: add or remove a dependency");
  function setLinking(on) {
    linking = on;
    linkFrom = null;
    linkButton.setAttribute("aria-pressed", String(on));
    linkButton.classList.toggle("active", on);
    linkStatus.textContent = on
      ? "Link mode: click the task to depend on, then the task that depends on it (an existing dependency is removed)."
      : "";
    draw();
  }
  const legendBox = h("div");
  const about = h("p", { class: "muted" });
  const detail = h("section", { class: "panel", "aria-labelledby": "node-title" });
  const note = h("p", { class: "muted" });
  append(main,
    h("h1", null, "Task graph"),
    about,
    h("div", { class: "grid-2" },
      h("section", { "aria-label": "Graph" }, h("div", { class: "toolbar" }, linkButton), linkStatus, legendBox, wrap, note),
      detail));

  async function linkClick(node) {
    if (!linkFrom) {
      linkFrom = node;
      selected = node.id;
      draw();
      linkStatus.textContent = `Dependency: ${node.label}. Now click the task that depends on it.`;
      return;
    }
    const from = linkFrom.objectiveTask.task_id;
    const to = node.objectiveTask.task_id;
    linkFrom = null;
    if (from === to) {
      linkStatus.textContent = "Pick two different tasks.";
      return;
    }
    const exists = node.objectiveTask.depends_on.includes(from);
    const body = exists ? { remove: [from] } : { add: [from] };
    const path = `/v1/objectives/${encodeURIComponent(graph.rootId)}/tasks/${encodeURIComponent(to)}/dependencies`;
    try {
      await api("POST", path, body);
      linkStatus.textContent = exists ? `Removed: ${to} no longer depends on ${from}.` : `Added: ${to} now depends on ${from}.`;
      ctx.announce(linkStatus.textContent);
    } catch (err) {
      linkStatus.textContent = `Refused: ${err.message}`;
    }
    await load();
  }

  async function showObjectiveTask(node) {
    const t = node.objectiveTask;
    clear(detail);
    append(detail,
      h("h2", { id: "node-title" }, t.task_id, " ", statusBadge(t.status)),
      kv([
        ["Title", t.title],
        ["Worker", t.worker],
        ["Depends on", t.depends_on.join(", ") || "nothing"],
        ["Attempts", String(t.attempts.length)],
        t.reason ? ["Reason", t.reason] : null,
        t.escalation ? ["Waiting for", `a person (${t.escalation.kind}): see Queue`] : null,
      ]),
      h("h3", null, "Instructions"), h("p", { class: "output-box" }, t.instructions),
      t.acceptance.length ? [h("h3", null, "Acceptance criteria"), h("ul", null, t.acceptance.map((a) => h("li", null, a)))] : null,
      t.notes.length ? [h("h3", null, "From people"), h("ul", null, t.notes.map((a) => h("li", null, a)))] : null,
      h("h3", null, "Attempts"),
      t.attempts.length
        ? h("ol", { class: "attempts", "aria-label": `Attempts of ${t.task_id}` }, t.attempts.map((a) => h("li", null,
          runLink(a.run_id), " ", statusBadge(a.status),
          a.output ? h("p", { class: "output-box" }, String(a.output).slice(0, 2000)) : null,
          a.feedback ? h("p", null, h("strong", null, "QA: "), a.feedback) : null,
          a.error ? h("p", { class: "error-text" }, a.error) : null)))
        : h("p", { class: "muted" }, "Not started."));
    if (!node.runId) return;
    append(detail, h("h3", null, "Conversation"), h("p", null, link(runHref(node.runId), "Open the run page")));
    const list = h("ol", { class: "timeline hide-system", "aria-label": `Events of ${node.runId}` });
    detail.appendChild(list);
    try {
      const page = await get(`/v1/runs/${encodeURIComponent(node.runId)}/events`, { limit: 1000 });
      if (!alive || selected !== node.id) return;
      for (const ev of page.events) list.appendChild(eventItem(ev));
    } catch (err) {
      ctx.fail(err, "Cannot load the run's events");
    }
  }

  async function showNode(node) {
    if (linking && node.objectiveTask) return linkClick(node);
    selected = node.id;
    draw();
    if (node.objectiveTask) return showObjectiveTask(node);
    const task = node.task;
    clear(detail);
    if (!node.runId) {
      append(detail,
        h("h2", { id: "node-title" }, task ? task.id : node.label, " ", statusBadge(node.status)),
        kv([["Agent", task ? task.agent : ""], ["Run", "not started"]]),
        h("p", { class: "muted" }, node.status === "skipped" ? "Skipped: its condition was false or a dependency failed." : "Waits for its dependencies."));
      return;
    }
    let run = node.run;
    try {
      run = run || (await get(`/v1/runs/${encodeURIComponent(node.runId)}`));
    } catch (err) {
      ctx.fail(err, "Cannot load the run");
      return;
    }
    if (!alive || selected !== node.id) return;
    append(detail,
      h("h2", { id: "node-title" }, task ? `${task.id} (${run.agent})` : run.agent, " ", statusBadge(node.status)),
      kv([
        ["Run", runLink(run.run_id)],
        ["Run status", run.status],
        task && task.runs > 1 ? ["Attempts", String(task.runs)] : null,
        ["Steps", fmtInt(run.steps)],
        ["Tokens", fmtInt(run.tokens)],
        ["Cost", fmtCost(run.cost_usd)],
      ]),
      h("p", null, link(runHref(run.run_id), "Open the run page")),
      h("h3", null, "Conversation"),
    );
    const list = h("ol", { class: "timeline hide-system", "aria-label": `Events of ${run.run_id}` });
    detail.appendChild(list);
    try {
      const page = await get(`/v1/runs/${encodeURIComponent(run.run_id)}/events`, { limit: 1000 });
      if (!alive || selected !== node.id) return;
      for (const ev of page.events) list.appendChild(eventItem(ev));
    } catch (err) {
      ctx.fail(err, "Cannot load the run's events");
    }
  }

  function draw() {
    if (!graph) return;
    drawGraph(wrap, graph, { current: runId, selected, onSelect: showNode });
    clear(legendBox).appendChild(legend(graph.nodes));
    // Dependencies change only while the objective runs (the API refuses started tasks anyway).
    linkButton.hidden = graph.kind !== "objective" || TERMINAL.has(graph.root.status);
    if (linkButton.hidden && linking) setLinking(false);
    if (graph.kind === "objective") {
      note.textContent = `${graph.nodes.length} tasks; dashed arrows are dependencies.`;
    } else if (graph.kind === "workflow") {
      note.textContent = `${graph.nodes.length} nodes.`;
    } else {
      note.textContent = graph.truncated ? `Only the first ${MAX_NODES} runs are shown.` : `${graph.nodes.length} runs.`;
    }
  }

  async function load() {
    try {
      graph = await loadGraph(runId);
      if (!alive) return;
      append(clear(about), graph.kind === "objective"
        ? ["Objective ", runLink(graph.rootId), ` (${graph.objective.status.toLowerCase().replaceAll("_", " ")}): `, graph.objective.goal,
          ". Each task runs as child runs (worker, then QA review); dashed arrows are dependencies. Select a task for its attempts and conversation."]
        : graph.kind === "workflow"
        ? ["Workflow ", h("code", null, graph.name), " run ", runLink(graph.rootId),
          ": each node is a task run as a child run; dashed arrows are dependencies. Select a node for its conversation."]
        : ["The sub-agent run tree of ", runLink(graph.rootId),
          ": each node is a run, each arrow a delegation. Select a node for its conversation."]);
      const node = graph.nodes.find((n) => n.id === selected) || graph.nodes.find((n) => n.runId === runId) || graph.nodes[0];
      if (node && node.objectiveTask && selected === node.id && !linking) showObjectiveTask(node);
      if (node && !detail.firstChild) showNode(node);
      else draw();
    } catch (err) {
      if (!alive) return;
      if (!graph && err instanceof ApiError && err.status === 404) {
        alive = false;
        notFound(main, "Run", runId, "A graph is drawn from any run of it: a workflow run, an objective or an agent run.");
        return;
      }
      ctx.fail(err, "Cannot load the graph");
    }
  }

  const reload = throttle(load, 2000, 400);
  const onEvent = (e) => {
    const id = e.detail.run_id;
    if (graph && (id === graph.rootId || graph.nodes.some((n) => n.runId === id))) reload();
    else if (graph && graph.kind === "objective" && e.detail.parent_run_id === graph.rootId) reload();
  };
  ctx.bus.addEventListener("event", onEvent);
  load();
  return () => {
    alive = false;
    reload.cancel();
    ctx.bus.removeEventListener("event", onEvent);
  };
}

function renderPicker(main, ctx) {
  const input = h("input", { type: "text", name: "run", placeholder: "run_...", class: "mono", size: "34" });
  const list = h("ul");
  append(main,
    h("h1", null, "Task graph"),
    h("p", { class: "muted" },
      "Shows a workflow run's or an objective's tasks and dependencies, or an agent run's sub-agent tree, as a graph."),
    h("form", {
      class: "toolbar", onsubmit: (e) => {
        e.preventDefault();
        if (input.value.trim()) ctx.navigate(`#/graph/${encodeURIComponent(input.value.trim())}`);
      },
    }, field("Run id", input), h("button", { type: "submit" }, "Show graph")),
    h("h2", null, "Recent top-level runs"), list);
  get("/v1/runs", { top_level: "true", limit: 25 }).then((page) => {
    const roots = page.runs;
    for (const r of roots) {
      list.appendChild(h("li", null, link(`#/graph/${encodeURIComponent(r.run_id)}`, r.run_id, { class: "mono" }),
        " ", r.agent, " ", statusBadge(r.status)));
    }
    if (!roots.length) list.appendChild(h("li", { class: "muted" }, "No runs yet."));
  }).catch((err) => ctx.fail(err, "Cannot list runs"));
  return null;
}

