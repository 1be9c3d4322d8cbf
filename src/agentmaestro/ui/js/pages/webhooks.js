// Webhooks: the workspace's outgoing notifications (docs/notifications.md). Everyone with a key sees the
// webhooks (target without secrets, format, events, state) and their delivery log (status, attempts, last
// response or error); admins add them (a json webhook's signing secret is shown once), enable or disable
// them, send a test notification and delete them.

import { api, del, get, post } from "../api.js";
import { append, clear, ellipsis, field, fmtAge, fmtTime, h, runLink } from "../dom.js";

const EVENTS = [
  ["approval.requested", "a tool call waits for approval"],
  ["human.requested", "a run waits for a person"],
  ["run.failed", "a run failed"],
  ["run.completed", "a run completed"],
  ["budget.reached", "a budget stopped a run"],
];

const DELIVERY_COLOUR = { pending: "grey", sending: "blue", delivered: "green", failed: "red" };

const hookPath = (id, rest = "") => `/v1/webhooks/${encodeURIComponent(id)}${rest}`;

export function render(main, _route, ctx) {
  let alive = true;
  let hooks = [];
  let selected = null; // the webhook whose delivery log is shown
  const admin = ctx.can("admin");
  const hooksBody = h("tbody");
  const empty = h("p", { class: "muted", hidden: true }, "No webhooks yet.");
  const logTitle = h("h2", { id: "log-title" }, "Delivery log");
  const logHint = h("p", { class: "muted" }, "Choose a webhook to see its deliveries.");
  const logBody = h("tbody");
  const logTable = h("table", { "aria-labelledby": "log-title", hidden: true },
    h("thead", null, h("tr", null, ["When", "Event", "Run", "Status", "Attempts", "HTTP", "Last error", ""].map((c) => h("th", { scope: "col" }, c)))),
    logBody);

  append(main,
    h("h1", null, "Webhooks"),
    h("p", { class: "muted" },
      "Notifications of approvals, runs waiting for a person, failures, completions and budgets, sent as signed JSON, " +
        "to Slack or to Telegram. Targets must be public addresses unless the server allows more."),
    admin ? createForm() : h("p", { class: "notice" }, "Your key can read webhooks and their deliveries; adding and changing them needs an admin key."),
    h("section", { "aria-labelledby": "hooks-title" },
      h("h2", { id: "hooks-title" }, "Webhooks of this workspace"),
      h("table", { "aria-labelledby": "hooks-title" },
        h("thead", null, h("tr", null, ["Name", "Format", "Target", "Events", "State", "Created", ""].map((c) => h("th", { scope: "col" }, c)))),
        hooksBody),
      empty),
    h("section", { "aria-labelledby": "log-title" },
      h("div", { class: "row" }, logTitle,
        h("button", { type: "button", class: "secondary small", onclick: () => loadLog() }, "Refresh")),
      logHint, logTable),
  );

  // ------------------------------------------------------------------------------- create

  function createForm() {
    const name = h("input", { type: "text", name: "webhook-name", required: true, maxlength: "200", placeholder: "e.g. ops channel" });
    const format = h("select", { name: "webhook-format" },
      [["json", "Signed JSON"], ["slack", "Slack incoming webhook"], ["telegram", "Telegram bot"]].map(([v, label]) => h("option", { value: v }, label)));
    const url = h("input", { type: "url", name: "webhook-url", maxlength: "2000", size: "48", placeholder: "https://hooks.example.com/maestro" });
    const botToken = h("input", { type: "password", name: "bot-token", autocomplete: "off", maxlength: "200" });
    const chatId = h("input", { type: "text", name: "chat-id", maxlength: "100", placeholder: "-100123456" });
    const apiBase = h("input", { type: "url", name: "api-base", maxlength: "500", placeholder: "https://api.telegram.org" });
    const boxes = EVENTS.map(([ev, what]) => {
      const box = h("input", { type: "checkbox", name: "event", value: ev, checked: true });
      return h("label", { title: what }, box, " ", h("code", null, ev));
    });
    const urlField = field("URL", url, "Stored encrypted; shown without credentials or query.");
    const telegramFields = h("div", { class: "toolbar", hidden: true },
      field("Bot token", botToken, "Stored encrypted, never shown."), field("Chat id", chatId), field("Bot API base (optional)", apiBase));
    const error = h("p", { class: "error-text", role: "alert" });
    const created = h("div", { "aria-live": "polite" });
    format.addEventListener("change", () => {
      const tg = format.value === "telegram";
      urlField.hidden = tg;
      telegramFields.hidden = !tg;
    });

    async function submit(e) {
      e.preventDefault();
      error.textContent = "";
      const events = boxes.map((l) => l.querySelector("input")).filter((b) => b.checked).map((b) => b.value);
      if (!events.length) {
        error.textContent = "Choose at least one event.";
        return;
      }
      const body = { name: name.value.trim(), format: format.value, events };
      if (format.value === "telegram") {
        body.telegram = { bot_token: botToken.value.trim(), chat_id: chatId.value.trim() };
        if (apiBase.value.trim()) body.telegram.api_base = apiBase.value.trim();
      } else {
        body.url = url.value.trim();
      }
      try {
        const hook = await post("/v1/webhooks", body);
        clear(created);
        if (hook.signing_secret) {
          const code = h("code", { id: "new-signing-secret" }, hook.signing_secret);
          created.appendChild(h("div", { class: "new-key", role: "region", "aria-label": "Signing secret" },
            h("p", null, h("strong", null, `Webhook "${hook.name}" added. `),
              "Its signing secret is shown only now: give it to the receiver to verify X-Maestro-Signature."),
            h("p", null, code),
            h("button", { type: "button", class: "small", onclick: () => clear(created) }, "I have stored it")));
        }
        name.value = "";
        url.value = "";
        botToken.value = "";
        ctx.announce(`Added webhook ${hook.name}`);
        ctx.toast(`Added webhook ${hook.name}`);
        selected = hook.webhook_id;
        await loadHooks();
      } catch (err) {
        error.textContent = `Cannot add the webhook: ${err.message}`;
      }
    }

    return h("section", { class: "panel", "aria-labelledby": "add-title" },
      h("h2", { id: "add-title" }, "Add a webhook"),
      h("form", { onsubmit: submit },
        h("div", { class: "toolbar" }, field("Name", name), field("Format", format), urlField),
        telegramFields,
        h("fieldset", { class: "row" }, h("legend", null, "Events"), boxes),
        h("button", { type: "submit" }, "Add webhook")),
      error, created);
  }

  // ------------------------------------------------------------------------------- list

  function actions(hook) {
    const cell = h("td");
    const logButton = h("button", {
      type: "button", class: "secondary small", "data-log": "", "aria-pressed": String(hook.webhook_id === selected),
      onclick: () => select(hook.webhook_id),
    }, "Deliveries");
    append(cell, logButton);
    if (!admin) return cell;
    const toggle = h("button", { type: "button", class: "secondary small", onclick: async () => {
      try {
        await api("PATCH", hookPath(hook.webhook_id), { enabled: !hook.enabled });
        ctx.announce(`${hook.enabled ? "Disabled" : "Enabled"} webhook ${hook.name}`);
        await loadHooks();
      } catch (err) {
        ctx.fail(err, "Cannot change the webhook");
      }
    } }, hook.enabled ? "Disable" : "Enable");
    const test = h("button", { type: "button", class: "secondary small", disabled: !hook.enabled, onclick: async () => {
      try {
        await post(hookPath(hook.webhook_id, "/test"));
        ctx.toast(`Test notification queued for ${hook.name}`);
        select(hook.webhook_id);
        setTimeout(() => alive && loadLog(), 1500);
      } catch (err) {
        ctx.fail(err, "Cannot send a test");
      }
    } }, "Send test");
    const confirm = h("button", { type: "button", class: "danger small", hidden: true, onclick: async () => {
      try {
        await del(hookPath(hook.webhook_id));
        ctx.toast(`Deleted ${hook.name}`);
        ctx.announce(`Deleted webhook ${hook.name}`);
        if (selected === hook.webhook_id) selected = null;
        await loadHooks();
      } catch (err) {
        ctx.fail(err, "Cannot delete");
      }
    } }, `Confirm: delete ${hook.name}`);
    const keep = h("button", { type: "button", class: "secondary small", hidden: true, onclick: () => {
      confirm.hidden = true; keep.hidden = true; ask.hidden = false; ask.focus();
    } }, "Keep");
    const ask = h("button", { type: "button", class: "secondary small", onclick: () => {
      ask.hidden = true; confirm.hidden = false; keep.hidden = false; confirm.focus();
    } }, "Delete");
    append(cell, " ", toggle, " ", test, " ", ask, " ", confirm, " ", keep);
    return cell;
  }

  function hookRow(hook) {
    const state = hook.enabled
      ? h("span", { class: "badge st-green" }, "enabled")
      : h("span", { class: "badge st-dim" }, "disabled");
    return h("tr", { "data-webhook-id": hook.webhook_id, "data-enabled": String(hook.enabled) },
      h("th", { scope: "row" }, ellipsis(hook.name)),
      h("td", null, hook.format),
      h("td", { class: "mono truncate", title: hook.url_display }, hook.url_display),
      h("td", null, hook.events.map((ev) => h("code", { class: "event" }, ev)).flatMap((c, i) => (i ? [", ", c] : [c]))),
      h("td", null, state),
      h("td", { title: fmtTime(hook.created_at) }, fmtAge(hook.created_at), hook.created_by ? ` by ${hook.created_by}` : ""),
      actions(hook));
  }

  async function loadHooks() {
    try {
      hooks = await get("/v1/webhooks");
      if (!alive) return;
      if (selected && !hooks.some((w) => w.webhook_id === selected)) selected = null;
      if (!selected && hooks.length) selected = hooks[0].webhook_id;
      append(clear(hooksBody), hooks.map(hookRow));
      empty.hidden = hooks.length > 0;
      await loadLog();
    } catch (err) {
      ctx.fail(err, "Cannot list webhooks");
    }
  }

  // ------------------------------------------------------------------------------- delivery log

  function select(webhookId) {
    selected = webhookId;
    for (const tr of hooksBody.querySelectorAll("tr")) {
      const button = tr.querySelector("[data-log]");
      if (button) button.setAttribute("aria-pressed", String(tr.dataset.webhookId === webhookId));
    }
    loadLog();
  }

  function deliveryRow(hook, d) {
    const code = d.last_status_code === null || d.last_status_code === undefined ? "" : String(d.last_status_code);
    let redeliver = "";
    if (admin && (d.status === "delivered" || d.status === "failed")) {
      redeliver = h("button", { type: "button", class: "secondary small", onclick: async () => {
        try {
          await post(hookPath(hook.webhook_id, `/deliveries/${encodeURIComponent(d.delivery_id)}/redeliver`));
          ctx.toast("Queued again");
          loadLog();
        } catch (err) {
          ctx.fail(err, "Cannot redeliver");
        }
      } }, "Redeliver");
    }
    return h("tr", { "data-delivery-id": d.delivery_id, "data-status": d.status },
      h("td", { title: fmtTime(d.created_at) }, fmtAge(d.created_at)),
      h("td", null, h("code", null, d.event)),
      h("td", null, d.run_id ? runLink(d.run_id) : ""),
      h("td", null, h("span", { class: `badge st-${DELIVERY_COLOUR[d.status] || "grey"}` }, d.status)),
      h("td", { class: "num" }, String(d.attempts)),
      h("td", { class: "num" }, code),
      h("td", { class: "delivery-error" }, d.last_error || ""),
      h("td", null, redeliver));
  }

  async function loadLog() {
    const hook = hooks.find((w) => w.webhook_id === selected);
    if (!hook) {
      logTitle.textContent = "Delivery log";
      logHint.textContent = hooks.length ? "Choose a webhook to see its deliveries." : "";
      logTable.hidden = true;
      return;
    }
    try {
      const rows = await get(hookPath(hook.webhook_id, "/deliveries"), { limit: 50 });
      if (!alive || selected !== hook.webhook_id) return;
      logTitle.textContent = `Delivery log: ${hook.name}`;
      logHint.textContent = rows.length ? "The latest 50, newest first." : "No deliveries yet.";
      append(clear(logBody), rows.map((d) => deliveryRow(hook, d)));
      logTable.hidden = rows.length === 0;
    } catch (err) {
      ctx.fail(err, "Cannot read the delivery log");
    }
  }

  loadHooks();
  const timer = setInterval(() => {
    if (alive && selected) loadLog();
  }, 5000);
  return () => {
    alive = false;
    clearInterval(timer);
  };
}
