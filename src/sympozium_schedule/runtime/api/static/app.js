// The console: a schedules list with a timeline of upcoming fires, a page per schedule
// (spec, conditions, events, run outcomes, lag and duration, each run's logs) and a
// create/edit form whose cron editor previews fire times as you type. Routing is by
// the URL fragment; every change arrives on one live stream and re-renders in place.
import { ALL, ApiError, call, consumeUrlToken, get, namespace, scopeQuery, stream, token } from "./api.js";
import { lagPlot, outcomeStrip, timeline } from "./charts.js";
import { h, replace } from "./dom.js";
import { VIEWER_ZONE, duration, full, parse, relative, zones } from "./time.js";

const LABEL_SCHEDULE = "sympozium.ai/schedule";
const LABEL_SOURCE = "sympozium.ai/source";
const ANNOTATION_TICK = "sympozium.ai/scheduled-time";
const ANNOTATION_TRIGGER = "sympozium.ai/trigger";

const state = {
  session: null,
  schedules: new Map(),
  runs: new Map(),
  instances: [],
  timeline: null,
  range: 24,
  zone: VIEWER_ZONE,
  search: "",
  phase: "",
  openRun: null,
  logs: new Map(),
  live: "connecting",
  stopStream: null,
  page: null,
};

const main = () => document.getElementById("main");
const key = (obj) => `${obj.metadata.namespace || "default"}/${obj.metadata.name}`;

// --- notices -------------------------------------------------------------------------------

function notify(text, kind = "info") {
  const banner = document.getElementById("banner");
  banner.hidden = false;
  banner.className = `banner ${kind}`;
  banner.dataset.testid = "banner";
  replace(banner, h("span", { "data-testid": `banner-${kind}` }, text),
    h("button", { class: "link", onclick: () => (banner.hidden = true) }, "dismiss"));
}

function failed(err) {
  notify(err instanceof ApiError ? err.message : String(err), "error");
  if (err instanceof ApiError && err.status === 401) askToken();
}

function askToken() {
  const dialog = document.getElementById("token-dialog");
  if (dialog.open) return;
  document.getElementById("token-input").value = "";
  dialog.showModal();
}

document.getElementById("token-dialog").addEventListener("close", (event) => {
  if (event.target.returnValue === "ok") {
    token.set(document.getElementById("token-input").value.trim());
    boot();
  }
});

