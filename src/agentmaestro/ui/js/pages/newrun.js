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
  append(main, h("h1", null, "New run"));
  if (!ctx.can("operator")) {
    append(main, h("p", { class: "notice" }, "Your key is a viewer key: starting runs needs the operator role."));
    return null;
  }
  let alive = true;
  let agents = [];
  let workflows = [];
  const kindAgent = h("input", { type: "radio", name: "kind", value: "agent", id: "kind-agent", checked: query.get("workflow") === null });
  const kindWorkflow = h("input", { type: "radio", name: "kind", value: "workflow", id: "kind-workflow", checked: query.get("workflow") !== null });
  const agent = h("select", { name: "agent" });
  const workflow = h("select", { name: "workflow" });
  const agentField = field("Agent", agent);
  const workflowField = field("Workflow", workflow);
  const about = h("div", { class: "panel", "aria-live": "polite" });
  const input = h("textarea", { name: "input", rows: "6", placeholder: "What should the agent do?" });
  let limits = limitsFieldset("Limits (optional)");
  const limitsSlot = h("div", null, limits);
  const error = h("p", { class: "error-text", role: "alert" });
  const submit = h("button", { type: "submit" }, "Start run");

  const form = h("form", { class: "panel", "aria-labelledby": "new-run-title", onsubmit: start },
    h("h2", { id: "new-run-title", class: "visually-hidden" }, "Run settings"),
    h("fieldset", { class: "row" }, h("legend", null, "Run"),
      kindAgent, h("label", { for: "kind-agent" }, "an agent"),
      kindWorkflow, h("label", { for: "kind-workflow" }, "a workflow")),
    agentField,
    workflowField,
    about,
    field("Input", input, "The task, passed to the agent (or the workflow's nodes) as the user's message."),
    limitsSlot,
    error,
    submit);
  append(main, form);

  const isWorkflow = () => kindWorkflow.checked;

  function describe() {
    agentField.hidden = isWorkflow();
    workflowField.hidden = !isWorkflow();
    limitsSlot.hidden = isWorkflow(); // a workflow's limits are in its definition
    clear(about);
    if (isWorkflow()) {
      const w = workflows.find((x) => x.name === workflow.value);
      if (!w) {
        append(about, h("p", { class: "muted" }, workflows.length ? "" : "This server has no workflows (MAESTRO_WORKFLOWS_DIR)."));
        return;
      }
      append(about,
        h("p", null, w.description || "(no description)"),
        kv([["Nodes", w.nodes.join(", ")], ["Agents", w.agents.join(", ")], w.source ? ["Defined in", h("code", null, w.source)] : null]));
      return;
    }
    const a = agents.find((x) => x.name === agent.value);
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
    let run;
    submit.disabled = true;
    try {
      if (isWorkflow()) {
        if (!workflow.value) throw new Error("pick a workflow");
        run = await post(`/v1/workflows/${encodeURIComponent(workflow.value)}/runs`, { input: input.value });
      } else {
        const policy = readLimits(limits);
        if (policy === null) return;
        const body = { agent: agent.value, input: input.value };
        if (Object.keys(policy).length) body.policy = policy;
        run = await post("/v1/runs", body);
      }
      ctx.toast(`Started ${run.run_id}`);
      ctx.navigate(`#/runs/${encodeURIComponent(run.run_id)}`);
    } catch (err) {
      error.textContent = `Cannot start the run: ${err.message}`;
    } finally {
      submit.disabled = false;
    }
  }

  for (const control of [agent, workflow, kindAgent, kindWorkflow]) control.addEventListener("change", describe);
  Promise.all([get("/v1/agents"), get("/v1/workflows").catch(() => [])]).then(([agentList, workflowList]) => {
    if (!alive) return;
    agents = agentList;
    workflows = workflowList;
    for (const a of agents) agent.appendChild(h("option", { value: a.name, selected: query.get("agent") === a.name }, a.name));
    for (const w of workflows) workflow.appendChild(h("option", { value: w.name, selected: query.get("workflow") === w.name }, w.name));
    describe();
  }).catch((err) => ctx.fail(err, "Cannot list agents"));
  describe();
  return () => {
    alive = false;
  };
}
