// Usage: spend and tokens over time by key, model, group or end user; CSV export.
import { api, all } from "./api.js";
import { h, field, select, empty, pageHead, table, download, trunc } from "./dom.js";
import { stackedBars } from "./chart.js";
import { money, count, short, day, date, csvCell, plural } from "./format.js";

const METRICS = {
  cost: { label: "Spend", title: "Spend (USD)", format: money, tick: (v) => money(v) },
  total_tokens: { label: "Tokens", title: "Tokens (prompt + completion)", format: count, tick: short },
  requests: { label: "Requests", title: "Requests (count)", format: count, tick: short },
};
const DIMENSIONS = { key: "Key", model: "Model", group: "Group", user: "End user" };
const state = { days: 30, by: "model", metric: "cost", start: "", end: "" };

const isoDay = (d) => d.toISOString().slice(0, 10);
export function range(days) {
  const end = new Date();
  const start = new Date(end.getTime() - (days - 1) * 86400000);
  return { start: isoDay(start), end: isoDay(end) };
}

async function usageRows(query) {
  const rows = [];
  for (let offset = 0; offset < 20000; offset += 1000) {
    const page = await api("admin/v1/usage", { query: { ...query, offset, limit: 1000 } });
    rows.push(...page.data);
    if (rows.length >= page.total || !page.data.length) return { rows, totals: page.totals };
  }
  return { rows, totals: null };
}

function days(start, end) {
  const out = [];
  for (let d = new Date(`${start}T00:00:00Z`); isoDay(d) <= end; d = new Date(d.getTime() + 86400000)) out.push(isoDay(d));
  return out;
}

function labeller(keys) {
  const names = new Map(keys.map((k) => [k.id, k]));
  return {
    key: (r) => names.get(r.key_id)?.name || r.key_id || "(deleted key)",
    model: (r) => r.model || "(unknown)",
    group: (r) => names.get(r.key_id)?.group || "No group",
    rawGroup: (r) => names.get(r.key_id)?.group || "",
    user: (r) => r.user || "(no user)",
  };
}

/** Series per label (the 6 largest, the rest as one "All others (n)" series) for one metric
 * over days. The bucket's name says how many it holds, so it cannot be mistaken for a key or
 * model named "other". */
function series(rows, allDays, labelOf, metric) {
  const byLabel = new Map();
  for (const r of rows) {
    const label = labelOf(r);
    if (!byLabel.has(label)) byLabel.set(label, new Map());
    const perDay = byLabel.get(label);
    perDay.set(r.day, (perDay.get(r.day) || 0) + (Number(r[metric]) || 0));
  }
  const ranked = [...byLabel.entries()].map(([name, perDay]) => ({
    name, values: allDays.map((d) => perDay.get(d) || 0),
  })).map((sr) => ({ ...sr, total: sr.values.reduce((a, b) => a + b, 0) }))
    // A series with nothing to draw (no spend this period) would only crowd the legend.
    .filter((sr, _, all) => sr.total > 0 || all.every((o) => !(o.total > 0)))
    .sort((a, b) => b.total - a.total);
  if (ranked.length <= 7) return ranked;
  const other = { name: `All others (${count(ranked.length - 6)})`, values: allDays.map((_, i) => ranked.slice(6).reduce((sum, sr) => sum + sr.values[i], 0)) };
  return [...ranked.slice(0, 6), other];
}

export async function usageChart(filter, nDays, by, metric = "cost") {
  const { start, end } = range(nDays);
  const [{ rows }, { items: keys }] = await Promise.all([usageRows({ ...filter, start, end }), all("admin/v1/keys")]);
  if (!rows.length) return empty("No usage in this period", "Requests made with this key appear here within a few seconds.");
  const m = METRICS[metric];
  const allDays = days(start, end);
  return stackedBars({ labels: allDays, series: series(rows, allDays, labeller(keys)[by], metric),
    yTitle: m.title, xTitle: "Day (UTC)", format: m.tick, xFormat: day, title: `${m.label} per day by ${DIMENSIONS[by].toLowerCase()}` });
}

