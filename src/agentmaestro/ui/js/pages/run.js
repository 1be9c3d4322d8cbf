// Run detail: header (status, phase, policy usage against limits, cost), the live event timeline
// (SSE, resumed from the last seq after a dropped connection), the sub-run tree, and actions.

import { ApiError, followRun, get, post } from "../api.js";
import {
  TERMINAL, append, clear, fmtCost, fmtDuration, fmtInt, fmtTime, ellipsis, h, link, notFound, runLink, statusBadge, throttle,
} from "../dom.js";
import { drawGraph, legend, loadGraph } from "./graph.js";
import { limitsFieldset, readLimits } from "./newrun.js";
import { eventItem } from "./timeline.js";

export function render(main, { params }, ctx) {
  const [runId] = params;
  let alive = true;
  let run = null;
  let stream = null;
  let graph = null;
  const path = `/v1/runs/${encodeURIComponent(runId)}`;

  const header = h("section", { class: "panel", "aria-labelledby": "run-title" });
  const info = h("div");
  const actions = h("div", { class: "actions", role: "group", "aria-label": "Run actions" });
  let actionsFor = null; // the status the actions were drawn for (redrawn only when it changes)
  append(header, info, actions);
  const streamState = h("span", { class: "muted stream-state", role: "status" });
  const showSystem = h("input", { type: "checkbox", id: "show-system" });
  const timeline = h("ol", { class: "timeline hide-system", role: "log", "aria-live": "polite", "aria-label": "Event timeline" });
  const tree = h("div", { class: "graph-wrap" });
  const treeLegend = h("div");
  const treeNote = h("p", { class: "muted" });
  const treeTitle = h("h2", { id: "tree-title" }, "Sub-run tree");

  append(main,
    header,
    h("div", { class: "grid-2" },
      h("section", { class: "panel", "aria-labelledby": "timeline-title" },
        h("div", { class: "row" },
          h("h2", { id: "timeline-title" }, "Timeline"),
          streamState,
          h("span", { class: "row" }, showSystem, h("label", { for: "show-system" }, "Show system events"))),
        timeline),
      h("section", { class: "panel", "aria-labelledby": "tree-title" },
        treeTitle,
        treeLegend, tree, treeNote,
        h("p", null, link(`#/graph/${encodeURIComponent(runId)}`, "Open in the task graph")))),
  );
  showSystem.addEventListener("change", () => timeline.classList.toggle("hide-system", !showSystem.checked));

  // ----------------------------------------------------------------------------- header

  function meter(label, used, limit, format = fmtInt) {
    const text = limit === null || limit === undefined ? `${format(used)} (no limit)` : `${format(used)} / ${format(limit)}`;
    const id = `m-${label.replace(/\W+/g, "-").toLowerCase()}`;
    return h("div", { class: "meter-box" },
      h("label", { id }, label),
      h("div", { class: "value" }, text),
      limit ? h("meter", { min: "0", max: String(limit), value: String(Math.min(used, limit)), low: String(limit * 0.7),
        high: String(limit * 0.9), optimum: "0", "aria-labelledby": id }) : null);
  }

  function facts(pairs) {
    return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([k, v]) => h("div", null, h("dt", null, k), h("dd", null, v))));
  }

  function drawHeader() {
    document.title = `Run ${run.run_id} · AgentMaestro`;
    const p = run.policy || {};
    const elapsed = ((run.finished_at || Date.now() / 1000) - run.created_at);
    if (ctx.can("operator") && actionsFor !== run.status) {
      actionsFor = run.status;
      addActions(clear(actions));
    }
    append(clear(info),
      h("div", { class: "run-head" },
        h("h1", { id: "run-title" }, "Run ", h("span", { class: "mono" }, run.run_id)),
        statusBadge(run.status),
        h("span", { class: "muted" }, `phase ${run.phase}`)),
      facts([
        run.kind === "objective" ? ["Kind", "objective (its goal is the task)"]
          : [run.kind === "workflow" ? "Workflow" : "Agent", ellipsis(run.agent)],
        run.parent_run_id ? ["Parent run", runLink(run.parent_run_id)] : null,
        ["Created", fmtTime(run.created_at)],
        run.finished_at ? ["Took", fmtDuration(run.finished_at - run.created_at)] : null,
        ["Model calls", fmtInt(run.model_calls)],
        ["Tokens in / out", `${fmtInt(run.input_tokens)} / ${fmtInt(run.output_tokens)}`],
      ]),
      h("div", { class: "meters", role: "group", "aria-label": "Policy usage against limits" },
        meter("Steps", run.steps, p.max_steps),
        meter("Tokens", run.tokens, p.max_tokens),
        meter("Tool calls", run.tool_calls, p.max_tool_calls),
        meter("Cost", run.cost_usd, p.max_cost_usd, fmtCost),
        meter("Wall time (s)", Math.round(elapsed), p.timeout_s)),
      run.status === "WAITING_FOR_APPROVAL" || run.status === "WAITING_FOR_HUMAN"
        ? h("p", { class: "notice" }, "This run is waiting for a person. ", link("#/queue", "Open the human queue"))
        : null,
      run.output !== null ? h("div", { class: "output-block" }, h("h2", null, "Output"), h("div", { class: "output-box panel", "data-testid": "run-output" }, run.output)) : null,
      run.error ? h("div", { class: "output-block" }, h("h2", null, "Error"), h("div", { class: "output-box panel error-text" }, run.error)) : null,
    );
  }

  function addActions(actions) {
    if (!TERMINAL.has(run.status)) {
      const reason = h("input", { type: "text", id: "cancel-reason", name: "cancel-reason", placeholder: "why (optional)" });
      append(actions,
        h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); act("cancel", { reason: reason.value.trim() || "cancelled from the dashboard" }); } },
          h("label", { for: "cancel-reason", class: "visually-hidden" }, "Cancel reason"),
          reason,
          h("button", { type: "submit", class: "danger" }, "Cancel run")));
    }
    if (run.status === "FAILED" || run.status === "CANCELLED") {
      const limits = limitsFieldset("Raise limits for the resumed run (optional)");
      const form = h("form", { onsubmit: (e) => {
        e.preventDefault();
        const policy = readLimits(limits);
        if (policy === null) return;
        act("resume", Object.keys(policy).length ? { policy } : {});
      } }, h("details", null, h("summary", null, "Resume with new limits"), limits), h("button", { type: "submit" }, "Resume"));
      append(actions, form);
    }
    append(actions, h("button", { type: "button", class: "secondary", onclick: () => act("restart") }, "Restart afresh"));
  }

  async function act(verb, body) {
    try {
      const out = await post(`${path}/${verb}`, body);
      if (verb === "restart") {
        ctx.toast(`Restarted as ${out.run_id}`);
        ctx.navigate(`#/runs/${encodeURIComponent(out.run_id)}`);
        return;
      }
      ctx.announce(verb === "cancel" ? "Cancel requested" : "Run resumed");
      ctx.toast(verb === "cancel" ? "Cancel requested" : "Run resumed");
      await refresh();
      if (verb === "resume") startStream();
    } catch (err) {
      ctx.fail(err, `Cannot ${verb} the run`);
    }
  }

  async function fork(seq) {
    try {
      const out = await post(`${path}/fork`, { at_seq: seq });
      ctx.toast(`Forked at event ${seq} as ${out.run_id}`);
      ctx.navigate(`#/runs/${encodeURIComponent(out.run_id)}`);
    } catch (err) {
      ctx.fail(err, "Cannot fork");
    }
  }

  async function refresh() {
    try {
      const fresh = await get(path);
      if (!alive) return;
      run = fresh;
      drawHeader();
      const node = graph && graph.nodes.find((n) => n.runId === runId);
      if (node && node.run && node.run.status !== run.status) loadTreeSoon();
    } catch (err) {
      if (!alive) return;
      if (!run && err instanceof ApiError && err.status === 404) {
        alive = false;
        notFound(main, "Run", runId, "It may have been mistyped, or belong to another workspace than this key's.");
        return;
      }
      ctx.fail(err, "Cannot load the run");
    }
  }
  const refreshSoon = throttle(refresh, 1000);

  // ----------------------------------------------------------------------------- sub-run tree

  async function loadTree() {
    try {
      graph = await loadGraph(runId);
      if (!alive) return;
      treeTitle.textContent = graph.kind === "workflow" ? `Workflow ${graph.name}` : graph.kind === "objective" ? "Objective tasks" : "Sub-run tree";
      clear(treeLegend).appendChild(legend(graph.nodes));
      drawGraph(tree, graph, {
        current: runId,
        onSelect: (n) => {
          if (n.href && n.runId !== runId) ctx.navigate(n.href);
          else if (!n.runId) ctx.announce(`${n.label} has not started`);
        },
      });
      if (graph.kind === "workflow" || graph.kind === "objective") treeNote.textContent = `${graph.nodes.length} ${graph.kind === "objective" ? "tasks" : "nodes"}; dashed arrows are dependencies.`;
      else treeNote.textContent = graph.nodes.length > 1 ? `${graph.nodes.length} runs in this tree.` : "This run has no sub-runs.";
    } catch (err) {
      if (alive) ctx.fail(err, "Cannot load the sub-run tree");
    }
  }
  const loadTreeSoon = throttle(loadTree, 2000, 300);

  // ----------------------------------------------------------------------------- timeline

  let typing = null;
  let typingText = null;
  function dropTyping() {
    if (typing) typing.remove();
    typing = null;
  }

  function startStream() {
    const after = stream ? stream.lastSeq : 0;
    if (stream) stream.close();
    stream = followRun(runId, {
      after,
      onDelta: (d) => {
        // The model's answer as it streams in: one "typing" bubble, replaced by the event when it lands.
        if (!typing) {
          typingText = h("div", { class: "text" });
          typing = h("li", { class: "ev assistant streaming", "aria-live": "polite" },
            h("div", { class: "ev-meta" }, h("span", null, "streaming…")),
            h("div", { class: "bubble" }, h("div", { class: "who" }, "Model · answering"), typingText));
          timeline.appendChild(typing);
        }
        typingText.textContent += d.text; // text, never HTML
      },
      onEvent: (ev) => {
        dropTyping();
        const canFork = ctx.can("operator");
        timeline.appendChild(eventItem(ev, { fork: canFork ? fork : undefined, runKind: run.kind }));
        refreshSoon();
        if (ev.type === "CHILDREN_SPAWNED" || ev.type === "CHILDREN_FINISHED") loadTreeSoon();
      },
      onState: (state, detail) => {
        const text = {
          connecting: "Connecting…",
          live: "● Live",
          reconnecting: "Connection lost; reconnecting…",
          ended: `Finished (${detail && detail.status})`,
          error: `Stream error: ${detail}`,
        }[state];
        streamState.textContent = text || state;
        streamState.dataset.state = state;
        if (state === "ended") {
          dropTyping();
          refresh();
        }
      },
    });
  }

  const onFirehose = (e) => {
    const ev = e.detail;
    if (graph && ev.run_id !== runId && (ev.run_id === graph.rootId || graph.nodes.some((n) => n.runId === ev.run_id))) loadTreeSoon();
    // A run resumed elsewhere (CLI, another tab): follow it again.
    if (ev.run_id === runId && ev.type === "RUN_RESUMED" && streamState.dataset.state === "ended") startStream();
  };
  ctx.bus.addEventListener("event", onFirehose);

  (async () => {
    await refresh();
    if (!alive || !run) return;
    startStream();
    loadTree();
  })();

  // For the browser tests: drop the event stream as a network failure would.
  window.__maestro = { ...(window.__maestro || {}), dropRunStream: () => stream && stream.drop() };

  return () => {
    alive = false;
    if (stream) stream.close();
    refreshSoon.cancel();
    loadTreeSoon.cancel();
    ctx.bus.removeEventListener("event", onFirehose);
  };
}
