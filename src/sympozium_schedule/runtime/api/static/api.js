// The console's API client: the bearer token (never a cookie), the namespace, JSON
// requests with one-line errors, and the live stream read with fetch (EventSource
// cannot send an Authorization header).
const TOKEN_KEY = "sympozium_schedule_token";
const NS_KEY = "sympozium_schedule_namespace";
export const ALL = "*";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

export function consumeUrlToken() {
  // The token arrives in the fragment (#token=...): fragments never reach a server's logs.
  const match = window.location.hash.match(/^#token=([A-Za-z0-9_\-]+)$/);
  if (!match) return;
  localStorage.setItem(TOKEN_KEY, match[1]);
  history.replaceState(null, "", window.location.pathname + "#/");
}

export const token = {
  get: () => localStorage.getItem(TOKEN_KEY),
  set: (value) => (value ? localStorage.setItem(TOKEN_KEY, value) : localStorage.removeItem(TOKEN_KEY)),
};

export const namespace = {
  get: () => localStorage.getItem(NS_KEY) || "default",
  set: (value) => localStorage.setItem(NS_KEY, value),
};

export function scopeQuery(ns = namespace.get()) {
  return ns === ALL ? "allNamespaces=true" : `namespace=${encodeURIComponent(ns)}`;
}

function headers(extra = {}) {
  const out = { Accept: "application/json", ...extra };
  const t = token.get();
  if (t) out.Authorization = `Bearer ${t}`;
  return out;
}

export async function call(method, path, body) {
  const init = { method, headers: headers(body !== undefined ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("application/json") ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(response.status, typeof data === "string" ? { error: data } : data);
  return data;
}

export const get = (path) => call("GET", path);

// One live stream; reconnects with backoff. onEvent(kind, {type, object}); onState("live"|"down").
export function stream(ns, onEvent, onState) {
  let stopped = false;
  let controller = null;
  let delay = 500;
  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const response = await fetch(`/api/v1/stream?${scopeQuery(ns)}`, {
          headers: headers({ Accept: "text/event-stream" }), signal: controller.signal });
        if (!response.ok || !response.body) throw new ApiError(response.status, null);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let pending = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          pending += value;
          let cut;
          while ((cut = pending.indexOf("\n\n")) >= 0) {
            const frame = pending.slice(0, cut);
            pending = pending.slice(cut + 2);
            let event = "message";
            const data = [];
            for (const line of frame.split("\n")) {
              if (line.startsWith("event: ")) event = line.slice(7);
              else if (line.startsWith("data: ")) data.push(line.slice(6));
            }
            if (!data.length) continue;
            if (event === "hello") {
              delay = 500;
              onState("live");
            }
            onEvent(event, JSON.parse(data.join("\n")));
          }
        }
      } catch (err) {
        if (stopped) return;
      }
      onState("down");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }
  run();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}
