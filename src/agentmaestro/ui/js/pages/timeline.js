// One run's event log as a timeline: the conversation as chat bubbles, tool calls with their
// arguments and results, approvals, escalations, policy violations and errors. Every value from a
// model or a tool is put in the page as text (dom.js never parses HTML).

import { compactName, fmtCost, fmtInt, fmtTime, h, link, pre, riskBadge, runLink, statusBadge } from "../dom.js";

/** Events after which a run is over: forking there would only copy a finished run. */
const TERMINAL_EVENTS = new Set(["RUN_COMPLETED", "RUN_FAILED", "RUN_CANCELLED", "POLICY_VIOLATION"]);

/** Bookkeeping events, hidden unless "Show system events" is ticked. */
const SYSTEM_EVENTS = new Set(["RUN_STARTED", "PHASE_CHANGED", "LEASE_RECOVERED", "STEP_STARTED"]);

function bubble(kind, who, text, ...extra) {
  return { kind, body: h("div", { class: "bubble" }, h("div", { class: "who" }, who), h("div", { class: "text" }, text), ...extra) };
}

function card(kind, title, ...body) {
  return { kind, body: h("div", { class: "card" }, h("div", { class: "title" }, title), ...body) };
}

function line(text, kind = "system") {
  return { kind, body: h("div", { class: "line" }, text) };
}

/**
 * A tool call's arguments. Usually pretty JSON; when a string argument has several lines (a file's
 * contents, a script, a patch) each argument is shown on its own, the text as it reads, not as an
 * escaped JSON string.
 */
export function argumentsView(args, props = {}) {
  const plain = args && typeof args === "object" && !Array.isArray(args);
  if (!plain || !Object.values(args).some((v) => typeof v === "string" && v.includes("\n"))) return pre(args ?? {}, props);
  return h("dl", { ...props, class: "kv args" }, Object.entries(args).flatMap(([k, v]) => [
    h("dt", null, k),
    h("dd", null, typeof v === "string" && v.includes("\n") ? pre(v) : h("code", null, typeof v === "string" ? v : JSON.stringify(v))),
  ]));
}

function toolCalls(calls) {
  if (!calls || !calls.length) return null;
  return h("div", null, h("div", { class: "sub" }, calls.length === 1 ? "Asks to call" : `Asks to call (${calls.length})`),
    calls.map((c) => h("div", { class: "tool-call" }, h("code", null, c.name), argumentsView(c.arguments, { "aria-label": `arguments of ${c.name}` }))));
}

function usageLine(p) {
  const u = p.usage || {};
  const parts = [`${fmtInt(u.input_tokens)} in / ${fmtInt(u.output_tokens)} out tokens`, fmtCost(p.cost_usd)];
  if (p.duration_ms !== undefined) parts.push(`${Math.round(p.duration_ms)} ms`);
  if (p.finish_reason) parts.push(p.finish_reason);
  return h("div", { class: "muted usage" }, p.model ? [h("span", { title: p.model }, compactName(p.model)), " · "] : null, parts.join(" · "));
}

const TASK_STATUS_WORDS = {
  planned: "planned", ready: "ready", active: "started", awaiting_qa: "sent to QA", complete: "accepted",
  failed: "failed", waiting_human: "waiting for a person", abandoned: "abandoned",
};

/** One change of an objective's task graph in words, or null for pure bookkeeping. */
function objectiveChange(c) {
  switch (c.op) {
    case "add":
      return h("li", null, `Planned ${c.tasks.length} task${c.tasks.length === 1 ? "" : "s"}: `,
        c.tasks.map((t, i) => [i ? ", " : "", h("strong", null, t.id), ` (${t.worker}${t.depends_on && t.depends_on.length ? `, after ${t.depends_on.join(", ")}` : ""})`]));
    case "status":
      return h("li", null, "Task ", h("strong", null, c.task), ` ${TASK_STATUS_WORDS[c.to] || c.to}`,
        c.run_id ? [" · ", runLink(c.run_id)] : null,
        c.output ? h("div", { class: "text clip muted" }, c.output) : null,
        c.feedback ? h("div", { class: "muted" }, `QA: ${c.feedback}`) : null,
        c.error ? h("div", { class: "error-text" }, c.error) : null,
        c.reason ? h("div", { class: "muted" }, c.reason) : null,
        c.note ? h("div", { class: "muted" }, `Note: ${c.note}`) : null);
    case "deps":
      return h("li", null, "Task ", h("strong", null, c.task), " dependencies",
        c.add && c.add.length ? ` + ${c.add.join(", ")}` : "", c.remove && c.remove.length ? ` − ${c.remove.join(", ")}` : "");
    case "helper":
      return h("li", null, `Started the ${c.kind === "plan" ? "planner" : c.kind || "helper"} · `, runLink(c.run_id));
    case "replan":
      return h("li", null, `Re-plan requested${c.reason ? `: ${c.reason}` : ""}`);
    case "replan_started":
      return h("li", null, "Re-planning");
    default:
      return null; // processed, helper_done, plan_attempts: the engine's own bookkeeping
  }
}

