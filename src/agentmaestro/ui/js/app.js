// The dashboard shell: sign-in, role, navigation, routing, the live firehose and the queue counts.

import { ApiError, firehose, get, session } from "./api.js";
import { clear, field, h, notFound, throttle } from "./dom.js";
import * as runsPage from "./pages/runs.js";
import * as runPage from "./pages/run.js";
import * as queuePage from "./pages/queue.js";
import * as newRunPage from "./pages/newrun.js";
import * as graphPage from "./pages/graph.js";
import * as usagePage from "./pages/usage.js";
import * as catalogPage from "./pages/catalog.js";
import * as adminPage from "./pages/admin.js";
import * as webhooksPage from "./pages/webhooks.js";

const ROLES = ["viewer", "operator", "admin"];

const ROUTES = [
  { pattern: /^\/runs\/([^/]+)$/, page: runPage, nav: "runs" },
  { pattern: /^\/runs$/, page: runsPage, nav: "runs" },
  { pattern: /^\/queue$/, page: queuePage, nav: "queue" },
  { pattern: /^\/new$/, page: newRunPage, nav: "new" },
  { pattern: /^\/graph(?:\/([^/]+))?$/, page: graphPage, nav: "graph" },
  { pattern: /^\/usage$/, page: usagePage, nav: "usage" },
  { pattern: /^\/catalog$/, page: catalogPage, nav: "catalog" },
  { pattern: /^\/admin$/, page: adminPage, nav: "admin" },
  { pattern: /^\/webhooks$/, page: webhooksPage, nav: "webhooks" },
];

const main = document.getElementById("main");
const announcer = document.getElementById("announcer");
const toasts = document.getElementById("toasts");

/** What every page gets. */
const ctx = {
  me: null, // {key_id, key_name, role}
  workspace: null,
  bus: new EventTarget(), // "event" (a run event from the firehose), "live" (firehose state)
  live: false,
  can(role) {
    return this.me !== null && ROLES.indexOf(this.me.role) >= ROLES.indexOf(role);
  },
  /** Tell screen-reader users (politely) what just happened. */
  announce(message) {
    announcer.textContent = "";
    setTimeout(() => {
      announcer.textContent = message;
    }, 30);
  },
  /** A short visible message; errors stay longer. */
  toast(message, { error = false } = {}) {
    const el = h("div", { class: error ? "toast error" : "toast", role: error ? "alert" : "status" }, message);
    toasts.appendChild(el);
    setTimeout(() => el.remove(), error ? 8000 : 3500);
  },
  /** Report a failed API call. */
  fail(err, what) {
    const message = err instanceof ApiError ? err.message : String(err && err.message ? err.message : err);
    this.toast(`${what}: ${message}`, { error: true });
  },
  navigate(route) {
    location.hash = route;
  },
  refreshCounts: () => refreshCounts(),
};

// ------------------------------------------------------------------------------- sign-in

function renderSignIn(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("session").hidden = true;
  const input = h("input", {
    type: "password",
    name: "api-key",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    placeholder: "am_...",
  });
  const error = h("p", { class: "error-text", role: "alert" }, message || "");
  const form = h(
    "form",
    {
      class: "panel signin",
      "aria-labelledby": "signin-title",
      onsubmit: async (e) => {
        e.preventDefault();
        const key = input.value.trim();
        if (!key) return;
        try {
          await signIn(key);
        } catch (err) {
          error.textContent = err instanceof ApiError && err.status === 401 ? "That key is invalid or revoked." : `Cannot sign in: ${err.message}`;
          input.focus();
        }
      },
    },
    h("h1", { id: "signin-title" }, "Sign in"),
    h(
      "p",
      { class: "muted" },
      "Paste an API key. It stays in this browser tab only (session storage) and is sent as a bearer " +
        "token with each request. ",
      h("code", null, "maestro serve"), " prints an admin key on its first start; ",
      h("code", null, "maestro keys create"), " makes more.",
    ),
    field("API key", input),
    error,
    h("button", { type: "submit" }, "Sign in"),
  );
  clear(main).appendChild(form);
  input.focus();
}

async function signIn(key) {
  const ws = await get("/v1/workspace", null, { key });
  session.set(key);
  start(ws);
}

function signOut(message) {
  session.clear();
  stopLive();
  ctx.me = null;
  ctx.workspace = null;
  if (location.hash !== "#/runs") history.replaceState(null, "", "#/runs");
  renderSignIn(message);
}

// ------------------------------------------------------------------------------- live data

let stream = null;
let countsTimer = null;

