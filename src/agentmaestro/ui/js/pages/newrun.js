// New run: pick an agent, give the input, optionally tighten or raise its limits, start.

import { get, post } from "../api.js";
import { append, clear, field, h, kv, riskBadge } from "../dom.js";

const LIMITS = [
  ["max_steps", "Max steps", "1", "int"],
  ["max_tokens", "Max tokens", "1", "int"],
  ["max_tool_calls", "Max tool calls", "1", "int"],
  ["max_cost_usd", "Max cost (USD)", "0.0001", "float"],
  ["timeout_s", "Timeout (s)", "0.1", "float"],
];

/** A fieldset of optional limit inputs (empty: keep the agent's default). */
export function limitsFieldset(title, defaults = {}) {
  return h("fieldset", { class: "limits-set" }, h("legend", null, title),
    h("div", { class: "limits" }, LIMITS.map(([name, label, step]) => field(label,
      h("input", { type: "number", min: "0", step, name, "data-limit": name,
        placeholder: defaults[name] === null || defaults[name] === undefined ? "agent default" : String(defaults[name]) })))),
    h("p", { class: "error-text", role: "alert", "data-limits-error": "" }));
}

/** The limits filled in, as a PolicyIn object; null (and a message shown) if one is invalid. */
export function readLimits(fieldset) {
  const out = {};
  const error = fieldset.querySelector("[data-limits-error]");
  error.textContent = "";
  for (const [name, label, , kind] of LIMITS) {
    const input = fieldset.querySelector(`[data-limit="${name}"]`);
    const raw = input.value.trim();
    if (!raw) continue;
    const value = Number(raw);
    if (!Number.isFinite(value) || value < 0 || (kind === "int" && !Number.isInteger(value))) {
      error.textContent = `${label} must be a ${kind === "int" ? "whole " : ""}number of at least 0.`;
      input.focus();
      return null;
    }
    out[name] = value;
  }
  return out;
}

export function render(main, { query }, ctx) {
  main.appendChild(h("h1", null, "New run"));
  if (!ctx.can("operator")) {
    main.appendChild(h("p", { class: "notice" }, "Your key is a viewer key: starting runs needs the operator role."));
    return null;
  }
  let alive = true;
  let agents = [];
  const agent = h("select", { name: "agent", required: true });
  const about = h("div", { class: "panel", "aria-live": "polite" });
  const input = h("textarea", { name: "input", rows: "6", placeholder: "What should the agent do?" });
  let limits = limitsFieldset("Limits (optional)");
  const limitsSlot = h("div", null, limits);
  const error = h("p", { class: "error-text", role: "alert" });
  const submit = h("button", { type: "submit" }, "Start run");

  const form = h("form", { class: "panel", "aria-labelledby": "new-run-title", onsubmit: start },
    h("h2", { id: "new-run-title", class: "visually-hidden" }, "Run settings"),
    field("Agent", agent),
    about,
    field("Input", input, "The task, passed to the agent as the user's message."),
    limitsSlot,
    error,
    submit);
  main.appendChild(form);

  function describe() {
    const a = agents.find((x) => x.name === agent.value);
    clear(about);
    if (!a) return;
    append(about,
      h("p", null, a.description || "(no description)"),
      kv([
        ["Model", a.model],
        ["Tools", a.tools.length ? a.tools.map((t) => h("span", null, h("code", null, t.name), " ", riskBadge(t.risk), " ")) : "none"],
      ]),
    );
    const fresh = limitsFieldset("Limits (optional)", a.policy || {});
    limitsSlot.replaceChild(fresh, limits);
    limits = fresh;
  }

  async function start(e) {
    e.preventDefault();
    error.textContent = "";
    const policy = readLimits(limits);
    if (policy === null) return;
    submit.disabled = true;
    try {
      const body = { agent: agent.value, input: input.value };
      if (Object.keys(policy).length) body.policy = policy;
      const run = await post("/v1/runs", body);
      ctx.toast(`Started ${run.run_id}`);
      ctx.navigate(`#/runs/${encodeURIComponent(run.run_id)}`);
    } catch (err) {
      error.textContent = `Cannot start the run: ${err.message}`;
    } finally {
      submit.disabled = false;
    }
  }

  agent.addEventListener("change", describe);
  get("/v1/agents").then((list) => {
    if (!alive) return;
    agents = list;
    for (const a of list) agent.appendChild(h("option", { value: a.name, selected: query.get("agent") === a.name }, a.name));
    describe();
  }).catch((err) => ctx.fail(err, "Cannot list agents"));
  return () => {
    alive = false;
  };
}
