// Human queue: tool calls held for approval and runs escalated to a person, across the workspace.
// Operators approve (optionally with edited arguments) or reject with a reason; they retry an
// escalation with instructions, answer it in place of the step, or abandon the run.

import { get, post } from "../api.js";
import { append, clear, fmtAge, fmtTime, h, pre, riskBadge, runLink, throttle } from "../dom.js";

const PAGE = 50;

/** The first ``count`` pages of a paged list: its items, and the cursor of the page after them (or null). */
async function fetchPages(path, key, count) {
  const items = [];
  let cursor;
  for (let i = 0; i < count; i += 1) {
    const page = await get(path, { limit: PAGE, cursor });
    items.push(...page[key]);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return { items, next: cursor || null };
}

export function render(main, _route, ctx) {
  let alive = true;
  const approvalsBox = h("div");
  const requestsBox = h("div");
  const approvalsTitle = h("h2", { id: "approvals-title" }, "Approvals");
  const requestsTitle = h("h2", { id: "requests-title" }, "Escalations");
  // Each list is paged (newest first, PAGE at a time); "Load more" walks one more page, and a live
  // refresh reloads as many pages as are shown.
  const pages = { approvals: 1, requests: 1 };
  // The buttons are in the page only while there is a next page.
  const moreApprovals = h("button", { type: "button", class: "secondary", onclick: () => { pages.approvals += 1; load(); } }, "Load more approvals");
  const moreRequests = h("button", { type: "button", class: "secondary", onclick: () => { pages.requests += 1; load(); } }, "Load more escalations");
  const approvalsMore = h("div", { class: "row" });
  const requestsMore = h("div", { class: "row" });
  append(main,
    h("h1", null, "Human queue"),
    ctx.can("operator") ? null : h("p", { class: "notice" }, "Your key is a viewer key: you can see the queue; deciding needs the operator role."),
    h("section", { "aria-labelledby": "approvals-title" }, approvalsTitle, approvalsBox, approvalsMore),
    h("section", { "aria-labelledby": "requests-title" }, requestsTitle, requestsBox, requestsMore),
  );

  async function decide(item, approval, body, done) {
    const buttons = item.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await post(`/v1/approvals/${encodeURIComponent(approval.approval_id)}`, body);
      done(body.decision === "approve" ? `Approved ${approval.tool}` : `Rejected ${approval.tool}`);
    } catch (err) {
      ctx.fail(err, `Cannot ${body.decision}`);
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  function finished(message) {
    ctx.announce(message);
    ctx.toast(message);
    load();
    ctx.refreshCounts();
  }

  /** "janitor: tidy the disk", filled in when the run has been read. */
  function runSummary(runId) {
    const el = h("span", { class: "muted truncate" });
    get(`/v1/runs/${encodeURIComponent(runId)}`).then((run) => {
      el.textContent = `${run.agent}: ${run.input}`;
      el.title = run.input;
    }).catch(() => {});
    return el;
  }

  function approvalItem(a) {
    const item = h("article", { class: "panel queue-item", "data-approval-id": a.approval_id, "aria-labelledby": `t-${a.approval_id}` },
      h("header", null,
        h("h3", { id: `t-${a.approval_id}` }, "Call ", h("code", null, a.tool)),
        riskBadge(a.risk),
        h("span", null, "run ", runLink(a.run_id), ` · step ${a.step_index}`),
        runSummary(a.run_id),
        h("span", { class: "muted" }, `requested ${fmtAge(a.requested_at)}`, a.expires_at ? ` · expires ${fmtTime(a.expires_at)}` : "")),
      h("div", { class: "sub" }, "Why it is held"),
      h("ul", null, (a.reasons || []).map((r) => h("li", null, r))),
      h("div", { class: "sub" }, "Exact arguments"),
      pre(a.arguments, { "aria-label": `arguments of ${a.tool}` }));
    if (!ctx.can("operator")) return item;

    const reason = h("input", { type: "text", id: `reason-${a.approval_id}`, name: "reason", placeholder: "optional for approval" });
    const edited = h("textarea", { id: `args-${a.approval_id}`, name: "arguments", rows: "5" }, JSON.stringify(a.arguments, null, 2));
    const editError = h("p", { class: "error-text", role: "alert" });
    item.appendChild(h("div", { class: "decide" },
      h("div", null,
        h("label", { for: reason.id }, "Reason (recorded in the audit log)"), reason,
        h("div", { class: "actions" },
          h("button", { type: "button", class: "ok", onclick: () => decide(item, a, { decision: "approve", reason: reason.value }, finished) }, "Approve"),
          h("button", { type: "button", class: "danger", onclick: () => decide(item, a, { decision: "reject", reason: reason.value || "rejected from the dashboard" }, finished) }, "Reject"))),
      h("div", { class: "edit" },
        h("label", { for: edited.id }, "Edit arguments (JSON object)"), edited, editError,
        h("div", { class: "actions" },
          h("button", {
            type: "button", class: "secondary", onclick: () => {
              let args;
              try {
                args = JSON.parse(edited.value);
              } catch (err) {
                editError.textContent = `Not valid JSON: ${err.message}`;
                edited.focus();
                return;
              }
              if (args === null || typeof args !== "object" || Array.isArray(args)) {
                editError.textContent = "The arguments must be a JSON object.";
                edited.focus();
                return;
              }
              editError.textContent = "";
              decide(item, a, { decision: "approve", reason: reason.value, arguments: args }, finished);
            },
          }, "Approve with these arguments")))));
    item.appendChild(h("p", { class: "muted" }, "An approval binds to the exact tool and arguments approved (hash ",
      h("code", null, a.args_hash.slice(0, 12)), "…); edited arguments are re-hashed."));
    return item;
  }

  function requestItem(r) {
    const item = h("article", { class: "panel queue-item escalation", "data-request-id": r.request_id, "aria-labelledby": `t-${r.request_id}` },
      h("header", null,
        h("h3", { id: `t-${r.request_id}` }, r.kind.replaceAll("_", " ")),
        h("span", null, "run ", runLink(r.run_id)),
        runSummary(r.run_id),
        h("span", { class: "muted" }, `asked ${fmtAge(r.created_at)}`)),
      h("p", { class: "output-box" }, r.question),
      h("details", null, h("summary", null, "Details"), pre(r.detail)));
    if (!ctx.can("operator")) return item;

    const instructions = h("textarea", { id: `instr-${r.request_id}`, rows: "3", placeholder: "optional guidance for the retry" });
    const answer = h("textarea", { id: `answer-${r.request_id}`, rows: "3", placeholder: "the step's result, in its place" });
    const resolve = async (body, message) => {
      item.querySelectorAll("button").forEach((b) => { b.disabled = true; });
      try {
        await post(`/v1/human-requests/${encodeURIComponent(r.request_id)}`, body);
        finished(message);
      } catch (err) {
        ctx.fail(err, `Cannot ${body.action}`);
        item.querySelectorAll("button").forEach((b) => { b.disabled = false; });
      }
    };
    item.appendChild(h("div", { class: "decide three" },
      h("div", null, h("label", { for: instructions.id }, "Retry with instructions"), instructions,
        h("div", { class: "actions" }, h("button", { type: "button", onclick: () => resolve({ action: "retry", instructions: instructions.value || null }, "Retrying") }, "Retry"))),
      h("div", null, h("label", { for: answer.id }, "Answer"), answer,
        h("div", { class: "actions" }, h("button", { type: "button", class: "ok", onclick: () => resolve({ action: "answer", answer: answer.value }, "Answered") }, "Answer"))),
      h("div", null, h("p", { class: "muted" }, "Abandon ends the run as failed."),
        h("div", { class: "actions" }, h("button", { type: "button", class: "danger", onclick: () => resolve({ action: "abandon" }, "Abandoned") }, "Abandon")))));
    return item;
  }

  // Cards are keyed by id and kept while pending, so typing in one survives a live refresh.
  function sync(box, items, idOf, build, attr, empty) {
    const ids = new Set(items.map(idOf));
    for (const el of [...box.children]) if (!ids.has(el.getAttribute(attr))) el.remove();
    for (const it of items) {
      if (!box.querySelector(`[${attr}="${CSS.escape(idOf(it))}"]`)) box.appendChild(build(it));
    }
    if (!items.length) clear(box).appendChild(h("p", { class: "muted", [attr]: "" }, empty));
  }

  async function load() {
    try {
      const [a, r] = await Promise.all([
        fetchPages("/v1/approvals", "approvals", pages.approvals),
        fetchPages("/v1/human-requests", "human_requests", pages.requests),
      ]);
      if (!alive) return;
      const [approvals, requests] = [a.items, r.items];
      approvalsTitle.textContent = `Approvals (${approvals.length}${a.next ? "+" : ""})`;
      requestsTitle.textContent = `Escalations (${requests.length}${r.next ? "+" : ""})`;
      clear(approvalsMore);
      if (a.next) approvalsMore.appendChild(moreApprovals);
      clear(requestsMore);
      if (r.next) requestsMore.appendChild(moreRequests);
      sync(approvalsBox, approvals, (a) => a.approval_id, approvalItem, "data-approval-id", "No tool call is waiting for approval.");
      sync(requestsBox, requests, (r) => r.request_id, requestItem, "data-request-id", "No run is waiting for a person.");
    } catch (err) {
      ctx.fail(err, "Cannot load the queue");
    }
  }

  const loadSoon = throttle(load, 1000);
  const onEvent = (e) => {
    if (/^(APPROVAL_|HUMAN_INPUT_|RUN_)/.test(e.detail.type)) loadSoon();
  };
  ctx.bus.addEventListener("event", onEvent);
  const timer = setInterval(load, 10000);
  load();
  return () => {
    alive = false;
    clearInterval(timer);
    loadSoon.cancel();
    ctx.bus.removeEventListener("event", onEvent);
  };
}
