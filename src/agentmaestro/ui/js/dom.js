// DOM helpers. Everything the dashboard shows is built with these: data becomes text nodes
// (textContent), never HTML: no HTML-parsing sink is used anywhere in the dashboard (a test checks).

const PROPS = new Set(["value", "checked", "selected", "disabled", "indeterminate"]);

function safeHref(value) {
  const v = String(value);
  // Only in-app routes and same-origin paths: never javascript:, data: or another origin.
  if (v.startsWith("#") || (v.startsWith("/") && !v.startsWith("//"))) return v;
  throw new Error(`refusing link target ${JSON.stringify(v)}`);
}

function setProps(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "text") el.textContent = String(value);
    else if (key.startsWith("on")) {
      if (typeof value !== "function") throw new Error(`${key} must be a function`);
      el.addEventListener(key.slice(2), value);
    } else if (PROPS.has(key)) el[key] = value;
    else if (key === "href") el.setAttribute("href", safeHref(value));
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

/** Append children: nodes as they are, anything else as a text node. */
export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** h("button", {class: "ok", onclick}, "Approve") */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  return append(el, ...children);
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element. */
export function svg(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setProps(el, props);
  return append(el, ...children);
}

/** Remove every child. */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** A link to an in-app route. */
export function link(route, text, props = {}) {
  return h("a", { ...props, href: route }, text);
}

export const runHref = (runId) => `#/runs/${encodeURIComponent(runId)}`;

/** A run id, shortened for tables, with the full id for screen readers and the tooltip. */
export function runLink(runId) {
  const short = runId.length > 16 ? `${runId.slice(0, 8)}…${runId.slice(-6)}` : runId;
  return h("a", { href: runHref(runId), class: "mono", title: runId, "aria-label": `run ${runId}` }, short);
}

// ------------------------------------------------------------------------------- statuses

/** Colour of a run status, or of a workflow task status (for when workflows exist). */
export const STATUS_COLOUR = {
  PENDING: "grey",
  RUNNING: "blue",
  WAITING_FOR_APPROVAL: "orange",
  WAITING_FOR_HUMAN: "yellow",
  WAITING_FOR_CHILDREN: "purple",
  COMPLETED: "green",
  FAILED: "red",
  CANCELLED: "dim",
  // workflow node statuses (core/events.py apply_workflow), and "waiting_human" for a node whose run waits
  pending: "grey",
  running: "blue",
  completed: "green",
  skipped: "dim",
  planned: "grey",
  ready: "slate",
  active: "blue",
  awaiting_qa: "orange",
  complete: "green",
  failed: "red",
  waiting_human: "yellow",
  abandoned: "dim",
};

export const RUN_STATUSES = [
  "PENDING", "RUNNING", "WAITING_FOR_APPROVAL", "WAITING_FOR_HUMAN", "WAITING_FOR_CHILDREN",
  "COMPLETED", "FAILED", "CANCELLED",
];

export const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

export function statusBadge(status) {
  return h("span", { class: `badge st-${STATUS_COLOUR[status] || "grey"}`, "data-status": status }, status);
}

export function riskBadge(risk) {
  return h("span", { class: `badge risk-${risk}` }, risk);
}

// ------------------------------------------------------------------------------- formatting

export function fmtInt(n) {
  return Number(n || 0).toLocaleString("en-US");
}

export function fmtCost(usd) {
  const v = Number(usd || 0);
  if (v === 0) return "$0";
  if (v < 0.01) return `$${v.toFixed(4)}`;
  return `$${v.toFixed(2)}`;
}

