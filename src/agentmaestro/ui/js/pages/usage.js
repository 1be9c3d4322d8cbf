// Costs and usage: spend and tokens per day by agent, model and user (charts, each with a table),
// totals, and the workspace's quotas against their limits.
//
// GET /v1/usage groups by one of agent, model, day or user. A per-day series by agent is composed
// from one call per day and grouping (21 calls for 7 days), run a few at a time. Users are known
// only by the SHA-256 of their email (`user:<hash>`); runs started by keys without a user show the
// key's name (`key:<name>`), the local CLI `cli:<login>`.

import { get } from "../api.js";
import { append, clear, compactName, field, fmtCost, fmtInt, h, longName, shorten } from "../dom.js";

const PALETTE = [
  "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
  "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf",
];

/** A colour per agent or model name, the same in every chart of the page. */
function palette() {
  const given = new Map();
  return (name) => {
    if (!given.has(name)) given.set(name, PALETTE[given.size % PALETTE.length]);
    return given.get(name);
  };
}

function utcDay(offset) {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - offset));
}

const iso = (d) => d.toISOString().replace(".000Z", "Z");

/** How a usage group's key reads: users by a short hash, "(not recorded)" for unattributed runs. */
const who = (key) => (!key ? "(not recorded)" : key.startsWith("user:") ? `user ${key.slice(5, 17)}…` : key);
const byWho = (groups) => groups.map((g) => ({ ...g, key: who(g.key) }));

const PLOT_PX = 230;
const LEGEND_PX = 540; // a chart's width at 1280 px (wider screens get fewer legend rows)

/** A series' name in a legend: model strings and paths shortened (the tooltip names it in full). */
const legendLabel = (name) => shorten(compactName(name), 36);

/** How many rows Chart.js needs for these legend labels (12 px text, a colour box and padding each). */
function legendRows(labels) {
  let rows = 1;
  let used = 0;
  for (const label of labels) {
    const width = label.length * 6.4 + 32;
    if (used && used + width > LEGEND_PX) {
      rows += 1;
      used = 0;
    }
    used += width;
  }
  return rows;
}

/** Run `fn` over `items`, `limit` at a time. */
async function pool(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  }));
  return out;
}

