// Runs: every run with status, agent, progress, tokens, cost and age; filters, search, pagination,
// live updates from the workspace firehose (polling while it is down).

import { get } from "../api.js";
import {
  RUN_STATUSES, append, clear, field, fmtAge, fmtCost, fmtInt, h, runLink, statusBadge, throttle,
} from "../dom.js";

const PAGE = 50;
const AGES = { any: null, hour: 3600, day: 86400, week: 7 * 86400 };

export function render(main, { query }, ctx) {
  let alive = true;
  let rows = []; // runs, newest first
  let cursor = null;
  const fresh = new Set();

  const status = h("select", { name: "status" }, h("option", { value: "" }, "Any status"),
    RUN_STATUSES.map((s) => h("option", { value: s, selected: query.get("status") === s }, s)));
  const agent = h("select", { name: "agent" }, h("option", { value: "" }, "Any agent"));
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
      field("Status", status),
      field("Agent", agent),
      field("Created", age, "filters the loaded runs"),
      field("Search", search, "filters the loaded runs")),
    h("table", { class: "runs" },
      h("caption", { class: "visually-hidden" }, "Runs, newest first"),
      h("thead", null, h("tr", null,
        h("th", { scope: "col" }, "Run"),
        h("th", { scope: "col" }, "Agent"),
        h("th", { scope: "col" }, "Status"),
        h("th", { scope: "col" }, "Progress"),
        h("th", { scope: "col", class: "num" }, "Steps"),
        h("th", { scope: "col", class: "num" }, "Tokens"),
        h("th", { scope: "col", class: "num" }, "Cost"),
        h("th", { scope: "col" }, "Age"),
        h("th", { scope: "col" }, "Input"))),
      tbody),
    h("div", { class: "row" }, more, summary),
  );

  get("/v1/agents").then((agents) => {
    for (const a of agents) agent.appendChild(h("option", { value: a.name, selected: query.get("agent") === a.name }, a.name));
  }).catch((err) => ctx.fail(err, "Cannot list agents"));

  function serverFilters() {
    return { status: status.value || undefined, agent: agent.value || undefined };
  }

  function matchesServerFilters(run) {
    const f = serverFilters();
    return (!f.status || run.status === f.status) && (!f.agent || run.agent === f.agent);
  }

  function visible(run) {
    const maxAge = AGES[age.value];
    if (maxAge && Date.now() / 1000 - run.created_at > maxAge) return false;
    const q = search.value.trim().toLowerCase();
    if (!q) return true;
    return [run.run_id, run.input, run.output || "", run.agent].some((s) => s.toLowerCase().includes(q));
  }

  function progress(run) {
    const max = run.policy && run.policy.max_steps;
    if (!max) return h("span", { class: "muted" }, `${run.steps} steps`);
    const value = Math.min(run.steps, max);
    return h("div", null,
      h("progress", { max: String(max), value: String(value), "aria-label": `${run.steps} of ${max} steps` }),
      h("span", { class: "muted" }, ` ${run.steps}/${max}`));
  }

  function rowFor(run) {
    return h("tr", { "data-run-id": run.run_id, "data-status": run.status, class: fresh.has(run.run_id) ? "fresh" : null },
      h("td", null, runLink(run.run_id)),
      h("td", null, run.agent),
      h("td", null, statusBadge(run.status)),
      h("td", null, progress(run)),
      h("td", { class: "num" }, fmtInt(run.steps)),
      h("td", { class: "num" }, fmtInt(run.tokens)),
      h("td", { class: "num" }, fmtCost(run.cost_usd)),
      h("td", { title: new Date(run.created_at * 1000).toLocaleString(), "data-created": run.created_at }, fmtAge(run.created_at)),
      h("td", { class: "truncate", title: run.input }, run.input));
  }

  // Rows are keyed by run id and replaced only when their run changed, so that a live update
  // does not take the keyboard focus away from a link in the table.
  function draw() {
    const shown = rows.filter(visible);
    const wanted = new Set(shown.map((r) => r.run_id));
    for (const tr of [...tbody.children]) if (!wanted.has(tr.dataset.runId)) tr.remove();
    let prev = null;
    for (const run of shown) {
      let tr = tbody.querySelector(`tr[data-run-id="${CSS.escape(run.run_id)}"]`);
      const key = `${run.version}:${run.updated_at}`;
      if (tr && tr.dataset.key !== key) {
        const next = rowFor(run);
        tr.replaceWith(next);
        tr = next;
      } else if (!tr) {
        tr = rowFor(run);
      }
      tr.dataset.key = key;
      const expected = prev ? prev.nextSibling : tbody.firstChild;
      if (expected !== tr) tbody.insertBefore(tr, expected);
      prev = tr;
    }
    if (!shown.length) {
      tbody.appendChild(h("tr", null, h("td", { colspan: "9", class: "muted" }, rows.length ? "No loaded run matches." : "No runs yet.")));
    }
    more.hidden = !cursor;
    summary.textContent = `${shown.length} of ${rows.length} loaded run${rows.length === 1 ? "" : "s"} shown${cursor ? "; older runs not loaded yet" : ""}.`;
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

  // Live updates: re-read the runs the firehose mentions, at most once a second: one run by itself,
  // more than a few through one list call (so a busy workspace costs one request a second).
  const pending = new Set();
  const flush = throttle(async () => {
    const ids = [...pending];
    pending.clear();
    const known = new Set(rows.map((r) => r.run_id));
    let fetched;
    try {
      if (ids.length <= 3) {
        fetched = (await Promise.all(ids.map((id) => get(`/v1/runs/${encodeURIComponent(id)}`).catch(() => null)))).filter(Boolean);
      } else {
        const page = await get("/v1/runs", { ...serverFilters(), limit: Math.min(500, Math.max(PAGE, rows.length)) });
        fetched = page.runs;
        if (!alive) return;
        if (page.runs.length >= rows.length) cursor = page.next_cursor;
      }
    } catch {
      return; // the next event or the poll tries again
    }
    if (!alive) return;
    let added = 0;
    for (const run of fetched) {
      const i = rows.findIndex((r) => r.run_id === run.run_id);
      if (i >= 0) rows[i] = run;
      else if (matchesServerFilters(run)) {
        rows.push(run);
        if (!known.has(run.run_id)) {
          fresh.add(run.run_id);
          added += 1;
        }
      }
    }
    rows.sort((a, b) => b.created_at - a.created_at);
    draw();
    if (added) ctx.announce(`${added} new run${added === 1 ? "" : "s"}`);
  }, 1000);

  const onEvent = (e) => {
    const ev = e.detail;
    if (rows.some((r) => r.run_id === ev.run_id) || ev.type === "RUN_CREATED" || ev.type === "RUN_FORKED") {
      pending.add(ev.run_id);
      flush();
    }
  };
  ctx.bus.addEventListener("event", onEvent);
  // While the firehose is down, poll; also refresh the ages now and then.
  const timer = setInterval(() => (ctx.live ? refreshAges() : load(true)), 5000);

  for (const control of [status, agent]) control.addEventListener("change", () => load(true));
  for (const control of [age, search]) control.addEventListener("input", draw);
  load(true);

  return () => {
    alive = false;
    ctx.bus.removeEventListener("event", onEvent);
    clearInterval(timer);
    flush.cancel();
  };
}
