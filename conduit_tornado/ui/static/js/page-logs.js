// Request logs: filters, a table, and a detail view. Logs never hold a secret.
import { api, all } from "./api.js";
import { h, field, select, dialog, empty, pageHead, table, trunc } from "./dom.js";
import { money, count, dateTime, stamp } from "./format.js";

const PAGE = 50;
const state = { key_id: "", model: "", status: "", since: "", until: "", offset: 0 };

function statusBadge(code) {
  const kind = code < 300 ? "ok" : code === 499 ? "neutral" : code < 500 ? "warn" : "bad";
  return h("span", { class: `badge ${kind}` }, String(code));
}
// A request refused before any model answered (an error, no tokens, nothing charged) used
// no tokens and cost nothing: "—" says so, where "0" and "$0.00" read as a measured zero.
const refused = (log) => log.status >= 400 && !log.total_tokens && !log.prompt_tokens && !log.completion_tokens && !log.cost;
const tokens = (log, v) => (refused(log) ? "—" : count(v));
const ms = (v) => (v === null || v === undefined ? "—" : `${Number(v).toLocaleString(undefined, { maximumFractionDigits: 1 })} ms`);

function detail(log) {
  const rows = [
    ["Time", dateTime(log.created_at)], ["Request id", h("span", { class: "mono" }, log.request_id)],
    ["Status", statusBadge(log.status)], ["Key", `${log.key_name || "—"} (${log.key_id || "—"})`],
    ["Group", log.group || "—"], ["End user", log.user || "—"], ["Endpoint", log.endpoint],
    ["Model", log.model], ["Streamed", log.stream ? "Yes" : "No"],
    ["Provider", `${log.provider || "—"}${log.deployment ? ` / ${log.deployment}` : ""}`],
    ["Fallback model", log.fallback_model || "—"], ["Attempts", count(log.attempts)],
    ["Total latency", ms(log.latency_ms)], ["Upstream time", ms(log.upstream_ms)], ["Gateway overhead", ms(log.overhead_ms)],
    ["Prompt tokens", tokens(log, log.prompt_tokens)], ["Completion tokens", tokens(log, log.completion_tokens)],
    ["Cached tokens", tokens(log, log.cached_tokens)],
    ["Cost", refused(log) ? "— (nothing charged)" : `${money(log.cost)}${log.unpriced ? " (no price known)" : ""}${log.estimated ? " (tokens estimated)" : ""}`],
    ["Client address", log.client_ip || "—"],
  ];
  const error = [log.error_type, log.error_code].filter(Boolean).join(" · ");
  if (error) rows.push(["Error", error]);
  return dialog(`Request ${log.request_id}`, () =>
    h("dl", { class: "details" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
}

export async function render(root) {
  // The filters are in UTC like every time on the page ("2026-12-06T17:35" is 17:35 UTC).
  const toIso = (value) => (value ? new Date(`${value}Z`).toISOString() : undefined);
  const [{ items: keys }, { items: models }, page] = await Promise.all([
    all("admin/v1/keys"), all("admin/v1/models"),
    api("admin/v1/logs", { query: { key_id: state.key_id, model: state.model, status: state.status,
      since: toIso(state.since), until: toIso(state.until), offset: state.offset, limit: PAGE } }),
  ]);
  const key = field("Key", select([["", "All keys"], ...keys.map((k) => [k.id, `${k.name} (${k.prefix}…)`])], state.key_id));
  const model = field("Model", select([["", "All models"], ...models.map((m) => [m.name, m.name])], state.model));
  const status = field("Status code", h("input", { type: "text", inputmode: "numeric", placeholder: "any", value: state.status, size: 6 }));
  const since = field("From (UTC)", h("input", { type: "datetime-local", value: state.since }));
  const until = field("Until (UTC)", h("input", { type: "datetime-local", value: state.until }));
  const apply = () => {
    if (status.input.value && !/^\d{3}$/.test(status.input.value.trim())) {
      status.setError("Enter a three-digit HTTP status, such as 429.");
      status.input.focus();
      return;
    }
    Object.assign(state, { key_id: key.input.value, model: model.input.value, status: status.input.value.trim(),
      since: since.input.value, until: until.input.value, offset: 0 });
    render(root);
  };
  for (const f of [key, model, since, until]) f.input.addEventListener("change", apply);
  status.input.addEventListener("keydown", (e) => { if (e.key === "Enter") apply(); });
  status.input.addEventListener("change", apply);
  const filtered = state.key_id || state.model || state.status || state.since || state.until;
  root.replaceChildren(
    pageHead("Request logs", "Every request through the gateway, newest first. Prompts, answers and keys are never logged.",
      h("button", { type: "button", class: "btn", on: { click: () => render(root) } }, "Refresh")),
    h("div", { class: "toolbar" }, key.wrap, model.wrap, status.wrap, since.wrap, until.wrap,
      filtered ? h("button", { type: "button", class: "btn ghost", on: { click: () => {
        Object.assign(state, { key_id: "", model: "", status: "", since: "", until: "", offset: 0 }); render(root);
      } } }, "Clear filters") : null));
  if (!page.data.length) {
    root.append(h("div", { class: "card" }, filtered
      ? empty("No request matches", "Widen the time range or clear the filters.")
      : empty("No requests yet", "Requests made with a virtual key show here. Try one in the Playground.",
        h("a", { class: "btn primary", href: "#/playground" }, "Open the Playground"))));
    return;
  }
  root.append(table([
    { label: "Time (UTC)", cell: (l) => h("button", { type: "button", class: "linklike", on: { click: () => detail(l) },
      "aria-label": `Details of request ${l.request_id}`, title: dateTime(l.created_at) }, stamp(l.created_at)) },
    { label: "Status", cell: (l) => statusBadge(l.status) },
    { label: "Key", cell: (l) => (l.key_name ? trunc(l.key_name, { cls: "narrow" }) : "—") },
    { label: "Model", cell: (l) => trunc(l.model || "—", { cls: "narrow" }) },
    { label: "Endpoint", cls: "hide-sm hide-md", cell: (l) => l.endpoint },
    { label: "Provider", cls: "hide-sm hide-md", cell: (l) => (l.provider ? trunc(l.provider, { cls: "narrow" }) : "—") },
    { label: "Tokens", num: true, cell: (l) => tokens(l, l.total_tokens) },
    { label: "Cost", num: true, cell: (l) => (refused(l) ? "—"
      : l.unpriced ? h("span", { class: "muted", title: "No price is known for this model" }, "unpriced") : money(l.cost)) },
    { label: "Latency", num: true, cell: (l) => ms(l.latency_ms) },
  ], page.data, { caption: "Request logs" }),
  h("div", { class: "pager" },
    h("span", { class: "muted" }, `${count(state.offset + 1)}–${count(state.offset + page.data.length)} of ${count(page.total)}`),
    h("div", { class: "chips" },
      h("button", { type: "button", class: "btn small", disabled: state.offset === 0, on: { click: () => { state.offset = Math.max(0, state.offset - PAGE); render(root); } } }, "Newer"),
      h("button", { type: "button", class: "btn small", disabled: !page.has_more, on: { click: () => { state.offset += PAGE; render(root); } } }, "Older"))));
}
