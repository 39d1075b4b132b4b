// Providers: where requests go. Credentials are write-only: the API never returns them.
import { api, all } from "./api.js";
import { h, field, dialog, confirmDialog, empty, pageHead, table, toast, trunc } from "./dom.js";
import { buildForm, formBody } from "./forms.js";
import { dateTime, stamp } from "./format.js";

const TYPES = ["openai", "azure", "anthropic", "gemini", "ollama", "mock"];
// Each type's default base URL (routing/providers/*: default_base) and how its own URL is
// written: whether it ends in /v1 differs between wire formats, and a wrong one gets 404s.
const BASES = {
  openai: { default: "https://api.openai.com/v1", help: "Ends in /v1, e.g. http://127.0.0.1:8000/v1 for a vLLM server." },
  azure: { default: null, help: "Required: the resource's endpoint, without /openai, e.g. https://my-resource.openai.azure.com." },
  anthropic: { default: "https://api.anthropic.com", help: "Without /v1, e.g. https://api.anthropic.com." },
  gemini: { default: "https://generativelanguage.googleapis.com", help: "Without /v1beta." },
  ollama: { default: null, help: "Required, ending in /v1, e.g. http://127.0.0.1:11434/v1." },
  mock: { default: null, help: "Not used: the mock provider answers from inside the gateway." },
};
function baseHelp(type) {
  const info = BASES[type] || BASES.openai;
  return info.default ? `${info.help} Empty: ${info.default}.` : info.help;
}

function baseUrlCell(p) {
  if (p.base_url) return h("span", { class: "mono" }, p.base_url);
  if (p.type === "mock") return h("span", { class: "muted" }, "Built in (no network)");
  const fallback = BASES[p.type]?.default;
  return fallback ? h("span", { class: "muted" }, "Default: ", h("span", { class: "mono" }, fallback))
    : h("span", { class: "badge warn" }, "Not set");
}

function spec(creating) {
  return [
    { name: "name", label: "Name", required: creating, help: "How model mappings refer to it, e.g. openai-prod." },
    { name: "type", label: "Type", type: "select", options: TYPES, help: "The wire format the provider speaks." },
    { name: "base_url", label: "Base URL", placeholder: "default for the type", help: baseHelp("openai") },
    { name: "api_key", label: "API key", type: "password",
      help: creating ? "Stored encrypted; never shown again." : "Leave empty to keep the stored key; type a new one to replace it." },
    { name: "headers", label: "Extra headers (JSON)", type: "json", placeholder: '{"OpenAI-Organization": "org-…"}',
      help: creating ? "Sent on every call; stored encrypted like the key." : "Leave empty to keep the stored headers." },
    { name: "options", label: "Options (JSON)", type: "json", placeholder: '{"api_version": "2024-10-21"}' },
    { name: "enabled", label: "Enabled", type: "check", default: true },
  ];
}

function edit(provider) {
  const creating = !provider;
  const initial = provider ? { ...provider, headers: {}, api_key: "" } : {};
  const form = buildForm(spec(creating), initial, { creating });
  // The base URL's hint follows the type chosen.
  const type = form.fields.type.input;
  const help = form.fields.base_url.wrap.querySelector(".help");
  const follow = () => {
    help.textContent = baseHelp(type.value);
    form.fields.base_url.input.placeholder = BASES[type.value]?.default || (type.value === "mock" ? "not used" : "required");
  };
  type.addEventListener("change", follow);
  follow();
  return dialog(creating ? "Add a provider" : `Edit provider ${provider.name}`, (close) => formBody(form, {
    submitLabel: creating ? "Add provider" : "Save changes", close,
    save: (body) => {
      if (!creating && body.headers && !Object.keys(body.headers).length) delete body.headers;
      return creating ? api("admin/v1/providers", { method: "POST", body })
        : api(`admin/v1/providers/${encodeURIComponent(provider.name)}`, { method: "PATCH", body });
    },
  }));
}

