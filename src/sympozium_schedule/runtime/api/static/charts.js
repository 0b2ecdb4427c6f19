// SVG pictures of schedules: the timeline of upcoming fires, a schedule's run outcomes,
// and its fire lag and run duration. Pure functions of their data: easy to re-render.
import { s } from "./dom.js";
import { clock, day, duration, full } from "./time.js";

const LABEL = 190;
const WIDTH = 1000;
const ROW = 20;

function localParts(date, zone) {
  const parts = new Intl.DateTimeFormat("en-GB", { timeZone: zone, hour: "2-digit", minute: "2-digit", hourCycle: "h23" })
    .formatToParts(date);
  const get = (t) => Number(parts.find((p) => p.type === t).value);
  return { hour: get("hour"), minute: get("minute") };
}

// Tick marks at round local times of `zone`: every 3 hours over a day, midnights over a week.
function ticks(from, to, zone) {
  const span = to - from;
  const out = [];
  const step = 15 * 60 * 1000;
  const every = span <= 2 * 86400000 ? 3 : 24;
  for (let t = Math.ceil(from / step) * step; t <= to; t += step) {
    const d = new Date(t);
    const { hour, minute } = localParts(d, zone);
    if (minute === 0 && hour % every === 0) out.push(d);
  }
  return out;
}

export function timeline({ rows, from, to, zone, onSelect }) {
  const start = from.getTime();
  const end = to.getTime();
  const x = (t) => LABEL + ((t - start) / (end - start)) * (WIDTH - LABEL - 10);
  const herdTop = 34;
  const herdHeight = 36;
  const top = herdTop + herdHeight + 10;
  const height = top + Math.max(rows.length, 1) * ROW + 6;
  const svg = s("svg", { viewBox: `0 0 ${WIDTH} ${height}`, class: "timeline", role: "img",
    "data-testid": "timeline", "aria-label": "Upcoming fires of every schedule" });

  // Axis: ticks in the chosen zone, labelled with the day at midnight.
  for (const tick of ticks(start, end, zone)) {
    const px = x(tick.getTime());
    const { hour } = localParts(tick, zone);
    svg.append(s("line", { x1: px, x2: px, y1: 18, y2: height, class: hour === 0 ? "grid day" : "grid" }),
      s("text", { x: px + 2, y: 14, class: "axis" }, hour === 0 ? day(tick, zone) : clock(tick, zone)));
  }

  // Collisions: how many schedules fire in the same minute; the busiest minutes stand out.
  const sets = new Map();
  rows.forEach((row, i) => {
    if (row.suspended) return;
    for (const t of row.times) {
      const minute = Math.floor(Date.parse(t) / 60000);
      if (!sets.has(minute)) sets.set(minute, new Set());
      sets.get(minute).add(i);
    }
  });
  const buckets = new Map([...sets].map(([minute, set]) => [minute, set.size]));
  let peak = [0, 0];
  for (const [minute, count] of buckets) if (count > peak[1]) peak = [minute, count];
  svg.append(s("text", { x: 4, y: herdTop + 14, class: "label" }, "schedules / minute"));
  for (const [minute, count] of buckets) {
    if (count < 2) continue;
    const bar = (count / peak[1]) * herdHeight;
    const at = new Date(minute * 60000);
    svg.append(s("rect", { x: x(minute * 60000) - 1, y: herdTop + herdHeight - bar, width: 3, height: bar,
      class: count === peak[1] ? "herd peak" : "herd" }, s("title", {}, `${count} schedules fire at ${full(at, zone)}`)));
  }
  if (peak[1] >= 2) {
    const at = new Date(peak[0] * 60000);
    svg.append(s("text", { x: WIDTH - 10, y: herdTop + 10, class: "peak-label", "text-anchor": "end",
      "data-testid": "herd-peak" }, `busiest: ${peak[1]} schedules at ${clock(at, zone)} (${day(at, zone)})`));
  }

  rows.forEach((row, i) => {
    const y = top + i * ROW;
    const group = s("g", { class: `row${row.suspended ? " suspended" : ""}${row.error ? " invalid" : ""}`,
      "data-testid": `timeline-row-${row.name}` });
    const label = s("text", { x: 4, y: y + 14, class: "label link" }, row.name.length > 26 ? row.name.slice(0, 25) + "…" : row.name);
    label.addEventListener("click", () => onSelect && onSelect(row));
    group.append(s("rect", { x: 0, y, width: WIDTH, height: ROW, class: i % 2 ? "band odd" : "band" }), label);
    if (row.error) {
      group.append(s("text", { x: LABEL, y: y + 14, class: "error-text" }, row.error.slice(0, 110)));
    } else {
      for (const t of row.times) {
        const at = new Date(t);
        group.append(s("rect", { x: x(at.getTime()) - 1.5, y: y + 4, width: 3, height: ROW - 8, class: "fire" },
          s("title", {}, `${row.name}: ${full(at, zone)} — ${full(at, row.timeZone)}`)));
      }
      if (row.truncated) group.append(s("text", { x: WIDTH - 10, y: y + 14, class: "muted-text", "text-anchor": "end" }, "more…"));
      if (row.suspended) group.append(s("text", { x: LABEL, y: y + 14, class: "muted-text" }, "suspended"));
    }
    svg.append(group);
  });
  if (!rows.length) svg.append(s("text", { x: LABEL, y: top + 14, class: "muted-text" }, "No schedules."));
  return svg;
}