export async function render(root) {
  const { start, end } = state.days === "custom" && state.start && state.end ? { start: state.start, end: state.end } : range(state.days === "custom" ? 30 : state.days);
  const [{ rows, totals }, { items: keys }] = await Promise.all([usageRows({ start, end }), all("admin/v1/keys")]);
  const period = field("Period", select([[7, "Last 7 days"], [30, "Last 30 days"], [90, "Last 90 days"], [365, "Last 12 months"], ["custom", "Custom dates"]], state.days));
  const from = field("From (UTC)", h("input", { type: "date", value: start, max: end }));
  const to = field("To (UTC)", h("input", { type: "date", value: end, min: start }));
  const custom = h("div", { class: "toolbar", style: "margin:0", hidden: state.days !== "custom" }, from.wrap, to.wrap);
  const applyDates = () => {
    from.setError("");
    if (!from.input.value || !to.input.value) return;
    if (from.input.value > to.input.value) { from.setError("The first day must come before the last."); return; }
    const span = (new Date(to.input.value) - new Date(from.input.value)) / 86400000;
    if (span > 731) { from.setError("Choose at most two years."); return; }
    Object.assign(state, { start: from.input.value, end: to.input.value });
    render(root);
  };
  from.input.addEventListener("change", applyDates);
  to.input.addEventListener("change", applyDates);
  const by = field("Break down by", select(Object.entries(DIMENSIONS), state.by));
  const metric = field("Show", select(Object.entries(METRICS).map(([k, v]) => [k, v.label]), state.metric));
  for (const [f, name] of [[period, "days"], [by, "by"], [metric, "metric"]]) {
    f.input.addEventListener("change", () => {
      if (name === "days" && f.input.value === "custom") {
        state.days = "custom";
        Object.assign(state, { start, end });
        custom.hidden = false;
        from.input.focus();
        return;
      }
      state[name] = name === "days" ? Number(f.input.value) : f.input.value;
      render(root);
    });
  }
  const labels = labeller(keys);
  const exportCsv = h("button", { type: "button", class: "btn", disabled: !rows.length, on: { click: () => {
    const head = ["day", "key_id", "key_name", "group", "model", "user", "requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd"];
    const lines = [head.join(",")].concat(rows.map((r) => [r.day, r.key_id, labels.key(r), labels.rawGroup(r), r.model, r.user,
      r.requests || 0, r.errors || 0, r.prompt_tokens || 0, r.completion_tokens || 0, r.total_tokens || 0, r.cost || 0].map(csvCell).join(",")));
    download(`conduit-usage-${start}-to-${end}.csv`, `${lines.join("\r\n")}\r\n`);
  } } }, "Export CSV");
  const named = `${date(`${start}T12:00:00Z`)} – ${date(`${end}T12:00:00Z`)}`;
  const t = totals || {};
  root.replaceChildren(
    pageHead("Usage", `Spend and tokens per day (UTC), ${named}.`, exportCsv),
    h("div", { class: "toolbar" }, period.wrap, custom, by.wrap, metric.wrap),
    h("div", { class: "stats" },
      stat("Spend", money(t.cost), named), stat("Requests", count(t.requests), plural(t.errors, "error")),
      stat("Tokens", count(t.total_tokens), `${count(t.prompt_tokens)} prompt, ${count(t.completion_tokens)} completion`),
      stat("Unpriced requests", count(t.unpriced_requests), "no price known for the model")));
  if (!rows.length) {
    root.append(h("div", { class: "card" }, empty("No usage in this period",
      "Send a request with a virtual key (try the Playground); it shows here within a few seconds.",
      h("a", { class: "btn primary", href: "#/playground" }, "Open the Playground"))));
    return;
  }
  const allDays = days(start, end);
  const m = METRICS[state.metric];
  const sr = series(rows, allDays, labels[state.by], state.metric);
  root.append(h("div", { class: "card" }, h("h2", {}, `${m.label} per day by ${DIMENSIONS[state.by].toLowerCase()}`),
    stackedBars({ labels: allDays, series: sr, yTitle: m.title, xTitle: "Day (UTC)", format: m.tick, xFormat: day,
      title: `${m.label} per day by ${DIMENSIONS[state.by].toLowerCase()}, ${named}` })));
  const sums = new Map();
  for (const r of rows) {
    const label = labels[state.by](r);
    const acc = sums.get(label) || { label, requests: 0, errors: 0, total_tokens: 0, cost: 0 };
    for (const f of ["requests", "errors", "total_tokens", "cost"]) acc[f] += Number(r[f]) || 0;
    sums.set(label, acc);
  }
  root.append(table([
    { label: DIMENSIONS[state.by], cell: (r) => trunc(r.label) },
    { label: "Requests", num: true, cell: (r) => count(r.requests) },
    { label: "Errors", num: true, cell: (r) => count(r.errors) },
    { label: "Tokens", num: true, cell: (r) => count(r.total_tokens) },
    { label: "Spend", num: true, cell: (r) => money(r.cost) },
  ], [...sums.values()].sort((a, b) => b.cost - a.cost || b.total_tokens - a.total_tokens), { caption: "Usage totals" }));
}

function stat(label, value, sub) {
  return h("div", { class: "stat" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value), h("div", { class: "sub" }, sub));
}
