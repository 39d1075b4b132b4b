// Models: the names clients ask for, mapped to deployments on providers.
import { api, all } from "./api.js";
import { h, field, select, dialog, confirmDialog, empty, pageHead, table, toast, trunc } from "./dom.js";
import { buildForm, fieldMessage } from "./forms.js";
import { money } from "./format.js";

const STRATEGIES = [["weighted", "Weighted"], ["round_robin", "Round robin"], ["least_busy", "Least busy"], ["lowest_latency", "Lowest latency"]];

function deploymentRow(providers, d = {}) {
  const provider = field("Provider", select(providers.map((p) => p.name), d.provider));
  const model = field("Provider's model", h("input", { type: "text", value: d.model || "", autocomplete: "off" }));
  const weight = field("Weight", h("input", { type: "number", min: "0", step: "any", value: d.weight ?? 1 }));
  const priority = field("Priority", h("input", { type: "number", min: "0", step: "1", value: d.priority ?? 0 }), { help: "0 is tried first." });
  const remove = h("button", { type: "button", class: "btn small danger" }, "Remove");
  const wrap = h("fieldset", {}, h("legend", {}, "Deployment"), h("div", { class: "form-grid" }, provider.wrap, model.wrap, weight.wrap, priority.wrap), h("div", { class: "actions", style: "margin-top:8px" }, remove));
  const read = () => {
    for (const f of [provider, model, weight, priority]) f.setError("");
    if (!model.input.value.trim()) { model.setError("Enter the model name the provider uses, e.g. gpt-4o-mini."); return null; }
    return { ...d, provider: provider.input.value, model: model.input.value.trim(), weight: Number(weight.input.value) || 1, priority: Number(priority.input.value) || 0 };
  };
  const inputs = { provider, model, weight, priority };
  /** An API error about this deployment ("deployments.0.model"), under its field. */
  const showError = (name, message, param) => {
    const target = inputs[name] || model;
    target.setError(fieldMessage(message, param, target.input.labels?.[0]?.textContent || name));
    target.input.focus();
  };
  return { wrap, read, remove, showError };
}

function edit(model, providers, names) {
  const creating = !model;
  const form = buildForm([
    { name: "name", label: "Model name", required: creating, help: "What clients send as model, e.g. gpt-4o-mini." },
    { name: "strategy", label: "Strategy", type: "select", options: STRATEGIES, help: "How deployments of one priority share requests." },
    { name: "fallbacks", label: "Fallback models", type: "list", placeholder: "none", datalist: "fallback-names", help: "Tried in order when every deployment fails." },
    { name: "description", label: "Description" },
    { name: "pricing", label: "Pricing (JSON, USD per million tokens)", type: "json", clearAs: null, placeholder: '{"input_per_mtok": 0.15, "output_per_mtok": 0.6}',
      help: "Overrides the bundled price table for this model." },
    { name: "enabled", label: "Enabled", type: "check", default: true },
  ].filter((f) => creating || f.name !== "name"), model || {}, { creating });
  const rows = [];
  const list = h("div");
  const addRow = (d) => {
    const row = deploymentRow(providers, d);
    row.remove.addEventListener("click", () => { rows.splice(rows.indexOf(row), 1); row.wrap.remove(); });
    rows.push(row);
    list.append(row.wrap);
  };
  for (const d of model?.deployments || [{}]) addRow(d);
  return dialog(creating ? "Map a model" : `Edit model ${model.name}`, (close) => {
    const submit = h("button", { type: "submit", class: "btn primary" }, creating ? "Create model" : "Save changes");
    const error = h("p", { class: "form-error", role: "alert", hidden: true });
    const el = h("form", { novalidate: true }, h("datalist", { id: "fallback-names" }, names.map((n) => h("option", { value: n }))),
      form.element, list,
      h("button", { type: "button", class: "btn small", style: "margin-top:10px", on: { click: () => addRow({}) } }, "Add deployment"),
      error, h("div", { class: "actions" }, h("button", { type: "button", class: "btn", on: { click: () => close() } }, "Cancel"), submit));
    el.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hidden = true;
      const body = form.collect();
      const deployments = rows.map((r) => r.read());
      if (!body || deployments.includes(null)) return;
      if (!deployments.length) { error.textContent = "Add at least one deployment."; error.hidden = false; return; }
      body.deployments = deployments;
      submit.disabled = true;
      try {
        close(creating ? await api("admin/v1/models", { method: "POST", body })
          : await api(`admin/v1/models/${encodeURIComponent(model.name)}`, { method: "PATCH", body }));
      } catch (err) {
        const [head, index, name] = (err.param || "").split(".");
        if (head === "deployments" && rows[Number(index)] && name) rows[Number(index)].showError(name, err.message, err.param);
        else if (head === "deployments") { error.textContent = err.message; error.hidden = false; } else form.showError(err);
      } finally {
        submit.disabled = false;
      }
    });
    return el;
  });
}

