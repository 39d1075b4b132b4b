// Alerts: budget thresholds crossed by keys and groups.
import { api } from "./api.js";
import { h, empty, pageHead, table, trunc } from "./dom.js";
import { money, dateTime, stamp } from "./format.js";

export async function render(root) {
  const page = await api("admin/v1/alerts", { query: { limit: 200 } });
  root.replaceChildren(pageHead("Alerts", "Budget thresholds crossed, newest first. Set CONDUIT_BUDGET_WEBHOOK_URL to receive them as webhooks."));
  if (!page.data.length) {
    root.append(h("div", { class: "card" }, empty("No alerts", "When a key or group spends 50%, 80% or all of its budget, it shows here.")));
    return;
  }
  root.append(table([
    { label: "Time (UTC)", cell: (a) => h("span", { title: dateTime(a.created_at) }, stamp(a.created_at)) },
    { label: "Subject", cell: (a) => [`${a.subject?.type === "groups" || a.subject?.type === "group" ? "Group" : "Key"} `,
      trunc(a.subject?.name || a.subject?.id || "")] },
    { label: "Threshold", num: true, cell: (a) => h("span", { class: `badge ${a.threshold >= 1 ? "bad" : "warn"}` }, `${Math.round(a.threshold * 100)}%`) },
    { label: "Spend", num: true, cell: (a) => money(a.spend) },
    { label: "Budget", num: true, cell: (a) => money(a.max_budget) },
    { label: "Period from (UTC)", cls: "hide-sm", cell: (a) => h("span", { title: dateTime(a.period_start) }, stamp(a.period_start)) },
  ], page.data, { caption: "Budget alerts" }));
}