/** A step of a workflow or an objective run (kind MESSAGE): what the orchestration decided. */
function orchestrationStep(p, ev) {
  if (p.objective) {
    const items = (p.objective.changes || []).map(objectiveChange).filter(Boolean);
    const c = card("tool", `Objective · ${p.content || `step ${ev.step}`}`, items.length ? h("ul", { class: "changes" }, items) : null);
    if (!items.length) c.kind = "tool system";
    return c;
  }
  const w = p.workflow || {};
  const notes = [
    w.skipped && w.skipped.length ? `skipped ${w.skipped.join(", ")}` : null,
    w.reset && w.reset.length ? `runs again: ${w.reset.join(", ")}` : null,
  ].filter(Boolean);
  if (notes.length) return card("tool", `Workflow · ${notes.join("; ")}`);
  // The workflow's result, as its final output will say again.
  return { ...card("tool", "Workflow · result collected", h("div", { class: "text clip" }, p.content ?? "")), kind: "tool system" };
}

const RENDERERS = {
  RUN_CREATED: (p) => bubble("user", "Task", p.input ?? "",
    p.parent_run_id ? h("div", { class: "muted" }, "Sub-run of ", runLink(p.parent_run_id)) : null),
  RUN_STARTED: (p) => line(`Started by worker ${p.worker} (lease epoch ${p.epoch})`),
  LEASE_RECOVERED: (p) => line(`Lease recovered by worker ${p.worker ?? "?"}: the previous one stopped answering`, "system"),
  PHASE_CHANGED: (p) => line(`Phase ${p.from} → ${p.to}`),
  STEP_STARTED: (p) => line(`Calling ${p.call ? p.call.name : "a tool"} (not idempotent: recorded before it runs)`),
  STEP_RECONCILED: (p) => card(p.decision === "ask" ? "approval" : "good",
    `Recovered ${p.call ? p.call.name : "a tool call"} after a crash: ${{ record: "it had happened, its result is recorded", run: "making the call", ask: "asking a person" }[p.decision] ?? p.decision}`,
    h("div", { class: "text" }, `The tool says: ${(p.outcome || "").replaceAll("_", " ")}. ${p.reason ?? ""}`),
    h("div", { class: "muted" }, `Idempotency key ${p.idempotency_key ?? ""}`)),
  STEP_COMPLETED: (p, ev) => {
    if (p.kind === "MODEL_CALL") {
      const text = p.content ?? (p.tool_calls && p.tool_calls.length ? "" : "(no text)");
      return bubble("assistant", `Model · step ${ev.step}`, text, toolCalls(p.tool_calls), usageLine(p));
    }
    if (p.kind === "TOOL_CALL") {
      const how = p.reconciled ? " · result from reconcile" : p.answered_by ? ` · answered by ${p.answered_by}` : "";
      return card(p.is_error ? "tool bad" : "tool", `Tool ${p.name} · step ${ev.step}${p.is_error ? " · error" : ""}${how}`,
        h("div", { class: "sub" }, "Arguments"), argumentsView(p.arguments ?? {}),
        h("div", { class: "sub" }, p.is_error ? "Error" : "Result"), pre(p.result ?? ""),
        p.child_run_id ? h("div", null, "Sub-run ", runLink(p.child_run_id)) : null);
    }
    if (p.kind === "MESSAGE" && (p.objective || p.workflow)) return orchestrationStep(p, ev);
    return card("", `${p.kind || "Step"} · step ${ev.step}`, pre(p));
  },
  STEP_FAILED: (p, ev) => card("bad", `Step ${ev.step} failed (${p.kind || "step"})`, pre(p.error ?? p)),
  APPROVAL_REQUESTED: (p) => card("approval", h("span", null, "Approval requested for ", h("code", null, p.call.name), " ", riskBadge(p.risk)),
    h("ul", null, (p.reasons || []).map((r) => h("li", null, r))),
    h("div", { class: "sub" }, "Arguments"), pre(p.call.arguments),
    h("div", { class: "muted" }, p.expires_at ? `Expires ${fmtTime(p.expires_at)} · ` : "", link("#/queue", "Decide in the human queue"))),
  APPROVAL_GRANTED: (p) => card("good", `Approved by ${p.by}${p.edited ? " with edited arguments" : ""}`,
    p.reason ? h("div", { class: "text" }, p.reason) : null,
    p.arguments ? [h("div", { class: "sub" }, "Arguments approved"), pre(p.arguments)] : null),
  APPROVAL_REJECTED: (p) => card("bad", p.expired ? "Approval expired: the call was denied" : `Rejected by ${p.by}`,
    p.reason ? h("div", { class: "text" }, p.reason) : null),
  HUMAN_INPUT_REQUESTED: (p) => card("approval", `Needs a person (${p.kind})`, h("div", { class: "text" }, p.question ?? ""),
    p.error ? pre(p.error) : null, p.call ? [h("div", { class: "sub" }, "Call"), pre(p.call)] : null,
    h("div", { class: "muted" }, link("#/queue", "Answer in the human queue"))),
  HUMAN_INPUT_RECEIVED: (p) => card("good", `${p.by}: ${p.action}`,
    p.instructions ? [h("div", { class: "sub" }, "Instructions"), h("div", { class: "text" }, p.instructions)] : null,
    p.answer !== undefined ? [h("div", { class: "sub" }, "Answer"), pre(p.answer)] : null),
  CHILDREN_SPAWNED: (p) => p.workflow
    ? card("tool", `Workflow started ${p.children.map((c) => c.call_id).join(", ")}`,
      h("ul", null, p.children.map((c) => h("li", null, h("strong", null, c.call_id), " (", h("code", null, c.agent), ") → ", runLink(c.run_id)))))
    : card("tool", `Started ${p.children.length} sub-run${p.children.length === 1 ? "" : "s"}`,
      h("ul", null, p.children.map((c) => h("li", null, h("code", null, c.agent), " → ", runLink(c.run_id))))),
  CHILDREN_FINISHED: (p) => card("tool", "Sub-runs finished",
    h("ul", null, p.results.map((r) => h("li", null, runLink(r.run_id), " ", statusBadge(r.status), " ",
      h("div", { class: "text clip" }, r.error ?? r.output ?? ""))))),
  CANCEL_REQUESTED: (p) => line(`Cancel requested${p.by ? ` by ${p.by}` : ""}${p.reason ? `: ${p.reason}` : ""}`, "warn system"),
  POLICY_VIOLATION: (p) => card("bad", `Policy violation: ${p.limit}`, h("div", { class: "text" }, p.reason ?? ""),
    h("div", { class: "muted" }, `limit ${p.limit_value ?? "—"}, observed ${p.observed ?? "—"}`)),
  RUN_COMPLETED: (p) => bubble("final", "Final output", p.output ?? ""),
  RUN_FAILED: (p) => card("bad", "Run failed", pre(p.error ?? p.reason ?? "")),
  RUN_CANCELLED: (p) => card("warn", `Cancelled${p.by ? ` by ${p.by}` : ""}`, h("div", { class: "text" }, p.reason ?? "")),
  RUN_RESUMED: (p) => card("good", `Resumed by ${p.by}`, p.policy ? [h("div", { class: "sub" }, "Limits"), pre(p.policy)] : null),
  RUN_FORKED: (p) => card("", h("span", null, "Forked from ", runLink(p.source_run_id), ` at event ${p.at_seq} by ${p.by}`)),
};