function confirmDelete(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

// --- data --------------------------------------------------------------------------------------

async function loadAll() {
  const scope = scopeQuery();
  const [schedules, runs, instances] = await Promise.all([
    get(`/api/v1/schedules?${scope}`), get(`/api/v1/runs?${scope}`), get(`/api/v1/instances?${scope}`)]);
  state.schedules = new Map(schedules.map((o) => [key(o), o]));
  state.runs = new Map(runs.map((o) => [key(o), o]));
  state.instances = instances;
}

let timelineTimer = null;
async function loadTimeline() {
  state.timeline = await get(`/api/v1/timeline?${scopeQuery()}&hours=${state.range}`);
}
function timelineSoon() {
  clearTimeout(timelineTimer);
  timelineTimer = setTimeout(() => loadTimeline().then(renderSoon).catch(failed), 800);
}

function onEvent(kind, data) {
  if (kind === "hello") return loadAll().then(loadTimeline).then(renderSoon).catch(failed);
  const maps = { schedule: state.schedules, run: state.runs };
  const map = maps[kind];
  if (!map) return;
  const k = key(data.object);
  if (data.type === "DELETED") map.delete(k);
  else map.set(k, data.object);
  if (kind === "schedule") timelineSoon();
  const d = state.detail;
  if (d && state.page && state.page.page === "schedule" && data.object.metadata.namespace === d.ns
      && (kind === "schedule" ? data.object.metadata.name === d.name
        : (data.object.metadata.labels || {})[LABEL_SCHEDULE] === d.name)) detailSoon();
  renderSoon();
}

// The schedule page's Events and next fire times are not on the stream: read them again
// when its schedule or one of its runs changes (at most once a second).
let detailTimer = null;
function detailSoon() {
  clearTimeout(detailTimer);
  detailTimer = setTimeout(async () => {
    const d = state.detail;
    if (!d) return;
    const q = `?namespace=${encodeURIComponent(d.ns)}`;
    const base = `/api/v1/schedules/${encodeURIComponent(d.name)}`;
    try {
      const [events, next] = await Promise.all([get(`${base}/events${q}`), get(`${base}/next${q}&count=5`)]);
      if (state.detail === d) Object.assign(d, { events, next });
      renderSoon();
    } catch { /* the schedule went away: the page says so */ }
  }, 1000);
}

function setLive(value) {
  state.live = value;
  const el = document.getElementById("live");
  el.textContent = value === "live" ? "● live" : "○ reconnecting";
  el.className = `live ${value}`;
  el.dataset.state = value;
}

// --- helpers over objects ------------------------------------------------------------------

function runsOf(schedule) {
  const ns = schedule.metadata.namespace;
  return [...state.runs.values()].filter((r) => r.metadata.namespace === ns
    && (r.metadata.labels || {})[LABEL_SCHEDULE] === schedule.metadata.name);
}

function tickOf(run) {
  return parse((run.metadata.annotations || {})[ANNOTATION_TICK]) || parse(run.metadata.creationTimestamp);
}

function byTick(a, b) {
  return tickOf(a) - tickOf(b) || a.metadata.name.localeCompare(b.metadata.name);
}

function lastResult(schedule) {
  const finished = runsOf(schedule).filter((r) => ["Succeeded", "Failed"].includes((r.status || {}).phase)).sort(byTick);
  return finished.length ? finished[finished.length - 1] : null;
}

function phaseBadge(phase, testid) {
  const text = phase || "Pending";
  return h("span", { class: `badge ${text.toLowerCase()}`, "data-testid": testid }, text);
}

function isAgentMade(schedule) {
  return (schedule.metadata.labels || {})[LABEL_SOURCE] === "agent";
}

function writable() {
  // Changes need a token (and a console that is not read-only); without one the page reads.
  return Boolean(state.session && !state.session.readOnly && state.session.authenticated);
}

const scheduleHref = (obj) => `#/s/${encodeURIComponent(obj.metadata.namespace)}/${encodeURIComponent(obj.metadata.name)}`;

// --- the schedules list ------------------------------------------------------------------------

function zoneChoices() {
  const own = new Set([VIEWER_ZONE, "UTC"]);
  for (const o of state.schedules.values()) own.add((o.spec || {}).timeZone || "UTC");
  return [...own];
}

function listPage() {
  const controls = h("div", { class: "controls" },
    h("input", { type: "search", placeholder: "Search name, agent, task…", value: state.search, "data-testid": "search",
      oninput: (e) => { state.search = e.target.value; renderSoon(); } }),
    h("select", { "data-testid": "phase-filter", onchange: (e) => { state.phase = e.target.value; renderSoon(); } },
      ["", "Active", "Suspended", "Error"].map((p) => h("option", { value: p, selected: p === state.phase }, p || "Any phase"))),
    h("span", { class: "seg" },
      [[24, "24 h"], [168, "7 days"]].map(([hours, text]) => h("button", {
        class: state.range === hours ? "on" : "", "data-testid": `range-${hours}`,
        onclick: () => { state.range = hours; loadTimeline().then(() => { state.page = null; render(); }).catch(failed); },
      }, text))),
    h("label", {}, "Times in ",
      h("select", { "data-testid": "zone", onchange: (e) => { state.zone = e.target.value; renderSoon(); } },
        zoneChoices().map((z) => h("option", { value: z, selected: z === state.zone }, z === VIEWER_ZONE ? `${z} (yours)` : z)))));
  return [controls, h("section", { class: "card", id: "timeline-card" }), h("section", { class: "card", id: "table-card" })];
}

function refreshList() {
  const q = state.search.toLowerCase();
  const rows = [...state.schedules.values()]
    .filter((o) => !state.phase || ((o.status || {}).phase || "") === state.phase)
    .filter((o) => !q || [o.metadata.name, (o.spec || {}).instanceRef, (o.spec || {}).task, (o.spec || {}).schedule]
      .some((v) => String(v || "").toLowerCase().includes(q)))
    .sort((a, b) => key(a).localeCompare(key(b)));
  const tl = state.timeline;
  const card = document.getElementById("timeline-card");
  if (card && tl) {
    const shown = new Set(rows.map(key));
    const from = new Date(tl.from);
    replace(card, h("h2", {}, `Upcoming fires, next ${tl.hours === 24 ? "24 hours" : "7 days"} `,
      h("small", {}, `(${state.zone})`)),
    timeline({ rows: tl.schedules.filter((r) => shown.has(`${r.namespace}/${r.name}`)), from, to: new Date(tl.to), zone: state.zone,
      onSelect: (row) => (location.hash = `#/s/${encodeURIComponent(row.namespace)}/${encodeURIComponent(row.name)}`) }));
  }
  const table = document.getElementById("table-card");
  if (!table) return;
  const showNs = namespace.get() === ALL;
  replace(table, h("table", { class: "list", "data-testid": "schedules-table" },
    h("thead", {}, h("tr", {}, showNs && h("th", {}, "Namespace"), h("th", {}, "Name"), h("th", {}, "Agent"), h("th", {}, "Schedule"),
      h("th", {}, "Phase"), h("th", {}, "Last result"), h("th", {}, "Next fire"))),
    h("tbody", {}, rows.map((o) => {
      const spec = o.spec || {};
      const status = o.status || {};
      const last = lastResult(o);
      const next = parse(status.nextRunTime);
      return h("tr", { "data-testid": `row-${o.metadata.name}` },
        showNs && h("td", {}, o.metadata.namespace),
        h("td", {}, h("a", { href: scheduleHref(o) }, o.metadata.name),
          isAgentMade(o) && h("span", { class: "tag agent", title: "Created by an agent through schedule_task" }, "agent")),
        h("td", {}, spec.instanceRef || "—"),
        h("td", {}, h("code", {}, spec.schedule || "—"), " ", h("small", { class: "muted" }, spec.timeZone || "UTC")),
        h("td", {}, phaseBadge(spec.suspend ? "Suspended" : status.phase, `phase-${o.metadata.name}`)),
        h("td", {}, last ? [phaseBadge(last.status.phase, `last-${o.metadata.name}`), " ",
          h("small", { class: "muted" }, relative(parse(last.status.completedAt) || tickOf(last)))] : h("span", { class: "muted" }, "—")),
        h("td", { title: next ? full(next, state.zone) : "" }, spec.suspend ? "—" : relative(next)));
    })),
  ), rows.length ? null : h("p", { class: "muted" }, "No schedules here yet. ", h("a", { href: "#/new" }, "Create one"), "."));
}

// --- one schedule ----------------------------------------------------------------------------

async function schedulePage(ns, name) {
  const [events, next] = await Promise.all([
    get(`/api/v1/schedules/${encodeURIComponent(name)}/events?namespace=${encodeURIComponent(ns)}`).catch(() => []),
    get(`/api/v1/schedules/${encodeURIComponent(name)}/next?namespace=${encodeURIComponent(ns)}&count=5`).catch((e) => ({ error: e.message })),
  ]);
  state.detail = { ns, name, events, next };
  return [h("div", { id: "detail" })];
}

async function act(what, promise, done) {
  try {
    const result = await promise;
    notify(done(result), "ok");
  } catch (err) {
    failed(err);
  }
  void what;
}

function refreshDetail() {
  const root = document.getElementById("detail");
  if (!root || !state.detail) return;
  const { ns, name, events, next } = state.detail;
  const obj = state.schedules.get(`${ns}/${name}`);
  if (!obj) {
    replace(root, h("p", { "data-testid": "gone" }, `Schedule ${ns}/${name} does not exist (any more). `, h("a", { href: "#/" }, "Back to the list")));
    return;
  }
  const spec = obj.spec || {};
  const status = obj.status || {};
  const zone = spec.timeZone || "UTC";
  const base = `/api/v1/schedules/${encodeURIComponent(name)}`;
  const q = `?namespace=${encodeURIComponent(ns)}`;
  const canWrite = writable();
  const actions = h("div", { class: "actions" },
    spec.suspend
      ? h("button", { disabled: !canWrite, "data-testid": "action-resume",
        onclick: () => act("resume", call("POST", `${base}/resume${q}`), () => `Resumed ${name}`) }, "Resume")
      : h("button", { disabled: !canWrite, "data-testid": "action-suspend",
        onclick: () => act("suspend", call("POST", `${base}/suspend${q}`), () => `Suspended ${name}`) }, "Suspend"),
    h("button", { disabled: !canWrite, "data-testid": "action-trigger",
      onclick: () => act("trigger", call("POST", `${base}/trigger${q}`), (r) => `Triggered run ${r.name}`) }, "Trigger now"),
    h("a", { class: `button${canWrite ? "" : " disabled"}`, href: `#/edit/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`, "data-testid": "action-edit" }, "Edit"),
    h("button", { class: "danger", disabled: !canWrite, "data-testid": "action-delete",
      onclick: async () => {
        if (!(await confirmDelete(`Delete schedule ${ns}/${name}? Its runs are deleted with it.`))) return;
        try {
          await call("DELETE", `${base}${q}`);
          notify(`Deleted ${name}`, "ok");
          location.hash = "#/";
        } catch (err) { failed(err); }
      } }, "Delete"));

  const runs = runsOf(obj).sort(byTick);
  const skips = events.filter((e) => e.reason === "TickSkipped" || e.reason === "RunNameTaken" || e.reason === "RunRejected");
  const strip = [
    ...runs.map((r) => ({ kind: "run", name: r.metadata.name, label: r.metadata.name, phase: (r.status || {}).phase || "",
      at: tickOf(r), manual: (r.metadata.annotations || {})[ANNOTATION_TRIGGER] === "manual" })),
    ...skips.map((e, i) => ({ kind: "skip", name: `${i}`, label: "skipped tick", phase: "Skipped",
      at: parse(e.lastTimestamp || e.firstTimestamp), reason: e.message })),
  ].sort((a, b) => a.at - b.at);
  const points = runs.map((r) => {
    const st = r.status || {};
    const tick = parse((r.metadata.annotations || {})[ANNOTATION_TICK]);
    const created = parse(r.metadata.creationTimestamp);
    const started = parse(st.startedAt);
    const completed = parse(st.completedAt);
    return { name: r.metadata.name, lag: tick && created && !(r.metadata.annotations || {})[ANNOTATION_TRIGGER] ? Math.max(0, created - tick) : null,
      duration: started && completed ? completed - started : null };
  });

  const conditions = status.conditions || [];
  replace(root,
    h("div", { class: "title" }, h("h1", { "data-testid": "schedule-title" }, name), h("span", { class: "muted" }, ns),
      phaseBadge(spec.suspend ? "Suspended" : status.phase, "detail-phase"),
      isAgentMade(obj) && h("span", { class: "tag agent", "data-testid": "agent-made" }, "made by an agent"),
      h("div", { class: "spacer" }), actions),
    h("div", { class: "grid2" },
      h("section", { class: "card" }, h("h2", {}, "Spec"), h("dl", { class: "kv" },
        ["instanceRef", "schedule", "timeZone", "type", "concurrencyPolicy", "includeMemory", "suspend", "firstTick",
          "startingDeadlineSeconds", "successfulRunsHistoryLimit", "failedRunsHistoryLimit"].map((k) => [h("dt", {}, k),
          h("dd", { "data-testid": `spec-${k}` }, spec[k] === undefined ? h("span", { class: "muted" }, "default") : String(spec[k]))]),
        RICHER.filter((k) => spec[k] !== undefined).map((k) => [h("dt", {}, k),
          h("dd", { "data-testid": `spec-${k}` }, typeof spec[k] === "object" ? JSON.stringify(spec[k]) : String(spec[k]))])),
      h("h3", {}, "Task"), h("pre", { class: "task", "data-testid": "spec-task" }, spec.task || "")),
      h("section", { class: "card" }, h("h2", {}, "Status"), h("dl", { class: "kv" },
        h("dt", {}, "last run"), h("dd", { "data-testid": "status-last-run" }, status.lastRunName || "—", " ", h("small", { class: "muted" }, relative(parse(status.lastRunTime)))),
        h("dt", {}, "next run"), h("dd", { "data-testid": "status-next-run" }, spec.suspend ? "— (suspended)" : full(parse(status.nextRunTime), zone)),
        h("dt", {}, "total runs"), h("dd", { "data-testid": "status-total-runs" }, String(status.totalRuns || 0)),
        h("dt", {}, "active"), h("dd", {}, (status.active || []).map((a) => a.name).join(", ") || "—"),
        status.remainingRuns !== undefined && [h("dt", {}, "remaining runs"), h("dd", { "data-testid": "status-remaining" }, String(status.remainingRuns))],
        (status.buffered || []).length > 0 && [h("dt", {}, "waiting ticks"), h("dd", {}, status.buffered.join(", "))],
        status.backfill && [h("dt", {}, "backfill"), h("dd", { "data-testid": "status-backfill" },
          `${status.backfill.state}: ${status.backfill.created || 0} created, ${status.backfill.existing || 0} already there, ${status.backfill.skipped || 0} skipped`)]),
      h("h3", {}, "Conditions"),
      conditions.length ? h("table", { class: "small" }, conditions.map((c) => h("tr", {},
        h("td", {}, c.type), h("td", {}, c.status), h("td", {}, c.reason), h("td", {}, c.message)))) : h("p", { class: "muted" }, "None"),
      h("h3", {}, `Next fires (${zone})`),
      next.error ? h("p", { class: "error-text" }, next.error) : h("ol", { class: "times", "data-testid": "next-times" },
        (next.times || []).map((t) => h("li", {}, full(new Date(t.utc), zone), zone !== VIEWER_ZONE ? h("small", { class: "muted" }, ` · ${full(new Date(t.utc), VIEWER_ZONE)}`) : null))),
      (next.notes || []).map((n) => h("p", { class: "warn", "data-testid": "dst-note" }, n.message)))),
    h("section", { class: "card" }, h("h2", {}, "Run history ", h("small", { class: "muted" }, "oldest first · M = manual · – = skipped tick")),
      outcomeStrip(strip, zone, (run) => { state.openRun = run; renderSoon(); }),
      h("h3", {}, "Fire lag and run duration"), lagPlot(points)),
    h("section", { class: "card" }, h("h2", {}, "Runs"), runs.length ? h("table", { class: "list", "data-testid": "runs-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Run"), h("th", {}, "Tick"), h("th", {}, "Phase"), h("th", {}, "Duration"), h("th", {}, ""))),
      h("tbody", {}, [...runs].reverse().map((r) => runRows(r, zone)))) : h("p", { class: "muted" }, "No runs yet.")),
    h("section", { class: "card" }, h("h2", {}, "Events"), events.length ? h("table", { class: "small", "data-testid": "events-table" },
      events.slice(-20).reverse().map((e) => h("tr", {}, h("td", {}, relative(parse(e.lastTimestamp || e.firstTimestamp))),
        h("td", {}, e.type), h("td", {}, e.reason), h("td", {}, e.message)))) : h("p", { class: "muted" }, "None")));
}