export function render(main, _route, ctx) {
  let alive = true;
  const charts = [];
  const agentColour = palette();
  const modelColour = palette();
  const userColour = palette();
  const range = h("select", { name: "range" },
    h("option", { value: "7" }, "Last 7 days"),
    h("option", { value: "14" }, "Last 14 days"),
    h("option", { value: "30" }, "Last 30 days"));
  const status = h("p", { class: "muted", role: "status" });
  const tiles = h("div", { class: "tiles" });
  const quotas = h("section", { class: "panel", "aria-labelledby": "quota-title" });
  const grid = h("div", { class: "grid-charts" });
  const totals = h("div", { class: "grid-charts totals" });
  append(main,
    h("h1", null, "Costs & usage"),
    h("form", { class: "toolbar", onsubmit: (e) => e.preventDefault() }, field("Period", range), status),
    tiles, quotas,
    h("h2", null, "Over time (UTC days)"), grid,
    h("h2", null, "Totals for the period"), totals,
  );

  function tile(label, value) {
    return h("div", { class: "tile" }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
  }

  function quotaRow(label, used, limit, format) {
    const id = `q-${label.replace(/\W+/g, "-").toLowerCase()}`;
    return h("div", { class: "meter-box" },
      h("label", { id }, label),
      h("div", { class: "value" }, limit === null || limit === undefined ? `${format(used)} (no limit set)` : `${format(used)} / ${format(limit)}`),
      limit ? h("meter", { min: "0", max: String(limit), value: String(Math.min(used, limit)), low: String(limit * 0.7), high: String(limit * 0.9), optimum: "0", "aria-labelledby": id }) : null);
  }

  async function drawQuotas() {
    try {
      const ws = await get("/v1/workspace");
      if (!alive) return;
      const q = ws.quotas;
      const u = ws.usage;
      append(clear(quotas),
        h("h2", { id: "quota-title" }, "Budget and quotas"),
        h("div", { class: "meters" },
          quotaRow("Spend this month", u.month_cost_usd, q.monthly_budget_usd, fmtCost),
          quotaRow("Active runs", u.active_runs, q.max_concurrent_runs, fmtInt),
          quotaRow("Runs in the last hour", u.runs_last_hour, q.runs_per_hour, fmtInt)),
        h("p", { class: "muted" }, "Admins set these with PATCH /v1/workspace/settings. Per-run limits are on each run's page."));
    } catch (err) {
      ctx.fail(err, "Cannot load the workspace quotas");
    }
  }

  /** A stacked bar chart of `metric` per day by key, with the same data as a table. */
  function chartPanel(title, days, perDay, metric, format, colour) {
    const keys = [...new Set(perDay.flatMap((groups) => groups.map((g) => g.key)))].sort();
    const values = (key) => perDay.map((groups) => (groups.find((g) => g.key === key) || {})[metric] || 0);
    const canvas = h("canvas", { role: "img", "aria-label": `${title}: bar chart; the table below has the numbers` });
    const table = h("table", null,
      h("caption", { class: "visually-hidden" }, title),
      h("thead", null, h("tr", null, h("th", { scope: "col" }, "Day"), keys.map((k) => h("th", { scope: "col", class: "num" }, longName(k))))),
      h("tbody", null, days.map((d, i) => h("tr", null, h("th", { scope: "row" }, d),
        keys.map((k) => h("td", { class: "num" }, format(values(k)[i])))))));
    const panel = h("section", { class: "panel", "aria-label": title, "data-chart": metric },
      h("h3", null, title),
      // Taller with more series, so that the legend never squeezes the plot away.
      h("div", { class: "chart-box" }, canvas),
      h("details", null, h("summary", null, "Show as a table"), h("div", { class: "table-scroll" }, table)));
    // Room for the legend above a plot of constant height, however many series it names.
    panel.querySelector(".chart-box").style.height = `${PLOT_PX + 22 * legendRows(keys.map(legendLabel))}px`;
    if (typeof Chart !== "undefined") {
      charts.push(new Chart(canvas, {
        type: "bar",
        data: { labels: days, datasets: keys.map((k) => ({ label: k, data: values(k), backgroundColor: colour(k), stack: "s" })) },
        options: {
          responsive: true, maintainAspectRatio: false, animation: false,
          scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { callback: (v) => format(v) } } },
          plugins: {
            // Legend entries are shortened (a model string can be a long path); the tooltip names the series in full.
            legend: { labels: { boxWidth: 12, generateLabels: (chart) => Chart.defaults.plugins.legend.labels.generateLabels(chart).map((l) => ({ ...l, text: legendLabel(l.text) })) } },
            tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${format(c.parsed.y)}` } },
          },
        },
      }));
    }
    return panel;
  }

  function totalsTable(title, report) {
    return h("section", { class: "panel table-scroll", "aria-label": title },
      h("table", null, h("caption", null, title),
        h("thead", null, h("tr", null, ["", "Runs", "Model calls", "Tool calls", "Tokens", "Cost"].map((c, i) => h("th", { scope: "col", class: i ? "num" : null }, c)))),
        h("tbody", null, report.groups.map((g) => h("tr", null, h("th", { scope: "row" }, longName(g.key)),
          h("td", { class: "num" }, fmtInt(g.runs)), h("td", { class: "num" }, fmtInt(g.model_calls)),
          h("td", { class: "num" }, fmtInt(g.tool_calls)), h("td", { class: "num" }, fmtInt(g.tokens)),
          h("td", { class: "num" }, fmtCost(g.cost_usd)))),
        report.groups.length ? null : h("tr", null, h("td", { colspan: "6", class: "muted" }, "Nothing in this period.")))));
  }

  async function load() {
    const n = Number(range.value);
    const starts = Array.from({ length: n }, (_, i) => utcDay(n - 1 - i));
    const days = starts.map((d) => d.toISOString().slice(0, 10));
    const since = iso(starts[0]);
    status.textContent = "Loading…";
    try {
      const [byAgent, byModel, byUser] = await Promise.all([
        get("/v1/usage", { since, group_by: "agent" }),
        get("/v1/usage", { since, group_by: "model" }),
        get("/v1/usage", { since, group_by: "user" }),
      ]);
      const groupings = ["agent", "model", "user"];
      const calls = starts.flatMap((d) => groupings.map((g) => ({ since: iso(d), until: iso(new Date(d.getTime() + 86400000)), group_by: g })));
      const reports = await pool(calls, 4, (params) => get("/v1/usage", params));
      if (!alive) return;
      const agentDays = reports.filter((_, i) => i % 3 === 0).map((r) => r.groups);
      const modelDays = reports.filter((_, i) => i % 3 === 1).map((r) => r.groups);
      const userDays = reports.filter((_, i) => i % 3 === 2).map((r) => byWho(r.groups));
      charts.splice(0).forEach((c) => c.destroy());
      const t = byAgent.total;
      append(clear(tiles),
        tile("Spend", fmtCost(t.cost_usd)), tile("Tokens", fmtInt(t.tokens)), tile("Runs", fmtInt(t.runs)),
        tile("Steps", fmtInt(t.steps)), tile("Model calls", fmtInt(t.model_calls)), tile("Tool calls", fmtInt(t.tool_calls)));
      append(clear(grid),
        chartPanel("Spend per day by agent", days, agentDays, "cost_usd", fmtCost, agentColour),
        chartPanel("Tokens per day by agent", days, agentDays, "tokens", fmtInt, agentColour),
        chartPanel("Spend per day by model", days, modelDays, "cost_usd", fmtCost, modelColour),
        chartPanel("Tokens per day by model", days, modelDays, "tokens", fmtInt, modelColour),
        chartPanel("Spend per day by user", days, userDays, "cost_usd", fmtCost, userColour),
        chartPanel("Tokens per day by user", days, userDays, "tokens", fmtInt, userColour));
      append(clear(totals), totalsTable("By agent", byAgent), totalsTable("By model", byModel),
        totalsTable("By user", { ...byUser, groups: byWho(byUser.groups) }));
      status.textContent = `${days[0]} to ${days[days.length - 1]} (UTC).`;
    } catch (err) {
      status.textContent = "";
      ctx.fail(err, "Cannot load usage");
    }
  }

  range.addEventListener("change", load);
  drawQuotas();
  load();
  return () => {
    alive = false;
    charts.forEach((c) => c.destroy());
  };
}
