// Task graph: a DAG laid out by dagre and drawn as SVG, nodes coloured by status.
//
// Today the graph of a run is its sub-agent run tree (runs started through the `delegate` tool have a
// parent_run_id). A graph comes from a *source*: {load(id) -> {nodes, edges}}. Workflows will add a
// source whose nodes are tasks (statuses planned, ready, active, ... already have colours) and whose
// edges are dependencies (kind "depends_on", drawn dashed); the view does not change.

import { get } from "../api.js";
import {
  STATUS_COLOUR, append, clear, field, fmtCost, fmtInt, h, kv, link, runHref, runLink, statusBadge, svg, throttle,
} from "../dom.js";
import { eventItem } from "./timeline.js";

const MAX_NODES = 300;

/** Graph sources by kind. */
export const SOURCES = {
  runs: {
    label: "Sub-agent runs",
    /** The whole tree that `runId` belongs to: walk up to the root, then down through the children. */
    async load(runId) {
      let root = await get(`/v1/runs/${encodeURIComponent(runId)}`);
      const seen = new Set([root.run_id]);
      while (root.parent_run_id && !seen.has(root.parent_run_id)) {
        seen.add(root.parent_run_id);
        root = await get(`/v1/runs/${encodeURIComponent(root.parent_run_id)}`);
      }
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
      return { rootId: root.run_id, nodes, edges, truncated };
    },
  },
};

function runNode(run) {
  return {
    id: run.run_id,
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
    role: "group", "aria-label": `Graph of ${graph.nodes.length} runs`,
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
    const node = svg("g", {
      class: ["graph-node", n.id === current ? "current" : null, n.id === selected ? "selected" : null],
      transform: `translate(${pos.x - pos.width / 2}, ${pos.y - pos.height / 2})`,
      tabindex: "0", role: "button", "data-node-id": n.id, "data-status": n.status,
      "aria-label": `${n.label}, ${n.status}${n.id === current ? ", this run" : ""}`,
    },
    svg("title", null, `${n.label} · ${n.id} · ${n.status}`),
    svg("rect", { width: pos.width, height: pos.height, class: `fill-${colour}` }),
    svg("text", { x: "10", y: "19", "font-weight": "600" }, n.label.length > 30 ? `${n.label.slice(0, 29)}…` : n.label),
    svg("text", { x: "10", y: "36", class: "sub" }, n.sublabel));
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
}

// ------------------------------------------------------------------------------- the page

export function render(main, { params }, ctx) {
  const [runId] = params;
  if (!runId) return renderPicker(main, ctx);
  let alive = true;
  let graph = null;
  let selected = runId;

  const wrap = h("div", { class: "graph-wrap" });
  const legendBox = h("div");
  const detail = h("section", { class: "panel", "aria-labelledby": "node-title" });
  const note = h("p", { class: "muted" });
  append(main,
    h("h1", null, "Task graph"),
    h("p", { class: "muted" }, "The sub-agent run tree of ", runLink(runId),
      ": each node is a run, each arrow a delegation. Select a node for its conversation."),
    h("div", { class: "grid-2" },
      h("section", { "aria-label": "Graph" }, legendBox, wrap, note),
      detail));

  async function showNode(node) {
    selected = node.id;
    draw();
    const run = node.run;
    append(clear(detail),
      h("h2", { id: "node-title" }, run.agent, " ", statusBadge(run.status)),
      kv([
        ["Run", runLink(run.run_id)],
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
    note.textContent = graph.truncated ? `Only the first ${MAX_NODES} runs are shown.` : `${graph.nodes.length} runs.`;
  }

  async function load() {
    try {
      graph = await SOURCES.runs.load(runId);
      if (!alive) return;
      draw();
      const node = graph.nodes.find((n) => n.id === selected) || graph.nodes[0];
      if (node && !detail.firstChild) showNode(node);
    } catch (err) {
      ctx.fail(err, "Cannot load the graph");
    }
  }

  const reload = throttle(load, 2000, 400);
  const onEvent = (e) => {
    if (graph && graph.nodes.some((n) => n.id === e.detail.run_id)) reload();
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
      "Shows the sub-agent run tree of a run as a graph. Workflow task graphs will appear here once workflows exist."),
    h("form", {
      class: "toolbar", onsubmit: (e) => {
        e.preventDefault();
        if (input.value.trim()) ctx.navigate(`#/graph/${encodeURIComponent(input.value.trim())}`);
      },
    }, field("Run id", input), h("button", { type: "submit" }, "Show graph")),
    h("h2", null, "Recent top-level runs"), list);
  get("/v1/runs", { limit: 100 }).then((page) => {
    const roots = page.runs.filter((r) => !r.parent_run_id).slice(0, 25);
    for (const r of roots) {
      list.appendChild(h("li", null, link(`#/graph/${encodeURIComponent(r.run_id)}`, r.run_id, { class: "mono" }),
        " ", r.agent, " ", statusBadge(r.status)));
    }
    if (!roots.length) list.appendChild(h("li", { class: "muted" }, "No runs yet."));
  }).catch((err) => ctx.fail(err, "Cannot list runs"));
  return null;
}