function runRows(run, zone) {
  const st = run.status || {};
  const name = run.metadata.name;
  const open = state.openRun === name;
  const started = parse(st.startedAt);
  const completed = parse(st.completedAt);
  const row = h("tr", { "data-testid": `run-${name}`, class: open ? "open" : "" },
    h("td", {}, h("button", { class: "link", "data-testid": `open-run-${name}`,
      onclick: () => { state.openRun = open ? null : name; if (!open) loadLogs(run); renderSoon(); } }, name),
    (run.metadata.annotations || {})[ANNOTATION_TRIGGER] === "manual" ? h("span", { class: "tag" }, "manual") : null),
    h("td", {}, full(tickOf(run), zone)),
    h("td", {}, phaseBadge(st.phase, `run-phase-${name}`)),
    h("td", {}, started && completed ? duration(completed - started) : "—"),
    h("td", {}, open ? "▾" : "▸"));
  if (!open) return row;
  const logs = state.logs.get(name);
  return [row, h("tr", { class: "details" }, h("td", { colspan: 5 },
    h("div", { class: "run-detail", "data-testid": `run-detail-${name}` },
      h("h4", {}, "Task"), h("pre", {}, (run.spec || {}).task || ""),
      st.result ? [h("h4", {}, "Result"), h("pre", { "data-testid": "run-result" }, st.result)] : null,
      st.error ? [h("h4", {}, "Error"), h("pre", { class: "error-text", "data-testid": "run-error" }, st.error)] : null,
      h("h4", {}, "Logs ", h("button", { class: "link", onclick: () => loadLogs(run) }, "reload")),
      h("pre", { class: "logs", "data-testid": "run-logs" }, logs === undefined ? "Loading…" : logs))))];
}

