// Numbers, money, dates and limits, the same way on every page.

const usd2 = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD" });
const usd4 = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", maximumFractionDigits: 4 });
const whole = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
// Every time is shown in UTC, with seconds, the zone said: request logs line up with the
// gateway's own log lines, the usage days (UTC rollups) and budget resets (UTC midnights),
// whatever zone the browser is in. The Jupyter widgets (conduit_jupyter/formatting.py) write
// times the same way.
const TIME = { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZone: "UTC" };
const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeZone: "UTC" });
const timeFmt = new Intl.DateTimeFormat(undefined, TIME);
const stampFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", ...TIME });
const stampYearFmt = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric", ...TIME });
const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeZone: "UTC" });
const dayFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
const rel = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export function money(value) {
  const v = Number(value || 0);
  return v !== 0 && Math.abs(v) < 0.01 ? usd4.format(v) : usd2.format(v);
}
export const count = (v) => whole.format(Number(v || 0));
export const short = (v) => compact.format(Number(v || 0));
/** "1 model", "3 models". */
export const plural = (n, one, many = `${one}s`) => `${count(n)} ${Number(n) === 1 ? one : many}`;

/** "Dec 6, 2026, 17:35:04 UTC": an instant, wherever it stands alone. */
export function dateTime(iso) {
  return iso ? `${dateTimeFmt.format(new Date(iso))}, ${timeFmt.format(new Date(iso))} UTC` : "—";
}
/** "Dec 6, 17:35:04" (the year only when not this one): table cells under a "(UTC)" header. */
export function stamp(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return (d.getUTCFullYear() === new Date().getUTCFullYear() ? stampFmt : stampYearFmt).format(d);
}
/** "17:35:04 UTC". */
export function time(iso) {
  return iso ? `${timeFmt.format(new Date(iso))} UTC` : "—";
}
/** "Dec 6, 2026": the UTC day of an instant. */
export function date(iso) {
  return iso ? dateFmt.format(new Date(iso)) : "—";
}
/** "Dec 6" for a YYYY-MM-DD day of the usage rollups (kept in UTC). */
export function day(yyyyMmDd) {
  return dayFmt.format(new Date(`${yyyyMmDd}T00:00:00Z`));
}

export function relative(iso) {
  if (!iso) return "—";
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  const abs = Math.abs(seconds);
  const [value, unit] =
    abs < 60 ? [seconds, "second"] : abs < 3600 ? [seconds / 60, "minute"] :
    abs < 86400 ? [seconds / 3600, "hour"] : abs < 86400 * 45 ? [seconds / 86400, "day"] :
    abs < 86400 * 400 ? [seconds / (86400 * 30.4), "month"] : [seconds / (86400 * 365), "year"];
  return abs < 10 ? "just now" : rel.format(Math.round(value), unit);
}

/** "600 req/min, 200k tok/min": the same words as the Jupyter widgets. */
export function limitsText(o) {
  const parts = [];
  const n = (v) => short(v).replace(/K$/, "k");
  if (o.rpm) parts.push(`${n(o.rpm)} req/min`);
  if (o.rpd) parts.push(`${n(o.rpd)} req/day`);
  if (o.tpm) parts.push(`${n(o.tpm)} tok/min`);
  if (o.max_parallel) parts.push(`${count(o.max_parallel)} parallel`);
  if (o.max_realtime_sessions) parts.push(`${count(o.max_realtime_sessions)} realtime`);
  return parts.length ? parts.join(", ") : "No limits";
}

export const PERIODS = { "1d": "daily", "7d": "weekly", "30d": "per 30 days", monthly: "monthly", total: "in total" };

/** When the current budget period ends, or null for "total" and no budget. */
export function periodEnd(duration, periodStart) {
  if (!duration || duration === "total" || !periodStart) return null;
  const start = new Date(periodStart);
  if (duration === "monthly") return new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + 1, 1));
  const days = { "1d": 1, "7d": 7, "30d": 30 }[duration];
  return days ? new Date(start.getTime() + days * 86400000) : null;
}

export function budgetText(o) {
  if (o.max_budget === null || o.max_budget === undefined) return `${money(o.spend)} spent, no budget`;
  const end = periodEnd(o.budget_duration, o.period_start);
  const period = PERIODS[o.budget_duration] || "in total";
  return `${money(o.spend)} of ${money(o.max_budget)} ${period}${end ? `, resets ${date(end)}` : ""}`;
}

export function csvCell(v) {
  const text = v === null || v === undefined ? "" : String(v);
  return /[",\n\r]/.test(text) || /^[=+\-@]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}