/** On an objective's timeline its steps say which task runs started and what came of them. */
const OBJECTIVE_SYSTEM_EVENTS = new Set(["CHILDREN_SPAWNED", "CHILDREN_FINISHED"]);

/**
 * The <li> for one event. `fork(seq)`, if given, adds a "Fork here" button (operators only); `runKind`
 * is the kind of the event's run (an objective's sub-run starts and ends are system events).
 */
export function eventItem(ev, { fork, runKind } = {}) {
  const render = RENDERERS[ev.type];
  const { kind, body } = render ? render(ev.payload || {}, ev) : card("", ev.type, pre(ev.payload));
  const system = SYSTEM_EVENTS.has(ev.type) || String(kind).split(" ").includes("system")
    || (runKind === "objective" && OBJECTIVE_SYSTEM_EVENTS.has(ev.type));
  const classes = ["ev", ...String(kind).split(" ").filter(Boolean), system ? "system" : null];
  const meta = h("div", { class: "ev-meta" },
    h("span", { class: "mono" }, `#${ev.seq}`),
    h("span", null, ev.type),
    h("time", { datetime: new Date(ev.created_at * 1000).toISOString() }, new Date(ev.created_at * 1000).toLocaleTimeString()));
  if (fork && !TERMINAL_EVENTS.has(ev.type) && ev.type !== "STEP_STARTED") {
    meta.appendChild(h("button", {
      type: "button", class: "secondary small fork", onclick: () => fork(ev.seq),
      "aria-label": `Fork a new run from event ${ev.seq}`,
    }, "Fork here"));
  }
  return h("li", { class: classes.filter(Boolean).join(" "), "data-seq": String(ev.seq), "data-type": ev.type }, meta, body);
}