async function loadLogs(run) {
  const { name, namespace: ns } = run.metadata;
  try {
    const response = await fetch(`/api/v1/runs/${encodeURIComponent(name)}/logs?namespace=${encodeURIComponent(ns)}`, {
      headers: token.get() ? { Authorization: `Bearer ${token.get()}` } : {} });
    const text = await response.text();
    let shown = text;
    if (!response.ok) {
      try { shown = JSON.parse(text).error; } catch { /* plain text */ }
    }
    state.logs.set(name, shown || "(empty)");
  } catch (err) {
    state.logs.set(name, String(err));
  }
  renderSoon();
}

// --- create and edit -------------------------------------------------------------------------

// Fields sympozium-schedule adds beyond Sympozium's: shown when set.
const RICHER = ["schedules", "exclude", "jitter", "startTime", "endTime", "maxRuns", "pauseOnFailure",
  "suspendedBy", "suspendReason"];
const FIELDS = ["schedule", "timeZone", "task", "type", "concurrencyPolicy", "includeMemory", "suspend",
  "startingDeadlineSeconds", "firstTick", "successfulRunsHistoryLimit", "failedRunsHistoryLimit"];

async function formPage(ns, name) {
  const editing = Boolean(name);
  let current = null;
  if (editing) current = await get(`/api/v1/schedules/${encodeURIComponent(name)}?namespace=${encodeURIComponent(ns)}`);
  const spec = current ? current.spec || {} : { schedule: "*/30 * * * *", timeZone: VIEWER_ZONE, type: "scheduled", concurrencyPolicy: "Forbid", includeMemory: true };
  const targetNs = editing ? ns : namespace.get() === ALL ? "default" : namespace.get();
  const field = (label, input, hint) => h("label", { class: "field" }, h("span", {}, label), input, hint ? h("small", { class: "muted" }, hint) : null);
  const input = (id, attrs) => h("input", { id: `f-${id}`, name: id, "data-testid": `field-${id}`, ...attrs });
  const select = (id, options, value) => h("select", { id: `f-${id}`, name: id, "data-testid": `field-${id}` },
    options.map((o) => h("option", { value: o, selected: o === value }, o)));
  const preview = h("div", { class: "preview", "data-testid": "cron-preview" }, h("p", { class: "muted" }, "…"));
  const error = h("p", { class: "error-text", "data-testid": "form-error", hidden: true });
  const submit = h("button", { type: "submit", class: "primary", "data-testid": "submit", disabled: !writable() }, editing ? "Save" : "Create schedule");
  const zoneList = h("datalist", { id: "zones" }, zones().map((z) => h("option", { value: z })));
  const instanceList = h("datalist", { id: "instances" }, state.instances.filter((i) => i.metadata.namespace === targetNs).map((i) => h("option", { value: i.metadata.name })));
  const form = h("form", { class: "card form", "data-testid": "schedule-form", novalidate: true },
    h("h1", {}, editing ? `Edit ${name}` : "New schedule", h("small", { class: "muted" }, ` in ${targetNs}`)),
    h("div", { class: "grid2" }, h("div", {},
      field("Name", input("name", { value: editing ? name : "", disabled: editing, placeholder: "my-heartbeat", autocomplete: "off" }),
        editing ? null : "lowercase letters, digits and '-'; empty: generated from the agent's name"),
      field("Agent (SympoziumInstance)", input("instanceRef", { value: spec.instanceRef || "", list: "instances", autocomplete: "off" })),
      field("Schedule", input("schedule", { value: spec.schedule || "", autocomplete: "off", spellcheck: "false" }),
        "cron (minute hour day-of-month month day-of-week), @hourly, @daily, … or @every 30m"),
      field("Time zone", input("timeZone", { value: spec.timeZone || "UTC", list: "zones", autocomplete: "off" })),
      field("Task", h("textarea", { id: "f-task", name: "task", rows: 5, "data-testid": "field-task" }, spec.task || "")),
      h("div", { class: "row" },
        field("Type", select("type", ["scheduled", "heartbeat", "sweep"], spec.type || "scheduled")),
        field("When a run is still going", select("concurrencyPolicy", ["Forbid", "Allow", "Replace", "BufferOne", "BufferAll"], spec.concurrencyPolicy || "Forbid"))),
      h("div", { class: "row" },
        h("label", { class: "check" }, input("includeMemory", { type: "checkbox", checked: spec.includeMemory !== false }), " include the agent's memory"),
        h("label", { class: "check" }, input("suspend", { type: "checkbox", checked: Boolean(spec.suspend) }), " suspended")),
      h("details", {}, h("summary", {}, "More"),
        h("div", { class: "row" },
          field("First tick", select("firstTick", ["immediate", "afterInterval"], spec.firstTick || "immediate")),
          field("Starting deadline (s)", input("startingDeadlineSeconds", { type: "number", min: 1, value: spec.startingDeadlineSeconds ?? "" }))),
        h("div", { class: "row" },
          field("Succeeded runs kept", input("successfulRunsHistoryLimit", { type: "number", min: 0, value: spec.successfulRunsHistoryLimit ?? 3 })),
          field("Failed runs kept", input("failedRunsHistoryLimit", { type: "number", min: 0, value: spec.failedRunsHistoryLimit ?? 1 }))))),
    h("div", {}, h("h2", {}, "Next fires"), preview)),
    error, h("div", { class: "actions" }, submit, h("a", { href: editing ? `#/s/${encodeURIComponent(ns)}/${encodeURIComponent(name)}` : "#/" }, "Cancel")),
    zoneList, instanceList);

  let valid = false;
  let seq = 0;
  let timer = null;
  const value = (id) => form.querySelector(`[name=${id}]`);
  async function runPreview() {
    const mine = ++seq;
    const expr = value("schedule").value;
    const zone = value("timeZone").value || "UTC";
    try {
      const result = await get(`/api/v1/preview?schedule=${encodeURIComponent(expr)}&timeZone=${encodeURIComponent(zone)}&count=6`);
      if (mine !== seq) return;
      valid = true;
      replace(preview, h("ol", { class: "times", "data-testid": "preview-times" }, result.times.map((t) => h("li", {},
        full(new Date(t.utc), zone), zone !== VIEWER_ZONE ? h("small", { class: "muted" }, ` · ${full(new Date(t.utc), VIEWER_ZONE)}`) : null))),
      result.notes.map((n) => h("p", { class: "warn", "data-testid": "preview-dst" }, n.message)));
    } catch (err) {
      if (mine !== seq) return;
      valid = false;
      replace(preview, h("p", { class: "error-text", "data-testid": "preview-error" }, err.message));
    }
    submit.disabled = !valid || !writable();
  }
  const later = () => { submit.disabled = true; clearTimeout(timer); timer = setTimeout(runPreview, 250); };
  value("schedule").addEventListener("input", later);
  value("timeZone").addEventListener("input", later);
  runPreview();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const body = {};
    for (const id of FIELDS) {
      const el = value(id);
      if (el.type === "checkbox") body[id] = el.checked;
      else if (el.type === "number") { if (el.value !== "") body[id] = Number(el.value); else if (editing) body[id] = null; }
      else body[id] = el.value;
    }
    body.agentRef = value("instanceRef").value.trim();
    try {
      let saved;
      if (editing) {
        body.resourceVersion = current.metadata.resourceVersion;
        try {
          saved = await call("PATCH", `/api/v1/schedules/${encodeURIComponent(name)}?namespace=${encodeURIComponent(ns)}`, body);
        } catch (err) {
          // Only the status moved on (a fire): the spec this form was based on is unchanged.
          if (!(err instanceof ApiError && err.status === 409 && err.body.generation === current.metadata.generation)) throw err;
          body.resourceVersion = err.body.resourceVersion;
          saved = await call("PATCH", `/api/v1/schedules/${encodeURIComponent(name)}?namespace=${encodeURIComponent(ns)}`, body);
        }
      } else {
        if (value("name").value.trim()) body.name = value("name").value.trim();
        saved = await call("POST", `/api/v1/schedules?namespace=${encodeURIComponent(targetNs)}`, body);
      }
      state.schedules.set(key(saved), saved);
      notify(`${editing ? "Saved" : "Created"} ${saved.metadata.name}`, "ok");
      location.hash = scheduleHref(saved);
    } catch (err) {
      error.hidden = false;
      error.textContent = err.message;
      if (err instanceof ApiError && err.status === 401) askToken();
    }
  });
  return [form];
}

