// Runs: the top-level runs (agent runs, workflows, objectives) as a tree whose rows open onto their
// sub-runs, or every run flat; status, agent, parent, progress (steps or sub-runs), tokens, cost and age; filters by
// status, agent and kind (server side), age and text (on the loaded runs); pagination; live updates
// from the workspace firehose (polling while it is down).

import { get } from "../api.js";
import {
  RUN_STATUSES, TERMINAL, append, clear, ellipsis, field, fmtAge, fmtCost, fmtInt, h, runLink, statusBadge, throttle,
} from "../dom.js";

const PAGE = 50;
const CHILDREN_PAGE = 500;
const MAX_DEPTH = 6;
const AGES = { any: null, hour: 3600, day: 86400, week: 7 * 86400 };
const KINDS = { agent: "Agent run", workflow: "Workflow", objective: "Objective", escalation: "Escalation" };
const COLUMNS = 9;

export function render(main, { query }, ctx) {
  let alive = true;
  let rows = []; // the listed runs (top-level ones unless "every run" is chosen), newest first
  let cursor = null;
  const fresh = new Set();
  const kids = new Map(); // run id -> its child runs (oldest first), once opened
  const open = new Set(); // run ids whose sub-runs are shown

  const status = h("select", { name: "status" }, h("option", { value: "" }, "Any status"),
    RUN_STATUSES.map((s) => h("option", { value: s, selected: query.get("status") === s }, s)));
  const agent = h("select", { name: "agent" }, h("option", { value: "" }, "Any"));
  const kind = h("select", { name: "kind" }, h("option", { value: "" }, "Any kind"),
    Object.entries(KINDS).map(([k, label]) => h("option", { value: k, selected: query.get("kind") === k }, label)));
  const scope = h("select", { name: "scope" },
    h("option", { value: "top" }, "Top-level runs"),
    h("option", { value: "all", selected: query.get("scope") === "all" }, "All runs, flat"));
  const age = h("select", { name: "age" },
    h("option", { value: "any" }, "Any time"),
    h("option", { value: "hour" }, "Last hour"),
    h("option", { value: "day" }, "Last 24 hours"),
    h("option", { value: "week" }, "Last 7 days"));
  const search = h("input", { type: "search", name: "q", placeholder: "run id, input or output text" });
  const summary = h("p", { class: "muted", role: "status", "aria-live": "polite" });
  const tbody = h("tbody");
  const more = h("button", { type: "button", class: "secondary", hidden: true, onclick: () => load(false) }, "Load older runs");

  append(main,
    h("h1", null, "Runs"),
    h("form", { role: "search", class: "toolbar", "aria-label": "Filter runs", onsubmit: (e) => e.preventDefault() },
      field("Show", scope),
      field("Status", status),
      field("Agent", agent),
      field("Kind", kind),
      field("Created", age, "filters the loaded runs"),
      field("Search", search, "filters the loaded runs")),
    h("div", { class: "table-scroll" }, h("table", { class: "runs" },
      h("caption", { class: "visually-hidden" }, "Runs, newest first; a run's sub-runs open under it"),
      h("thead", null, h("tr", null,
        h("th", { scope: "col" }, "Run"),
        h("th", { scope: "col" }, "Agent"),
        h("th", { scope: "col" }, "Status"),
        h("th", { scope: "col" }, "Parent"),
        h("th", { scope: "col" }, "Progress"),
        h("th", { scope: "col", class: "num" }, "Tokens"),
        h("th", { scope: "col", class: "num" }, "Cost"),
        h("th", { scope: "col" }, "Age"),
        h("th", { scope: "col" }, "Input"))),
      tbody)),
    h("div", { class: "row" }, more, summary),
  );

  Promise.all([get("/v1/agents"), get("/v1/workflows").catch(() => [])]).then(([agents, workflows]) => {
    const wanted = query.get("agent");
    const option = (name) => h("option", { value: name, selected: wanted === name }, name);
    append(agent,
      h("optgroup", { label: "Agents" }, agents.map((a) => option(a.name))),
      workflows.length ? h("optgroup", { label: "Workflows" }, workflows.map((w) => option(w.name))) : null,
      h("optgroup", { label: "Objectives" }, option("objective")));
  }).catch((err) => ctx.fail(err, "Cannot list agents"));

  const tree = () => scope.value !== "all";

  function serverFilters() {
    return {
      status: status.value || undefined,
      agent: agent.value || undefined,
      kind: kind.value || undefined,
      top_level: tree() ? "true" : undefined,
    };
  }

  function matchesServerFilters(run) {
    const f = serverFilters();
    return (!f.status || run.status === f.status) && (!f.agent || run.agent === f.agent)
      && (!f.kind || run.kind === f.kind) && (!f.top_level || !run.parent_run_id);
  }

  function visible(run) {
    const maxAge = AGES[age.value];
    if (maxAge && Date.now() / 1000 - run.created_at > maxAge) return false;
    const q = search.value.trim().toLowerCase();
    if (!q) return true;
    return [run.run_id, run.input, run.output || "", run.agent].some((s) => s.toLowerCase().includes(q));
  }

  /** Steps against max_steps for an agent run; finished sub-runs for a workflow or an objective. */
  function progress(run) {
    const c = run.children;
    if (run.kind === "workflow" || run.kind === "objective") {
      if (!c) return h("span", { class: "muted" }, TERMINAL.has(run.status) ? "no sub-runs" : "starting");
      return h("div", null,
        h("progress", { max: String(c.total), value: String(c.finished), "aria-label": `${c.finished} of ${c.total} sub-runs finished` }),
        h("span", { class: "muted" }, ` ${c.finished}/${c.total} sub-runs`));
    }
    const max = run.policy && run.policy.max_steps;
    if (!max) return h("span", { class: "muted" }, `${fmtInt(run.steps)} steps`);
    const value = Math.min(run.steps, max);
    return h("div", null,
      h("progress", { max: String(max), value: String(value), "aria-label": `${run.steps} of ${max} steps` }),
      h("span", { class: "muted" }, ` ${run.steps}/${max} steps`));
  }

  function toggle(run) {
    if (open.has(run.run_id)) open.delete(run.run_id);
    else {
      open.add(run.run_id);
      if (!kids.has(run.run_id)) loadChildren(run.run_id);
    }
    draw();
    const button = tbody.querySelector(`tr[data-run-id="${CSS.escape(run.run_id)}"] button.expand`);
    if (button) button.focus();
  }

  function runCell(run, depth) {
    const n = run.children ? run.children.total : 0;
    const expander = tree() && n && depth < MAX_DEPTH
      ? h("button", {
        type: "button", class: "expand secondary small", "aria-expanded": String(open.has(run.run_id)),
        "aria-label": `${open.has(run.run_id) ? "Hide" : "Show"} the ${n} sub-run${n === 1 ? "" : "s"} of run ${run.run_id}`,
        title: `${n} sub-run${n === 1 ? "" : "s"}`, onclick: () => toggle(run),
      }, open.has(run.run_id) ? "▾" : "▸", ` ${n}`)
      : h("span", { class: "expand-gap", "aria-hidden": "true" });
    return h("td", { class: `run-cell depth-${Math.min(depth, MAX_DEPTH)}` }, expander, runLink(run.run_id));
  }

  function rowFor(run, depth) {
    return h("tr", {
      "data-run-id": run.run_id, "data-status": run.status, "data-kind": run.kind, "data-depth": String(depth),
      class: fresh.has(run.run_id) ? "fresh" : null,
    },
    runCell(run, depth),
    h("td", { class: "agent" }, ellipsis(run.agent),
      run.kind && run.kind !== "agent" && run.kind !== run.agent ? h("span", { class: "kind" }, run.kind) : null),
    h("td", null, statusBadge(run.status)),
    h("td", null, run.parent_run_id ? runLink(run.parent_run_id) : h("span", { class: "muted", "aria-label": "none" }, "—")),
    h("td", null, progress(run)),
    h("td", { class: "num" }, fmtInt(run.tokens)),
    h("td", { class: "num" }, fmtCost(run.cost_usd)),
    h("td", { title: new Date(run.created_at * 1000).toLocaleString(), "data-created": run.created_at }, fmtAge(run.created_at)),
    h("td", { class: "input" }, ellipsis(run.input)));
  }

  /** The rows to show, in order: each listed run, then (if opened) its sub-runs under it. */
  function flatten() {
    const out = [];
    const walk = (run, depth) => {
      out.push({ run, depth });
      if (!tree() || !open.has(run.run_id)) return;
      const children = kids.get(run.run_id);
      if (!children) out.push({ loading: run.run_id, depth: depth + 1 });
      else for (const child of children) walk(child, depth + 1);
    };
    for (const run of rows.filter(visible)) walk(run, 0);
    return out;
  }

  // Rows are keyed by run id and replaced only when their run changed, so that a live update
  // does not take the keyboard focus away from a link in the table.
  function draw() {
    const shown = flatten();
    const wanted = new Set(shown.map((r) => r.run ? r.run.run_id : `loading:${r.loading}`));
    for (const tr of [...tbody.children]) if (!wanted.has(tr.dataset.runId)) tr.remove();
    let prev = null;
    for (const item of shown) {
      const id = item.run ? item.run.run_id : `loading:${item.loading}`;
      let tr = tbody.querySelector(`tr[data-run-id="${CSS.escape(id)}"]`);
      if (!item.run) {
        tr = tr || h("tr", { "data-run-id": id }, h("td", { colspan: String(COLUMNS), class: `muted depth-${item.depth}` }, "Loading sub-runs…"));
      } else {
        const run = item.run;
        const c = run.children || { total: 0, finished: 0 };
        const key = `${run.version}:${run.updated_at}:${item.depth}:${open.has(id)}:${c.total}:${c.finished}:${tree()}`;
        if (tr && tr.dataset.key !== key) {
          const focused = tr.contains(document.activeElement) && document.activeElement.classList.contains("expand");
          const next = rowFor(run, item.depth);
          tr.replaceWith(next);
          tr = next;
          if (focused) tr.querySelector("button.expand")?.focus();
        } else if (!tr) {
          tr = rowFor(run, item.depth);
        }
        tr.dataset.key = key;
      }
      const expected = prev ? prev.nextSibling : tbody.firstChild;
      if (expected !== tr) tbody.insertBefore(tr, expected);
      prev = tr;
    }
    const listed = rows.filter(visible).length;
    if (!listed) {
      tbody.appendChild(h("tr", null, h("td", { colspan: String(COLUMNS), class: "muted" }, rows.length ? "No loaded run matches." : "No runs yet.")));
    }
    more.hidden = !cursor;
    const what = tree() ? "top-level run" : "run";
    summary.textContent = `${listed} of ${rows.length} loaded ${what}${rows.length === 1 ? "" : "s"} shown${cursor ? "; older runs not loaded yet" : ""}.`;
  }

  function refreshAges() {
    for (const td of tbody.querySelectorAll("td[data-created]")) td.textContent = fmtAge(Number(td.dataset.created));
  }

  async function load(reset) {
    try {
      const page = await get("/v1/runs", { ...serverFilters(), limit: PAGE, cursor: reset ? undefined : cursor });
      if (!alive) return;
      rows = reset ? page.runs : rows.concat(page.runs.filter((r) => !rows.some((x) => x.run_id === r.run_id)));
      cursor = page.next_cursor;
      draw();
    } catch (err) {
      ctx.fail(err, "Cannot list runs");
    }
  }

  async function loadChildren(parentId) {
    try {
      const page = await get("/v1/runs", { parent_run_id: parentId, limit: CHILDREN_PAGE });
      if (!alive) return;
      kids.set(parentId, page.runs.slice().sort((a, b) => a.created_at - b.created_at));
      draw();
    } catch (err) {
      open.delete(parentId);
      draw();
      ctx.fail(err, "Cannot list the sub-runs");
    }
  }

  /** Where a run is shown: the listed runs, or (in the tree) the sub-runs of an opened run. */
  function place(run) {
    const i = rows.findIndex((r) => r.run_id === run.run_id);
    if (i >= 0) {
      rows[i] = run;
      return "updated";
    }
    if (tree() && run.parent_run_id && kids.has(run.parent_run_id)) {
      const siblings = kids.get(run.parent_run_id);
      const j = siblings.findIndex((r) => r.run_id === run.run_id);
      if (j >= 0) siblings[j] = run;
      else siblings.push(run);
      return "updated";
    }
    if (matchesServerFilters(run)) {
      rows.push(run);
      return "added";
    }
    return null;
  }

  const shownIds = () => new Set([...rows.map((r) => r.run_id), ...[...kids.values()].flat().map((r) => r.run_id)]);

  // Live updates: re-read the runs the firehose mentions, at most once a second: a few by themselves,
  // more through list calls (so a busy workspace costs a few requests a second).
  const pending = new Set();
  const flush = throttle(async () => {
    const ids = [...pending];
    pending.clear();
    const known = shownIds();
    let fetched;
    try {
      if (ids.length <= 5) {
        fetched = (await Promise.all(ids.map((id) => get(`/v1/runs/${encodeURIComponent(id)}`).catch(() => null)))).filter(Boolean);
      } else {
        const page = await get("/v1/runs", { ...serverFilters(), limit: Math.min(500, Math.max(PAGE, rows.length)) });
        if (!alive) return;
        fetched = page.runs;
        if (page.runs.length >= rows.length) cursor = page.next_cursor;
        for (const parentId of open) {
          const children = await get("/v1/runs", { parent_run_id: parentId, limit: CHILDREN_PAGE });
          fetched = fetched.concat(children.runs);
        }
      }
    } catch {
      return; // the next event or the poll tries again
    }
    if (!alive) return;
    let added = 0;
    for (const run of fetched) {
      if (place(run) === "added" && !known.has(run.run_id)) {
        fresh.add(run.run_id);
        added += 1;
      }
    }
    rows.sort((a, b) => b.created_at - a.created_at);
    for (const children of kids.values()) children.sort((a, b) => a.created_at - b.created_at);
    draw();
    if (added) ctx.announce(`${added} new run${added === 1 ? "" : "s"}`);
  }, 1000);

  const onEvent = (e) => {
    const ev = e.detail;
    const known = shownIds();
    if (known.has(ev.run_id) || ev.type === "RUN_CREATED" || ev.type === "RUN_FORKED") pending.add(ev.run_id);
    // A sub-run started: its parent has one more (a parent hears when its sub-runs finish).
    const parent = ev.type === "RUN_CREATED" && ev.payload && ev.payload.parent_run_id;
    if (parent && known.has(parent)) pending.add(parent);
    if (pending.size) flush();
  };
  ctx.bus.addEventListener("event", onEvent);
  // While the firehose is down, poll; also refresh the ages now and then.
  const timer = setInterval(() => {
    if (ctx.live) return refreshAges();
    load(true);
    for (const id of open) loadChildren(id);
  }, 5000);

  for (const control of [status, agent, kind]) control.addEventListener("change", () => load(true));
  scope.addEventListener("change", () => {
    kids.clear();
    open.clear();
    load(true);
  });
  for (const control of [age, search]) control.addEventListener("input", draw);
  load(true);

  return () => {
    alive = false;
    ctx.bus.removeEventListener("event", onEvent);
    clearInterval(timer);
    flush.cancel();
  };
}