const PHASE_CLASS = { Succeeded: "ok", Failed: "fail", Running: "run", Pending: "run", "": "run", Skipped: "skip" };

// A strip of outcomes, oldest first: runs (by their tick) and skipped ticks (from Events).
export function outcomeStrip(items, zone, onSelect) {
  const cell = 22;
  const shown = items.slice(-40);
  const width = Math.max(shown.length * (cell + 4), 200);
  const svg = s("svg", { viewBox: `0 0 ${width} ${cell + 8}`, width, height: cell + 8, class: "strip", "data-testid": "outcome-strip",
    role: "img", "aria-label": "Run outcomes, oldest first" });
  shown.forEach((item, i) => {
    const cls = PHASE_CLASS[item.phase] || "run";
    const rect = s("rect", { x: i * (cell + 4), y: 2, width: cell, height: cell, rx: 4, class: `cell ${cls}`,
      "data-testid": `strip-${item.kind}-${item.name}`, "data-phase": item.phase },
    s("title", {}, `${item.label} — ${item.phase || "Pending"} — ${full(item.at, zone)}${item.reason ? ` — ${item.reason}` : ""}`));
    if (item.kind === "run") rect.addEventListener("click", () => onSelect(item.name));
    svg.append(rect);
    if (item.manual) svg.append(s("text", { x: i * (cell + 4) + cell / 2, y: cell - 5, class: "cell-mark", "text-anchor": "middle" }, "M"));
    if (item.kind === "skip") svg.append(s("text", { x: i * (cell + 4) + cell / 2, y: cell - 5, class: "cell-mark", "text-anchor": "middle" }, "–"));
  });
  if (!shown.length) svg.append(s("text", { x: 4, y: 16, class: "muted-text" }, "No runs yet."));
  return svg;
}

// Fire lag (run created - tick) and run duration (completed - started), per run, oldest first.
export function lagPlot(points) {
  const width = 1000;
  const height = 180;
  const pad = { left: 60, right: 60, top: 30, bottom: 24 };
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "plot", "data-testid": "lag-plot",
    role: "img", "aria-label": "Fire lag and run duration" });
  if (!points.length) {
    svg.append(s("text", { x: pad.left, y: 40, class: "muted-text" }, "No finished runs to plot yet."));
    return svg;
  }
  const n = points.length;
  const xi = (i) => pad.left + (n === 1 ? 0.5 : i / (n - 1)) * (width - pad.left - pad.right);
  const series = [
    { key: "lag", cls: "lag", label: "fire lag", axis: "left" },
    { key: "duration", cls: "dur", label: "run duration", axis: "right" },
  ];
  for (const one of series) {
    const values = points.map((p) => p[one.key]).filter((v) => v !== null && v !== undefined);
    const max = Math.max(1, ...values);
    const y = (v) => height - pad.bottom - (v / max) * (height - pad.top - pad.bottom);
    const path = [];
    points.forEach((p, i) => {
      const v = p[one.key];
      if (v === null || v === undefined) return;
      path.push(`${path.length ? "L" : "M"}${xi(i).toFixed(1)},${y(v).toFixed(1)}`);
      svg.append(s("circle", { cx: xi(i), cy: y(v), r: 3.5, class: `pt ${one.cls}` },
        s("title", {}, `${p.name}: ${one.label} ${duration(v)}`)));
    });
    if (path.length > 1) svg.prepend(s("path", { d: path.join(" "), class: `series ${one.cls}` }));
    const ax = one.axis === "left" ? 4 : width - 4;
    svg.append(s("text", { x: ax, y: 14, class: `axis ${one.cls}`, "text-anchor": one.axis === "left" ? "start" : "end" },
      `${one.label} ≤ ${duration(max)}`));
  }
  svg.prepend(s("line", { x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom, class: "grid" }));
  return svg;
}
