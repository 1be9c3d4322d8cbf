// The REST API and its live streams. The API key lives in this tab's sessionStorage only; every
// request sends it as `Authorization: Bearer`, and no cookie is ever used (so no CSRF).

const STORAGE_KEY = "agentmaestro.apiKey";

export const session = {
  get key() {
    return sessionStorage.getItem(STORAGE_KEY);
  },
  set(key) {
    sessionStorage.setItem(STORAGE_KEY, key);
  },
  clear() {
    sessionStorage.removeItem(STORAGE_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** "/v1/runs" + {status: ["A", "B"], limit: 50} -> "/v1/runs?status=A&status=B&limit=50" */
export function withParams(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "") continue;
    for (const item of Array.isArray(v) ? v : [v]) q.append(k, String(item));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

function authHeaders(key = session.key) {
  return { Authorization: `Bearer ${key}` };
}

/** Call the API; resolves to the JSON body, rejects with an ApiError. */
export async function api(method, path, body, { key, signal } = {}) {
  const headers = { ...authHeaders(key), Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      credentials: "omit",
      cache: "no-store",
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", `cannot reach the server (${err.message})`);
  }
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const error = (data && data.error) || {};
    if (res.status === 401 && key === undefined) window.dispatchEvent(new CustomEvent("maestro:unauthorized"));
    throw new ApiError(res.status, error.code || "http_error", error.message || `HTTP ${res.status}`);
  }
  return data;
}

export const get = (path, params, opts) => api("GET", withParams(path, params), undefined, opts);
export const post = (path, body, opts) => api("POST", path, body, opts);
export const del = (path, opts) => api("DELETE", path, undefined, opts);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const backoff = (attempt) => Math.min(500 * 2 ** attempt, 10_000);

// ------------------------------------------------------------------------ Server-Sent Events

/** Parse an SSE byte stream; calls onMessage({id, event, data}); resolves when the stream closes. */
async function readSSE(body, onMessage) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const msg = { id: null, event: "message", data: [] };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "data") msg.data.push(val);
        else if (name === "id") msg.id = val;
        else if (name === "event") msg.event = val;
      }
      if (msg.data.length) {
        msg.data = msg.data.join("\n");
        if (onMessage(msg) === "stop") {
          reader.cancel().catch(() => {});
          return;
        }
      }
    }
  }
}

/**
 * Follow a run's events over SSE (`GET /v1/runs/{id}/events`, fetched so that the key goes in a
 * header, not the URL). After a dropped connection it reconnects with `Last-Event-ID` set to the
 * last seq it delivered, so no event is lost or shown twice.
 *
 * Handlers: onEvent(event), onEnd({status, last_seq}), onState("connecting" | "live" |
 * "reconnecting" | "ended" | "error", detail).
 */
export function followRun(runId, { after = 0, onEvent, onEnd, onDelta, onState = () => {} }) {
  let last = after;
  let stopped = false;
  let controller = null;
  let attempt = 0;

  async function loop() {
    while (!stopped) {
      controller = new AbortController();
      onState(attempt ? "reconnecting" : "connecting");
      let ended = null;
      let fatal = null;
      try {
        const headers = { ...authHeaders(), Accept: "text/event-stream" };
        if (last > 0) headers["Last-Event-ID"] = String(last);
        const res = await fetch(withParams(`/v1/runs/${encodeURIComponent(runId)}/events`, { follow: "terminal", deltas: onDelta ? "true" : undefined }), {
          headers,
          signal: controller.signal,
          credentials: "omit",
          cache: "no-store",
        });
        if (!res.ok) {
          let message = `HTTP ${res.status}`;
          try {
            message = (await res.json()).error.message;
          } catch {
            /* keep the status */
          }
          if (res.status >= 400 && res.status < 500 && res.status !== 429) fatal = message;
          else throw new Error(message);
        } else {
          onState("live");
          attempt = 0;
          await readSSE(res.body, (msg) => {
            if (msg.event === "end") {
              ended = JSON.parse(msg.data);
              return "stop";
            }
            if (msg.event === "delta") {
              // Live text of a model answer (best-effort, never stored; the event carries it all).
              onDelta(JSON.parse(msg.data));
              return undefined;
            }
            if (msg.event === "error") {
              fatal = JSON.parse(msg.data).message;
              return "stop";
            }
            const ev = JSON.parse(msg.data);
            if (ev.seq <= last) return undefined; // already shown (a replay after a reconnect)
            last = ev.seq;
            onEvent(ev);
            return undefined;
          });
        }
      } catch (err) {
        if (stopped) return;
        // A network error or a dropped connection: fall through and reconnect.
      }
      if (stopped) return;
      if (fatal) {
        onState("error", fatal);
        return;
      }
      if (ended) {
        onState("ended", ended);
        if (onEnd) onEnd(ended);
        return;
      }
      onState("reconnecting");
      await sleep(backoff(attempt++));
    }
  }

  loop();
  return {
    /** Stop following. */
    close() {
      stopped = true;
      if (controller) controller.abort();
    },
    /** Drop the current connection as a network failure would (it reconnects from the last seq). */
    drop() {
      if (controller) controller.abort();
    },
    get lastSeq() {
      return last;
    },
  };
}

// ------------------------------------------------------------------- the workspace firehose

/**
 * Every event of the workspace over the WebSocket `/v1/ws`. Browsers cannot set headers on a
 * WebSocket, so the key goes in `?key=` (over TLS in production). Reconnects with the cursor of
 * the last event it delivered (`?after=`), so nothing is missed or repeated.
 *
 * Handlers: onEvent(event), onState("live" | "down" | "unauthorized").
 */
export function firehose({ onEvent, onState = () => {} }) {
  let cursor = null;
  let ws = null;
  let stopped = false;
  let attempt = 0;
  let timer = null;

  function connect() {
    if (stopped) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = withParams(`${scheme}//${location.host}/v1/ws`, { key: session.key, after: cursor });
    ws = new WebSocket(url);
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.cursor) cursor = msg.cursor;
      if (msg.kind === "hello") {
        attempt = 0;
        onState("live");
      } else if (msg.kind === "event") {
        onEvent(msg.event);
      }
    };
    ws.onclose = (e) => {
      ws = null;
      if (stopped) return;
      if (e.code === 1008) {
        onState("unauthorized");
        return;
      }
      if (e.code === 4400) cursor = null; // an unusable cursor: start from now
      onState("down");
      timer = setTimeout(connect, backoff(attempt++));
    };
  }

  connect();
  return {
    close() {
      stopped = true;
      clearTimeout(timer);
      if (ws) ws.close(1000);
    },
    /** Drop the connection as a network failure would (it reconnects from the cursor). */
    drop() {
      if (ws) ws.close(4000, "dropped");
    },
  };
}
