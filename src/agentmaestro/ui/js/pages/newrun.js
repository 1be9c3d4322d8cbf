// New run: pick an agent, a workflow or an objective (a goal for a planner, optionally on a git
// repository of the server), give the input, optionally tighten or raise an agent's limits, start.

import { get, post } from "../api.js";
import { append, clear, field, h, kv, longName, riskBadge } from "../dom.js";

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
  const wanted = query.get("objective") !== null ? "objective" : query.get("workflow") !== null ? "workflow" : "agent";
  const kindAgent = h("input", { type: "radio", name: "kind", value: "agent", id: "kind-agent", checked: wanted === "agent" });
  const kindWorkflow = h("input", { type: "radio", name: "kind", value: "workflow", id: "kind-workflow", checked: wanted === "workflow" });
  const kindObjective = h("input", { type: "radio", name: "kind", value: "objective", id: "kind-objective", checked: wanted === "objective" });
  const planner = h("select", { name: "planner" });
  const strategist = h("select", { name: "strategist" });
  const maxWorkers = h("input", { type: "number", name: "max_concurrent_workers", min: "1", max: "100", step: "1", value: "5" });
  const repo = h("input", { type: "text", name: "repo", placeholder: "optional: a git repository on the server", autocomplete: "off" });
  const objectiveFields = h("fieldset", { class: "limits-set" }, h("legend", null, "Objective"),
    h("div", { class: "limits" },
      field("Planner", planner, "Turns the goal into tasks."),
      field("Strategist", strategist, "Reviews each task against its acceptance criteria."),
      field("Workers at once", maxWorkers),
      field("Repository", repo, "Each task works in its own git worktree; approved work is merged (MAESTRO_OBJECTIVE_REPOS on the server).")));
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
      kindWorkflow, h("label", { for: "kind-workflow" }, "a workflow"),
      kindObjective, h("label", { for: "kind-objective" }, "an objective")),
    agentField,
    workflowField,
    objectiveFields,
    about,
    field("Input", input, "The task, passed to the agent (or the workflow's nodes) as the user's message."),
    limitsSlot,
    error,
    submit);
  append(main, form);

  const isWorkflow = () => kindWorkflow.checked;
  const isObjective = () => kindObjective.checked;

  function describe() {
    agentField.hidden = isWorkflow() || isObjective();
    workflowField.hidden = !isWorkflow();
    objectiveFields.hidden = !isObjective();
    limitsSlot.hidden = isWorkflow() || isObjective(); // workflows and objectives carry their own limits
    input.placeholder = isObjective() ? "The goal: what should the planned tasks achieve?" : "What should the agent do?";
    clear(about);
    if (isObjective()) {
      append(about, h("p", null, "A planner turns the goal into a task graph; worker agents do the tasks, the strategist reviews each one, rejected tasks are retried and then escalated to the human queue."));
      return;
    }
    if (isWorkflow()) {
      const w = workflows.find((x) => x.name === workflow.value);
      if (!w) {
        append(about, h("p", { class: "muted" }, workflows.length ? "" : "This server has no workflows (MAESTRO_WORKFLOWS_DIR)."));
        return;
      }
      append(about,
        h("p", null, w.description || "(no description)"),
        kv([["Nodes", w.nodes.join(", ")], ["Agents", w.agents.join(", ")], w.source ? ["Defined in", longName(w.source, { class: "mono" })] : null]));
      return;
    }
    const a = agents.find((x) => x.name === agent.value);
    if (!a) return;
    append(about,
      h("p", null, a.description || "(no description)"),
      kv([
        ["Model", longName(a.model, { class: "mono" })],
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
      if (isObjective()) {
        const body = { goal: input.value, planner: planner.value, strategist: strategist.value, max_concurrent_workers: Number(maxWorkers.value || 5) };
        if (repo.value.trim()) body.repo = repo.value.trim();
        run = await post("/v1/objectives", body);
      } else if (isWorkflow()) {
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

  for (const control of [agent, workflow, kindAgent, kindWorkflow, kindObjective]) control.addEventListener("change", describe);
  Promise.all([get("/v1/agents"), get("/v1/workflows").catch(() => [])]).then(([agentList, workflowList]) => {
    if (!alive) return;
    agents = agentList;
    workflows = workflowList;
    for (const a of agents) agent.appendChild(h("option", { value: a.name, selected: query.get("agent") === a.name }, a.name));
    for (const w of workflows) workflow.appendChild(h("option", { value: w.name, selected: query.get("workflow") === w.name }, w.name));
    for (const a of agents) {
      planner.appendChild(h("option", { value: a.name, selected: a.name === "planner" }, a.name));
      strategist.appendChild(h("option", { value: a.name, selected: a.name === "strategist" }, a.name));
    }
    describe();
  }).catch((err) => ctx.fail(err, "Cannot list agents"));
  describe();
  return () => {
    alive = false;
  };
}