// --- routing and rendering ------------------------------------------------------------------

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "s" && parts.length === 3) return { page: "schedule", ns: parts[1], name: parts[2] };
  if (parts[0] === "new") return { page: "new" };
  if (parts[0] === "edit" && parts.length === 3) return { page: "edit", ns: parts[1], name: parts[2] };
  return { page: "list" };
}

let frame = null;
function renderSoon() {
  if (frame) return;
  frame = requestAnimationFrame(() => { frame = null; refresh(); });
}

function refresh() {
  if (!state.page) return;
  if (state.page.page === "list") refreshList();
  if (state.page.page === "schedule") refreshDetail();
}

async function render() {
  const r = route();
  state.page = null;
  try {
    let content;
    if (r.page === "schedule") content = await schedulePage(r.ns, r.name);
    else if (r.page === "new") content = await formPage(null, null);
    else if (r.page === "edit") content = await formPage(r.ns, r.name);
    else content = listPage();
    replace(main(), content);
    state.page = r;
    main().dataset.page = r.page;
    refresh();
  } catch (err) {
    replace(main(), h("p", { class: "error-text" }, err.message));
    failed(err);
  }
}

window.addEventListener("hashchange", () => { state.openRun = null; render(); });

async function boot() {
  consumeUrlToken();
  try {
    state.session = await get("/api/v1/session");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      token.set(null);
      state.session = await get("/api/v1/session");
      notify("The saved token is not valid (a restart makes a new one): paste the current one.", "error");
    } else throw err;
  }
  const who = document.getElementById("who");
  replace(who, state.session.readOnly ? h("span", { class: "tag" }, "read-only") : null,
    state.session.authenticated ? h("span", { "data-testid": "signed-in" }, `signed in: ${state.session.user}`)
      : h("button", { class: "link", "data-testid": "set-token", onclick: askToken }, "set token"));
  if (!state.session.authenticated && state.session.readsNeedToken) {
    askToken();
    return;
  }
  const select = document.getElementById("namespace");
  await loadAll();
  const seen = new Set(["default", namespace.get()].filter((n) => n !== ALL));
  for (const o of [...state.schedules.values(), ...state.instances]) seen.add(o.metadata.namespace);
  replace(select, h("option", { value: ALL, selected: namespace.get() === ALL }, "all namespaces"),
    [...seen].sort().map((n) => h("option", { value: n, selected: n === namespace.get() }, n)));
  select.onchange = () => { namespace.set(select.value); boot(); };
  await loadTimeline();
  if (state.stopStream) state.stopStream();
  state.stopStream = stream(namespace.get(), onEvent, setLive);
  await render();
}

boot().catch(failed);
