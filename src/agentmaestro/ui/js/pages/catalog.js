// Agents, tools and workflows: the definitions this server can run, tools with their risk levels,
// and a form to validate a workflow YAML (POST /v1/workflows/validate).

import { get, post } from "../api.js";
import { append, clear, h, kv, link, pre, riskBadge } from "../dom.js";

export function render(main, _route, ctx) {
  let alive = true;
  const agentsBox = h("div", { class: "grid-cards" });
  const toolsBody = h("tbody");
  const workflowsBox = h("div", { class: "grid-cards" });
  const yaml = h("textarea", { id: "workflow-yaml", name: "yaml", rows: "10", spellcheck: "false",
    placeholder: "name: my-flow\nnodes:\n  - id: first\n    agent: calculator" });
  const verdict = h("div", { role: "status", "aria-live": "polite" });
  append(main,
    h("h1", null, "Agents & tools"),
    h("section", { "aria-labelledby": "agents-title" }, h("h2", { id: "agents-title" }, "Agents"), agentsBox),
    h("section", { "aria-labelledby": "tools-title" }, h("h2", { id: "tools-title" }, "Tools"),
      h("table", null,
        h("caption", { class: "visually-hidden" }, "Tools with their risk levels"),
        h("thead", null, h("tr", null, ["Tool", "Risk", "Idempotent", "Timeout", "Used by", "Description", "Arguments"].map((c) => h("th", { scope: "col" }, c)))),
        toolsBody)),
    h("section", { "aria-labelledby": "workflows-title" }, h("h2", { id: "workflows-title" }, "Workflows"), workflowsBox,
      h("form", { class: "panel", "aria-labelledby": "validate-title", onsubmit: validate },
        h("h3", { id: "validate-title" }, "Validate a workflow"),
        h("label", { for: "workflow-yaml" }, "Workflow YAML"), yaml,
        h("div", { class: "actions" }, h("button", { type: "submit" }, "Validate")),
        verdict)),
  );

  async function validate(e) {
    e.preventDefault();
    try {
      const report = await post("/v1/workflows/validate", { yaml: yaml.value });
      clear(verdict);
      if (report.valid) {
        append(verdict, h("p", { class: "ok-text" }, `Valid: workflow ${report.name}.`));
      } else {
        append(verdict, h("p", { class: "error-text" }, `${report.problems.length} problem${report.problems.length === 1 ? "" : "s"}:`),
          h("ul", { class: "problems" }, report.problems.map((p) => h("li", null,
            p.line ? `line ${p.line}: ` : "", p.path ? h("code", null, p.path) : null, p.path ? ": " : "", p.message))));
      }
    } catch (err) {
      ctx.fail(err, "Cannot validate");
    }
  }

  function workflowCard(w) {
    return h("article", { class: "panel", "aria-labelledby": `workflow-${w.name}`, "data-workflow": w.name },
      h("h3", { id: `workflow-${w.name}` }, w.name),
      h("p", null, w.description || h("span", { class: "muted" }, "(no description)")),
      kv([["Nodes", w.nodes.join(", ")], ["Agents", w.agents.join(", ")], w.source ? ["Defined in", h("code", null, w.source)] : null]),
      ctx.can("operator") ? h("p", null, link(`#/new?workflow=${encodeURIComponent(w.name)}`, `Run ${w.name}`, { class: "button secondary" })) : null);
  }

  get("/v1/workflows").then((list) => {
    if (!alive) return;
    append(clear(workflowsBox), list.length ? list.map(workflowCard) : h("p", { class: "muted" }, "No workflows on this server (they are read from MAESTRO_WORKFLOWS_DIR, default ./workflows)."));
  }).catch((err) => ctx.fail(err, "Cannot list workflows"));

  function agentCard(a) {
    const policy = Object.entries(a.policy || {}).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${v}`).join(", ");
    return h("article", { class: "panel", "aria-labelledby": `agent-${a.name}`, "data-agent": a.name },
      h("h3", { id: `agent-${a.name}` }, a.name),
      h("p", null, a.description || h("span", { class: "muted" }, "(no description)")),
      kv([
        ["Model", h("code", null, a.model)],
        ["Tools", a.tools.length ? a.tools.map((t) => h("span", null, h("code", null, t.name), " ", riskBadge(t.risk), " ")) : "none"],
        ["Limits", policy || "none"],
        ["Retries", `${a.retry.max_attempts} attempts, ${a.retry.backoff_s}s backoff`],
        a.gate ? ["Gate", pre(a.gate)] : null,
        a.source ? ["Defined in", h("code", null, a.source)] : null,
      ]),
      h("details", null, h("summary", null, "Instructions"), h("div", { class: "output-box" }, a.instructions)),
      ctx.can("operator") ? h("p", null, link(`#/new?agent=${encodeURIComponent(a.name)}`, `Start a ${a.name} run`, { class: "button secondary" })) : null);
  }

  Promise.all([get("/v1/agents"), get("/v1/tools")]).then(([agents, tools]) => {
    if (!alive) return;
    append(clear(agentsBox), agents.map(agentCard));
    append(clear(toolsBody), tools.map((t) => h("tr", { "data-tool": t.name },
      h("th", { scope: "row" }, h("code", null, t.name)),
      h("td", null, riskBadge(t.risk)),
      h("td", null, t.idempotent ? "yes" : "no"),
      h("td", null, `${t.timeout_s}s`),
      h("td", null, t.agents.join(", ")),
      h("td", null, t.description),
      h("td", null, h("details", null, h("summary", null, "Schema"), pre(t.parameters))))));
    if (!tools.length) toolsBody.appendChild(h("tr", null, h("td", { colspan: "7", class: "muted" }, "No tools.")));
  }).catch((err) => ctx.fail(err, "Cannot load agents and tools"));
  return () => {
    alive = false;
  };
}
