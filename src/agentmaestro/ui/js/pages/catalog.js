// Agents, tools and workflows: the definitions this server can run, tools with their risk levels,
// the workspace's workflows (the server's folder ones and the stored ones), a form to validate a
// workflow YAML (POST /v1/workflows/validate) and, for operators, to store it (POST /v1/workflows)
// or have a model write one from a goal (POST /v1/workflows/generate; returned for review).

import { ApiError, del, get, post } from "../api.js";
import { append, clear, ellipsis, h, kv, link, longName, pre, riskBadge } from "../dom.js";

export function render(main, _route, ctx) {
  let alive = true;
  const agentsBox = h("div", { class: "grid-cards" });
  const toolsBody = h("tbody");
  const workflowsBox = h("div", { class: "grid-cards" });
  const yaml = h("textarea", { id: "workflow-yaml", name: "yaml", rows: "10", spellcheck: "false",
    placeholder: "name: my-flow\nnodes:\n  - id: first\n    agent: calculator" });
  const verdict = h("div", { role: "status", "aria-live": "polite" });
  const operator = ctx.can("operator");
  const goal = h("textarea", { id: "workflow-goal", name: "goal", rows: "3",
    placeholder: "Research a topic, then summarise the notes for engineers." });
  const saveGenerated = h("input", { type: "checkbox", id: "workflow-generate-save", name: "save" });
  const generateButton = h("button", { type: "submit" }, "Generate");
  const generated = h("div", { role: "status", "aria-live": "polite" });
  append(main,
    h("h1", null, "Agents & tools"),
    h("section", { "aria-labelledby": "agents-title" }, h("h2", { id: "agents-title" }, "Agents"), agentsBox),
    h("section", { "aria-labelledby": "tools-title" }, h("h2", { id: "tools-title" }, "Tools"),
      h("div", { class: "table-scroll" }, h("table", { class: "tools" },
        h("caption", { class: "visually-hidden" }, "Tools with their risk levels"),
        h("thead", null, h("tr", null, ["Tool", "Risk", "Idempotent", "Timeout", "Used by", "Description", "Arguments"].map((c) => h("th", { scope: "col" }, c)))),
        toolsBody))),
    h("section", { "aria-labelledby": "workflows-title" }, h("h2", { id: "workflows-title" }, "Workflows"), workflowsBox,
      h("form", { class: "panel", "aria-labelledby": "validate-title", onsubmit: validate },
        h("h3", { id: "validate-title" }, "Validate a workflow"),
        h("label", { for: "workflow-yaml" }, "Workflow YAML"), yaml,
        h("div", { class: "actions" }, h("button", { type: "submit" }, "Validate"),
          operator ? h("button", { type: "button", class: "secondary", onclick: save }, "Save to workspace") : null),
        verdict),
      operator ? h("form", { class: "panel", "aria-labelledby": "generate-title", onsubmit: generate },
        h("h3", { id: "generate-title" }, "Generate a workflow from a goal"),
        h("p", { class: "hint" }, "A model (the server's planner role) writes the workflow; it is validated and repaired at most twice, then shown above for review."),
        h("label", { for: "workflow-goal" }, "Goal"), goal,
        h("div", { class: "actions" }, generateButton,
          h("label", { for: "workflow-generate-save" }, saveGenerated, " Save when valid")),
        generated) : null),
  );

  function showProblems(box, problems) {
    append(box, h("p", { class: "error-text" }, `${problems.length} problem${problems.length === 1 ? "" : "s"}:`),
      h("ul", { class: "problems" }, problems.map((p) => h("li", null,
        p.line ? `line ${p.line}: ` : "", p.path ? h("code", null, p.path) : null, p.path ? ": " : "", p.message))));
  }

  async function save() {
    try {
      const report = await post("/v1/workflows/validate", { yaml: yaml.value });
      clear(verdict);
      if (!report.valid) {
        showProblems(verdict, report.problems);
        return;
      }
      const saved = await post("/v1/workflows", { yaml: yaml.value });
      append(verdict, h("p", { class: "ok-text" }, `Saved: workflow ${saved.name}, version ${saved.version}.`));
      ctx.announce(`Saved workflow ${saved.name}`);
      loadWorkflows();
    } catch (err) {
      ctx.fail(err, "Cannot save");
    }
  }

  async function generate(e) {
    e.preventDefault();
    clear(generated);
    generateButton.disabled = true;
    append(generated, h("p", { class: "muted" }, "Writing the workflow…"));
    try {
      const result = await post("/v1/workflows/generate", { goal: goal.value, save: saveGenerated.checked });
      clear(generated);
      const repairs = result.attempts.length - 1;
      append(generated, h("p", { class: "ok-text" },
        `Generated workflow ${result.name} with ${result.model} (${repairs} repair${repairs === 1 ? "" : "s"}).`,
        result.saved ? ` Saved as version ${result.saved.version}.` : " Review it above, then save it."));
      if (repairs) {
        append(generated, h("details", null, h("summary", null, "Problems the model repaired"),
          result.attempts.filter((a) => !a.valid).map((a) => h("div", null, h("p", null, `Attempt ${a.number}:`),
            h("ul", { class: "problems" }, a.problems.map((p) => h("li", null, p.line ? `line ${p.line}: ` : "", p.message)))))));
      }
      yaml.value = result.yaml;
      clear(verdict);
      if (result.saved) loadWorkflows();
      ctx.announce(`Generated workflow ${result.name}`);
    } catch (err) {
      clear(generated);
      if (err instanceof ApiError && err.status === 422) {
        append(generated, h("p", { class: "error-text" }, err.message));
      } else {
        ctx.fail(err, "Cannot generate");
      }
    } finally {
      generateButton.disabled = false;
    }
  }

  async function validate(e) {
    e.preventDefault();
    try {
      const report = await post("/v1/workflows/validate", { yaml: yaml.value });
      clear(verdict);
      if (report.valid) {
        append(verdict, h("p", { class: "ok-text" }, `Valid: workflow ${report.name}.`));
      } else {
        showProblems(verdict, report.problems);
      }
    } catch (err) {
      ctx.fail(err, "Cannot validate");
    }
  }

  function deleteButtons(w) {
    const confirm = h("button", { type: "button", class: "danger small", hidden: true, onclick: async () => {
      try {
        await del(`/v1/workflows/${encodeURIComponent(w.name)}`);
        ctx.toast(`Deleted ${w.name}`);
        ctx.announce(`Deleted workflow ${w.name}`);
        loadWorkflows();
      } catch (err) {
        ctx.fail(err, "Cannot delete");
      }
    } }, `Confirm: delete ${w.name}`);
    const keep = h("button", { type: "button", class: "secondary small", hidden: true, onclick: () => {
      confirm.hidden = true; keep.hidden = true; ask.hidden = false; ask.focus();
    } }, "Keep");
    const ask = h("button", { type: "button", class: "secondary small", onclick: () => {
      ask.hidden = true; confirm.hidden = false; keep.hidden = false; confirm.focus();
    } }, "Delete");
    return [ask, " ", confirm, " ", keep];
  }

  function workflowCard(w) {
    const stored = w.source === "stored";
    return h("article", { class: "panel", "aria-labelledby": `workflow-${w.name}`, "data-workflow": w.name, "data-source": w.source },
      h("h3", { id: `workflow-${w.name}` }, ellipsis(w.name)),
      h("p", null, w.description || h("span", { class: "muted" }, "(no description)")),
      kv([
        ["Nodes", w.nodes.join(", ")],
        ["Agents", w.agents.join(", ")],
        ["Source", stored ? `stored in this workspace, version ${w.version}` : "the server's workflows folder"],
        stored ? ["Saved by", ellipsis(w.updated_by)] : (w.location ? ["Defined in", longName(w.location, { class: "mono" })] : null),
      ]),
      operator ? h("p", { class: "actions" }, link(`#/new?workflow=${encodeURIComponent(w.name)}`, `Run ${w.name}`, { class: "button secondary" }),
        stored ? deleteButtons(w) : null) : null);
  }

  function loadWorkflows() {
    get("/v1/workflows").then((list) => {
      if (!alive) return;
      append(clear(workflowsBox), list.length ? list.map(workflowCard) : h("p", { class: "muted" }, "No workflows yet: the server reads them from MAESTRO_WORKFLOWS_DIR (default ./workflows); operators can save or generate one below."));
    }).catch((err) => ctx.fail(err, "Cannot list workflows"));
  }
  loadWorkflows();

  function agentCard(a) {
    const policy = Object.entries(a.policy || {}).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${v}`).join(", ");
    return h("article", { class: "panel", "aria-labelledby": `agent-${a.name}`, "data-agent": a.name },
      h("h3", { id: `agent-${a.name}` }, ellipsis(a.name)),
      h("p", null, a.description || h("span", { class: "muted" }, "(no description)")),
      kv([
        ["Model", longName(a.model, { class: "mono" })],
        ["Tools", a.tools.length ? a.tools.map((t) => h("span", null, h("code", null, t.name), " ", riskBadge(t.risk), " ")) : "none"],
        ["Limits", policy || "none"],
        ["Retries", `${a.retry.max_attempts} attempts, ${a.retry.backoff_s}s backoff`],
        a.gate ? ["Gate", pre(a.gate)] : null,
        a.source ? ["Defined in", longName(a.source, { class: "mono" })] : null,
      ]),
      h("details", null, h("summary", null, "Instructions"), h("div", { class: "output-box" }, a.instructions)),
      ctx.can("operator") ? h("p", null, link(`#/new?agent=${encodeURIComponent(a.name)}`, `Start a ${a.name} run`, { class: "button secondary" })) : null);
  }

  Promise.all([get("/v1/agents"), get("/v1/tools")]).then(([agents, tools]) => {
    if (!alive) return;
    append(clear(agentsBox), agents.map(agentCard));
    append(clear(toolsBody), tools.map((t) => h("tr", { "data-tool": t.name },
      h("th", { scope: "row" }, ellipsis(t.name, { class: "mono" })),
      h("td", null, riskBadge(t.risk)),
      h("td", null, t.idempotent ? "yes" : t.reconciles || t.idempotency_key ? `no (${[t.reconciles ? "reconciles" : "", t.idempotency_key ? "keyed" : ""].filter(Boolean).join(", ")})` : "no"),
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