/** One cheap call (a single token) straight to the provider, to check URL and key. */
function testConnection(provider, models) {
  const mapped = models.flatMap((m) => m.deployments).find((d) => d.provider === provider.name);
  return dialog(`Test ${provider.name}`, () => {
    const model = field("Provider's model", h("input", { type: "text", value: mapped ? mapped.model : "", autocomplete: "off" }),
      { help: "One chat completion of at most one token is sent to the provider." });
    const result = h("div", { role: "status", class: "provider-test" });
    const run = h("button", { type: "submit", class: "btn primary" }, "Run test");
    const form = h("form", { novalidate: true }, model.wrap, h("div", { class: "actions" }, run), result);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      model.setError("");
      run.disabled = true;
      result.replaceChildren(h("p", { class: "muted" }, "Calling the provider…"));
      try {
        const out = await api(`ui/api/providers/${encodeURIComponent(provider.name)}/test`, { method: "POST", body: { model: model.input.value.trim() || undefined } });
        result.replaceChildren(out.ok
          ? h("p", {}, h("span", { class: "badge ok" }, "Connected"), ` ${provider.name} answered for ${out.model} in ${Math.round(out.latency_ms)} ms.`)
          : h("div", {}, h("p", {}, h("span", { class: "badge bad" }, "Failed"), ` ${out.message}${out.status && !String(out.message).includes(String(out.status)) ? ` (HTTP ${out.status})` : ""}`),
            out.status === 404 ? h("p", { class: "muted" }, `A 404 from the provider often means a wrong base URL. ${provider.type}: ${baseHelp(provider.type)}`) : null));
      } catch (err) {
        result.replaceChildren();
        model.setError(err.message);
      } finally {
        run.disabled = false;
      }
    });
    return form;
  }, { narrow: true });
}

export async function render(root) {
  const [{ items }, { items: models }] = await Promise.all([all("admin/v1/providers"), all("admin/v1/models")]);
  const refresh = () => render(root);
  const guard = (fn) => async () => { try { await fn(); } catch (err) { toast(err.message, "bad"); } };
  const add = h("button", { type: "button", class: "btn primary", on: { click: guard(async () => { if (await edit(null)) refresh(); }) } }, "Add provider");
  root.replaceChildren(pageHead("Providers", "Upstream APIs and their credentials. Keys and header values are write-only.", add));
  if (!items.length) {
    root.append(h("div", { class: "card" }, empty("No providers yet", "Add the provider your models run on (OpenAI, Azure, Anthropic, Gemini, Ollama), then map model names to it.")));
    return;
  }
  root.append(table([
    { label: "Name", cell: (p) => trunc(p.name, { tag: "strong" }) },
    { label: "Type", cell: (p) => p.type },
    { label: "Base URL", cls: "wrap", cell: baseUrlCell },
    { label: "Credentials", cell: (p) => [p.has_api_key ? h("span", { class: "badge ok" }, "Key set") : h("span", { class: "badge neutral" }, "No key"),
      p.header_names.length ? h("div", { class: "sub" }, `Headers: ${p.header_names.join(", ")}`) : null] },
    { label: "Status", cell: (p) => h("span", { class: `badge ${p.enabled ? "ok" : "neutral"}` }, p.enabled ? "Enabled" : "Disabled") },
    { label: "Updated (UTC)", cls: "hide-sm hide-md", cell: (p) => h("span", { title: dateTime(p.updated_at) }, stamp(p.updated_at)) },
    { label: "Actions", cls: "col-actions", cell: (p) => h("div", { class: "chips row-actions" },
      h("button", { type: "button", class: "btn small", "aria-label": `Test provider ${p.name}`, on: { click: () => testConnection(p, models) } }, "Test"),
      h("button", { type: "button", class: "btn small", "aria-label": `Edit provider ${p.name}`, on: { click: guard(async () => { if (await edit(p)) refresh(); }) } }, "Edit"),
      h("button", { type: "button", class: "btn small danger", "aria-label": `Delete provider ${p.name}`, on: { click: guard(async () => {
        if (!(await confirmDialog(`Delete provider ${p.name}?`, "Models mapped to it stop working until they are mapped elsewhere.", "Delete provider"))) return;
        await api(`admin/v1/providers/${encodeURIComponent(p.name)}`, { method: "DELETE" });
        toast(`Provider ${p.name} deleted.`);
        refresh();
      }) } }, "Delete")) },
  ], items, { caption: "Providers" }));
}
