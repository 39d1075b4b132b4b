// Health at a glance: the store, deployments in cooldown, the request-log queue.
import { api } from "./api.js";
import { h, empty, pageHead, table, trunc } from "./dom.js";
import { count, plural, dateTime } from "./format.js";

export async function render(root) {
  const data = await api("ui/api/health");
  const cooling = data.deployments.filter((d) => d.cooldown_seconds > 0);
  const checked = data.deployments.filter((d) => d.healthy === true || d.healthy === false);
  const failing = checked.filter((d) => d.healthy === false);
  const stat = (label, value, sub, kind) => h("div", { class: "stat" }, h("div", { class: "label" }, label),
    h("div", { class: "value" }, kind ? h("span", { class: `badge ${kind}` }, value) : value), h("div", { class: "sub" }, sub));
  root.replaceChildren(
    pageHead("Health", "The gateway's state now.", h("button", { type: "button", class: "btn", on: { click: () => render(root) } }, "Refresh")),
    h("div", { class: "stats" },
      stat("Store", data.store.ok ? "Reachable" : "Unreachable", `${data.store.kind}, answered in ${data.store.ping_ms} ms`, data.store.ok ? "ok" : "bad"),
      stat("Deployments in cooldown", count(cooling.length), `of ${plural(data.deployments.length, "deployment")}`, cooling.length ? "warn" : null),
      stat("Failing health checks", count(failing.length), checked.length ? `of ${plural(checked.length, "deployment")} checked` : "Active checks are off",
        failing.length ? "bad" : null),
      stat("Other requests in flight", count(data.in_flight_requests), `${plural(data.models, "model")}, ${plural(data.providers, "provider")}`),
      stat("Request logs waiting", count(data.logs_pending), `${count(data.logs_dropped)} dropped since start`, data.logs_dropped ? "warn" : null)));
  if (!data.deployments.length) {
    root.append(h("div", { class: "card" }, empty("No deployments", "Add a provider and map a model to it to see its health here.")));
    return;
  }
  root.append(table([
    { label: "Model", cell: (d) => trunc(d.model) },
    { label: "Deployment", cell: (d) => trunc(`${d.provider}/${d.upstream_model}`, { cls: "mono" }) },
    { label: "State", cell: (d) => d.credential_error ? h("span", { class: "badge bad" }, "Credential error")
      : !d.provider_enabled ? h("span", { class: "badge neutral" }, "Disabled")
      : d.cooldown_seconds > 0 ? h("span", { class: "badge warn" }, `Cooling down ${Math.ceil(d.cooldown_seconds)} s`)
      : d.healthy === false ? h("span", { class: "badge bad" }, "Tried last")
      : h("span", { class: "badge ok" }, "Serving") },
    { label: "Health check", cell: checkCell },
    { label: "Recent failures", num: true, cell: (d) => count(d.failures) },
    { label: "In flight", num: true, cell: (d) => count(d.in_flight) },
    { label: "Latency", num: true, cell: (d) => d.latency_ms === null ? "—" : `${d.latency_ms < 10 ? d.latency_ms.toFixed(1) : Math.round(d.latency_ms)} ms` },
  ], data.deployments, { caption: "Deployments" }));
}

// The last active health check: passed, failed (with the scrubbed reason), or not run.
function checkCell(d) {
  if (d.healthy === null || d.healthy === undefined) return h("span", { class: "muted" }, "Not checked");
  const when = dateTime(new Date(d.checked_at * 1000).toISOString());
  if (d.healthy) return h("span", { class: "badge ok", title: `Checked at ${when}` }, "Passed");
  return h("span", {},
    h("span", { class: "badge bad", title: `Checked at ${when}` }, "Failed"), " ",
    h("span", { class: "muted" }, d.check_error || ""));
}