function setLiveState(state) {
  ctx.live = state === "live";
  const el = document.getElementById("live-state");
  el.className = `live-state ${ctx.live ? "live" : "down"}`;
  el.textContent = ctx.live ? "Live" : "Reconnecting…";
  ctx.bus.dispatchEvent(new CustomEvent("live", { detail: state }));
  if (state === "unauthorized") signOut("The key was revoked or is no longer valid.");
}

const COUNT_EVENTS = new Set([
  "APPROVAL_REQUESTED", "APPROVAL_GRANTED", "APPROVAL_REJECTED", "HUMAN_INPUT_REQUESTED", "HUMAN_INPUT_RECEIVED",
  "RUN_CANCELLED", "RUN_FAILED", "RUN_COMPLETED",
]);

function startLive() {
  stopLive();
  stream = firehose({
    onEvent: (ev) => {
      ctx.bus.dispatchEvent(new CustomEvent("event", { detail: ev }));
      if (COUNT_EVENTS.has(ev.type)) refreshCountsSoon();
    },
    onState: setLiveState,
  });
  countsTimer = setInterval(refreshCounts, 15000);
  refreshCounts();
}

function stopLive() {
  if (stream) stream.close();
  stream = null;
  clearInterval(countsTimer);
}

const refreshCountsSoon = throttle(() => refreshCounts(), 1000);
let countsInFlight = false;
async function refreshCounts() {
  if (countsInFlight || !session.key) return;
  countsInFlight = true;
  try {
    const [a, r] = await Promise.all([get("/v1/approvals", { limit: 100 }), get("/v1/human-requests", { limit: 100 })]);
    const n = a.approvals.length + r.human_requests.length;
    const more = a.next_cursor || r.next_cursor ? "+" : "";
    const badge = document.getElementById("queue-count");
    badge.hidden = n === 0;
    badge.textContent = `${n}${more}`;
    badge.setAttribute("aria-label", `${n}${more ? " or more" : ""} pending`);
    ctx.bus.dispatchEvent(new CustomEvent("counts", { detail: { approvals: a.approvals, requests: r.human_requests } }));
  } catch {
    /* shown on the next successful refresh */
  } finally {
    countsInFlight = false;
  }
}

// ------------------------------------------------------------------------------- routing

let cleanup = null;

function start(ws) {
  ctx.workspace = ws;
  ctx.me = ws.caller;
  document.getElementById("nav").hidden = false;
  document.getElementById("session").hidden = false;
  const who = document.getElementById("whoami");
  who.textContent = `${ws.caller.key_name} (${ws.caller.role})`;
  who.title = `key ${ws.caller.key_name}, role ${ws.caller.role}, workspace ${ws.name}`;
  for (const el of document.querySelectorAll("[data-min-role]")) el.hidden = !ctx.can(el.dataset.minRole);
  startLive();
  route();
}

function route() {
  if (!session.key || !ctx.me) return;
  const hash = location.hash || "#/runs";
  if (!hash.startsWith("#/")) return; // e.g. the skip link's #main
  const [path, query] = hash.slice(1).split("?");
  const found = ROUTES.map((r) => ({ r, m: path.match(r.pattern) })).find((x) => x.m);
  if (cleanup) cleanup();
  cleanup = null;
  clear(main);
  for (const a of document.querySelectorAll("#nav a")) {
    if (found && a.dataset.route === found.r.nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!found) {
    notFound(main, "Page", hash, "The navigation bar above lists every page.");
    return;
  }
  const params = found.m.slice(1).map((p) => (p === undefined ? undefined : decodeURIComponent(p)));
  const query_ = new URLSearchParams(query || "");
  try {
    cleanup = found.r.page.render(main, { params, query: query_ }, ctx) || null;
  } catch (err) {
    ctx.fail(err, "Cannot show this page");
  }
  const heading = main.querySelector("h1");
  document.title = heading ? `${heading.textContent} · AgentMaestro` : "AgentMaestro";
  main.focus({ preventScroll: true });
}

window.addEventListener("hashchange", route);
window.addEventListener("maestro:unauthorized", () => signOut("Your key is no longer accepted. Sign in again."));
document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));

/** For the browser tests: drop live connections as a network failure would. */
window.__maestro = {
  dropFirehose: () => stream && stream.drop(),
};

(async function boot() {
  const key = session.key;
  if (!key) {
    renderSignIn();
    return;
  }
  try {
    await signIn(key);
  } catch (err) {
    signOut(err instanceof ApiError && err.status === 401 ? "Your key is no longer accepted. Sign in again." : err.message);
  }
})();