export function fmtAge(ts, now = Date.now() / 1000) {
  if (!ts) return "";
  const s = Math.max(0, Math.round(now - ts));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function fmtTime(ts) {
  return ts ? new Date(ts * 1000).toLocaleString() : "";
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  return `${Math.round(seconds / 60)} min`;
}

/** A value as pretty JSON (strings as they are). */
export function asText(value) {
  if (typeof value === "string") return value;
  return JSON.stringify(value, null, 2);
}

/** Long text cut with an ellipsis to fit its box (CSS), the full text in the tooltip. */
export function ellipsis(text, props = {}) {
  const t = String(text ?? "");
  return h("span", { ...props, class: ["ellipsis", props.class], title: t }, t);
}

/**
 * A long model string or path made readable: `scripted:/a/b/c/agents/scripts/x.yaml` reads
 * `scripted:…/scripts/x.yaml` (the part that tells them apart). Short text is left as it is.
 */
export function compactName(text, max = 36) {
  const t = String(text ?? "");
  if (t.length <= max || !t.includes("/")) return t;
  const colon = t.indexOf(":");
  const prefix = colon > 0 && colon < t.indexOf("/") ? t.slice(0, colon + 1) : "";
  const parts = t.slice(prefix.length).split("/").filter(Boolean);
  return `${prefix}…/${parts.slice(-2).join("/")}`;
}

/** A long name (model string, path) as compactName, cut with an ellipsis if still too wide, in full on hover. */
export function longName(text, props = {}) {
  const t = String(text ?? "");
  // Where it may wrap (where a box lets it): after each slash.
  const parts = compactName(t).split(/(?<=\/)/).flatMap((part, i) => (i ? [h("wbr"), part] : [part]));
  return h("span", { ...props, class: ["ellipsis", props.class], title: t }, parts);
}

/** `text` shortened to `max` characters by cutting its middle (for canvas labels, which CSS cannot cut). */
export function shorten(text, max = 32) {
  const t = String(text ?? "");
  if (t.length <= max) return t;
  const tail = Math.ceil((max - 1) * 0.6);
  return `${t.slice(0, max - 1 - tail)}…${t.slice(-tail)}`;
}

/**
 * The page for something that does not exist (or is in another workspace): a heading, what was asked
 * for, and where to go instead.
 */
export function notFound(main, what, id, message) {
  clear(main);
  append(main, h("section", { class: "panel not-found", "data-testid": "not-found" },
    h("h1", null, `${what} not found`),
    h("p", null, "There is no ", what.toLowerCase(), " ", h("code", null, id), what === "Page" ? " in the dashboard." : " in this workspace."),
    message ? h("p", { class: "muted" }, message) : null,
    h("p", null, h("a", { href: "#/runs" }, "Back to the runs"))));
  document.title = `${what} not found · AgentMaestro`;
}

/** <pre> holding text or pretty JSON. */
export function pre(value, props = {}) {
  return h("pre", props, asText(value));
}

/** <dl> from [label, value] pairs (values may be nodes). */
export function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(Boolean).flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
}

/** A labelled form field. */
let fieldSeq = 0;
export function field(label, control, hint) {
  const id = control.id || `f${++fieldSeq}`;
  control.id = id;
  const hintEl = hint ? h("span", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hintEl);
}

/** Run a function at most once per `ms`, after the last call. */
export function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

/**
 * Run `fn` at most once per `ms`: the first call runs it after `delay` ms, calls during the wait are
 * folded into that one, and a call while it runs schedules one more. Keeps a busy workspace from
 * turning every event into a request.
 */
export function throttle(fn, ms, delay = 150) {
  let timer = null;
  let running = false;
  let again = false;
  let last = 0;
  const wrapped = () => {
    if (running) {
      again = true;
      return;
    }
    if (timer) return;
    const wait = Math.max(delay, ms - (Date.now() - last));
    timer = setTimeout(async () => {
      timer = null;
      running = true;
      last = Date.now();
      try {
        await fn();
      } finally {
        running = false;
        if (again) {
          again = false;
          wrapped();
        }
      }
    }, wait);
  };
  wrapped.cancel = () => {
    clearTimeout(timer);
    timer = null;
    again = false;
  };
  return wrapped;
}
