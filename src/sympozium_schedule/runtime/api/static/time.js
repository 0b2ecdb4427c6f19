// Time formatting in a chosen IANA zone (the viewer's, UTC, or a schedule's), by Intl.
export const VIEWER_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

const cache = new Map();
function fmt(zone, options) {
  const key = zone + JSON.stringify(options);
  if (!cache.has(key)) cache.set(key, new Intl.DateTimeFormat("en-GB", { timeZone: zone, ...options }));
  return cache.get(key);
}

export function parse(text) {
  return text ? new Date(text) : null;
}

export function clock(date, zone, seconds = false) {
  return fmt(zone, { hour: "2-digit", minute: "2-digit", ...(seconds ? { second: "2-digit" } : {}), hourCycle: "h23" }).format(date);
}

export function day(date, zone) {
  return fmt(zone, { weekday: "short", day: "2-digit", month: "short" }).format(date);
}

export function isoDay(date, zone) {
  const parts = fmt(zone, { year: "numeric", month: "2-digit", day: "2-digit" }).formatToParts(date);
  const get = (t) => parts.find((p) => p.type === t).value;
  return `${get("year")}-${get("month")}-${get("day")}`;
}

export function full(date, zone) {
  if (!date) return "—";
  return `${isoDay(date, zone)} ${clock(date, zone, true)} ${shortZone(date, zone)}`;
}

export function shortZone(date, zone) {
  const part = fmt(zone, { timeZoneName: "short" }).formatToParts(date).find((p) => p.type === "timeZoneName");
  return part ? part.value : zone;
}

export function relative(date, now = new Date()) {
  if (!date) return "—";
  const seconds = Math.round((date - now) / 1000);
  const abs = Math.abs(seconds);
  const [value, unit] = abs < 60 ? [abs, "s"] : abs < 3600 ? [Math.round(abs / 60), "m"]
    : abs < 86400 ? [Math.round(abs / 3600), "h"] : [Math.round(abs / 86400), "d"];
  return seconds >= 0 ? `in ${value}${unit}` : `${value}${unit} ago`;
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)}m ${Math.round((ms % 60000) / 1000)}s`;
}

export function zones() {
  try {
    return Intl.supportedValuesOf("timeZone");
  } catch {
    return ["UTC", "Europe/Warsaw", "Europe/London", "America/New_York", "Asia/Tokyo"];
  }
}