export async function render(root) {
  const [{ items: models }, { items: providers }] = await Promise.all([all("admin/v1/models"), all("admin/v1/providers")]);
  const refresh = () => render(root);
  const guard = (fn) => async () => { try { await fn(); } catch (err) { toast(err.message, "bad"); } };
  const names = models.map((m) => m.name);
  const add = h("button", { type: "button", class: "btn primary", disabled: !providers.length,
    on: { click: guard(async () => { if (await edit(null, providers, names)) refresh(); }) } }, "Map a model");
  root.replaceChildren(pageHead("Models", "Model names clients use, and the deployments behind each.", add));
  if (!models.length) {
    root.append(h("div", { class: "card" }, providers.length
      ? empty("No models yet", "Map a model name (such as gpt-4o-mini) to one or more provider deployments.")
      : empty("No providers yet", "Add a provider first; models are mapped onto providers.", h("a", { class: "btn primary", href: "#/providers" }, "Add a provider"))));
    return;
  }
  const price = (p) => (p ? `${money(p.input_per_mtok)} in / ${money(p.output_per_mtok)} out per 1M tokens` : "Bundled price table");
  root.append(table([
    { label: "Model", cell: (m) => [trunc(m.name, { tag: "strong" }), m.description ? trunc(m.description, { tag: "div", cls: "sub" }) : null] },
    { label: "Deployments", cls: "wrap", cell: (m) => h("div", {}, m.deployments.map((d) =>
      h("div", {}, h("span", { class: "mono" }, `${d.provider}/${d.model}`), h("span", { class: "sub" }, ` weight ${d.weight}, priority ${d.priority}`)))) },
    { label: "Strategy", cell: (m) => (STRATEGIES.find(([k]) => k === m.strategy) || [0, m.strategy])[1] },
    { label: "Fallbacks", cell: (m) => m.fallbacks.length ? m.fallbacks.join(" → ") : h("span", { class: "muted" }, "None") },
    { label: "Pricing", cls: "wrap", cell: (m) => price(m.pricing) },
    { label: "Status", cell: (m) => h("span", { class: `badge ${m.enabled ? "ok" : "neutral"}` }, m.enabled ? "Enabled" : "Disabled") },
    { label: "Actions", cls: "col-actions", cell: (m) => h("div", { class: "chips row-actions" },
      h("button", { type: "button", class: "btn small", "aria-label": `Edit model ${m.name}`, on: { click: guard(async () => { if (await edit(m, providers, names)) refresh(); }) } }, "Edit"),
      h("button", { type: "button", class: "btn small danger", "aria-label": `Delete model ${m.name}`, on: { click: guard(async () => {
        if (!(await confirmDialog(`Delete model ${m.name}?`, "Clients asking for it get 404 at once.", "Delete model"))) return;
        await api(`admin/v1/models/${encodeURIComponent(m.name)}`, { method: "DELETE" });
        toast(`Model ${m.name} deleted.`);
        refresh();
      }) } }, "Delete")) },
  ], models, { caption: "Models" }));
}
