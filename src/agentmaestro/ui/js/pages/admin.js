// Keys and audit (admins): list, create (the new key is shown once) and revoke API keys; read the
// tail of the hash-chained audit log and check the chain.

import { del, get, post } from "../api.js";
import { append, clear, ellipsis, field, fmtAge, fmtTime, h, pre } from "../dom.js";

export function render(main, _route, ctx) {
  main.appendChild(h("h1", null, "Keys & audit"));
  if (!ctx.can("admin")) {
    main.appendChild(h("p", { class: "notice" }, "Managing keys and reading the audit log needs an admin key."));
    return null;
  }
  let alive = true;
  const keysBody = h("tbody");
  const created = h("div", { "aria-live": "polite" });
  const name = h("input", { type: "text", name: "key-name", required: true, maxlength: "200", placeholder: "e.g. ci-bot" });
  const role = h("select", { name: "key-role" }, ["viewer", "operator", "admin"].map((r) => h("option", { value: r, selected: r === "operator" }, r)));
  const error = h("p", { class: "error-text", role: "alert" });
  const chain = h("p", { role: "status" });
  const auditBody = h("tbody");

  append(main,
    h("section", { class: "panel", "aria-labelledby": "create-title" },
      h("h2", { id: "create-title" }, "Create a key"),
      h("form", { class: "toolbar", onsubmit: create }, field("Name", name), field("Role", role), h("button", { type: "submit" }, "Create key")),
      error, created),
    h("section", { "aria-labelledby": "keys-title" },
      h("h2", { id: "keys-title" }, "API keys"),
      h("table", null,
        h("thead", null, h("tr", null, ["Name", "Role", "Prefix", "Created", "Created by", "Last used", "State", ""].map((c) => h("th", { scope: "col" }, c)))),
        keysBody)),
    h("section", { "aria-labelledby": "audit-title" },
      h("h2", { id: "audit-title" }, "Audit log (latest 50)"), chain,
      h("table", null,
        h("thead", null, h("tr", null, ["#", "When", "Actor", "Action", "Target", "Detail"].map((c) => h("th", { scope: "col" }, c)))),
        auditBody)),
  );

  async function create(e) {
    e.preventDefault();
    error.textContent = "";
    try {
      const key = await post("/v1/keys", { name: name.value.trim(), role: role.value });
      const code = h("code", { id: "new-key-value" }, key.key);
      const copy = h("button", {
        type: "button", class: "secondary small", onclick: async () => {
          try {
            await navigator.clipboard.writeText(key.key);
            ctx.toast("Copied");
          } catch {
            getSelection().selectAllChildren(code);
            ctx.toast("Selected: press Ctrl+C to copy");
          }
        },
      }, "Copy");
      clear(created).appendChild(h("div", { class: "new-key", role: "region", "aria-label": "New key" },
        h("p", null, h("strong", null, `New ${key.role} key "${key.name}". `), "It is shown only now and stored only as a hash: copy it somewhere safe."),
        h("p", null, code, " ", copy),
        h("button", { type: "button", class: "small", onclick: () => clear(created) }, "I have stored it")));
      name.value = "";
      ctx.announce(`Created key ${key.name}`);
      loadKeys();
    } catch (err) {
      error.textContent = `Cannot create the key: ${err.message}`;
    }
  }

  function keyRow(k) {
    const state = k.revoked_at ? `revoked ${fmtAge(k.revoked_at)}` : "active";
    const cell = h("td");
    if (!k.revoked_at && k.key_id !== ctx.me.key_id) {
      const confirm = h("button", { type: "button", class: "danger small", hidden: true, onclick: async () => {
        try {
          await del(`/v1/keys/${encodeURIComponent(k.key_id)}`);
          ctx.toast(`Revoked ${k.name}`);
          ctx.announce(`Revoked key ${k.name}`);
          loadKeys();
          loadAudit();
        } catch (err) {
          ctx.fail(err, "Cannot revoke");
        }
      } }, `Confirm: revoke ${k.name}`);
      const keep = h("button", { type: "button", class: "secondary small", hidden: true, onclick: () => {
        confirm.hidden = true; keep.hidden = true; ask.hidden = false; ask.focus();
      } }, "Keep");
      const ask = h("button", { type: "button", class: "secondary small", onclick: () => {
        ask.hidden = true; confirm.hidden = false; keep.hidden = false; confirm.focus();
      } }, "Revoke");
      append(cell, ask, " ", confirm, " ", keep);
    } else if (k.key_id === ctx.me.key_id) {
      append(cell, h("span", { class: "muted" }, "this key"));
    }
    return h("tr", { "data-key-id": k.key_id },
      h("th", { scope: "row" }, ellipsis(k.name)), h("td", null, k.role), h("td", { class: "mono" }, `${k.prefix}…`),
      h("td", { title: fmtTime(k.created_at) }, fmtAge(k.created_at)), h("td", null, k.created_by || ""),
      h("td", null, k.last_used_at ? fmtAge(k.last_used_at) : "never"), h("td", null, state), cell);
  }

  async function loadKeys() {
    try {
      const keys = await get("/v1/keys");
      if (alive) append(clear(keysBody), keys.map(keyRow));
    } catch (err) {
      ctx.fail(err, "Cannot list keys");
    }
  }

  async function loadAudit() {
    try {
      const report = await get("/v1/audit/verify");
      if (!alive) return;
      chain.textContent = report.ok
        ? `Chain verified: ${report.entries} entries, intact.`
        : `Chain BROKEN at entry ${report.broken_seq}: ${report.reason}`;
      chain.className = report.ok ? "muted" : "error-text";
      const page = await get("/v1/audit", { after: Math.max(0, report.head_seq - 50), limit: 50 });
      if (!alive) return;
      append(clear(auditBody), page.entries.reverse().map((e) => h("tr", null,
        h("td", { class: "num" }, String(e.seq)), h("td", { title: fmtTime(e.at) }, fmtAge(e.at)), h("td", null, e.actor),
        h("td", null, h("code", null, e.action)), h("td", { class: "mono" }, e.target || ""),
        h("td", null, Object.keys(e.detail || {}).length ? h("details", null, h("summary", null, "detail"), pre(e.detail)) : ""))));
    } catch (err) {
      ctx.fail(err, "Cannot read the audit log");
    }
  }

  loadKeys();
  loadAudit();
  return () => {
    alive = false;
  };
}
