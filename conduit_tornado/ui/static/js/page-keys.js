// Keys: the table a platform engineer scans, and every action on a key.
import { api, all, PREFIX } from "./api.js";
import { h, field, select, dialog, confirmDialog, empty, pageHead, table, toast, copyText, trunc } from "./dom.js";
import { buildForm, formBody, DURATIONS } from "./forms.js";
import { money, budgetText, limitsText, relative, dateTime, date, time, count } from "./format.js";
import { usageChart } from "./page-usage.js";

const PAGE_SIZE = 25;
const state = { search: "", group: "", status: "", expiring: false, page: 0, sort: null };
const SORTS = {
  name: (k) => k.name.toLowerCase(),
  spend: (k) => k.spend || 0,
  last_used: (k) => k.last_used_at || "",
  expires: (k) => k.expires_at || "9999",
};

export function keySpec(groups, models) {
  return [
    { name: "name", label: "Name", required: true, help: "Who or what uses the key, e.g. alice-notebook." },
    { name: "group", label: "Group", type: "select", options: [["", "No group"], ...groups.map((g) => [g.name, g.name])],
      help: "Keys in a group share its budget and limits." },
    { name: "allowed_models", label: "Allowed models", type: "list", placeholder: "all models", datalist: "model-names",
      help: "Comma-separated names or patterns such as gpt-4o*. Empty allows every model." },
    { name: "expires_at", label: "Expires on", type: "date", help: "The key stops working at the end of this day, UTC. Empty: never." },
    { name: "enabled", label: "Enabled", type: "check", default: true },
    { type: "section", label: "Budget" },
    { name: "max_budget", label: "Budget (USD)", type: "money", help: "Requests are refused once spend reaches it." },
    { name: "budget_duration", label: "Budget resets", type: "select", options: DURATIONS },
    { type: "section", label: "Rate limits" },
    { name: "rpm", label: "Requests per minute", type: "number" },
    { name: "rpd", label: "Requests per day", type: "number" },
    { name: "tpm", label: "Tokens per minute", type: "number", help: "Prompt plus completion tokens." },
    { name: "max_parallel", label: "Parallel requests", type: "number", help: "Requests in flight at once." },
    { name: "max_realtime_sessions", label: "Realtime sessions", type: "number", help: "Open realtime sockets at once." },
    { type: "section", label: "Advanced" },
    { name: "allowed_ips", label: "Allowed addresses", type: "list", placeholder: "any address",
      help: "IP addresses or CIDR networks, e.g. 10.0.0.0/8.", wide: true },
    { name: "user_limits", label: "Limits per end user (JSON)", type: "json",
      placeholder: '{"rpm": 20, "max_budget": 5, "budget_duration": "1d"}',
      help: "Applied separately to each value of the request's user field: rpm, rpd, tpm, max_budget, budget_duration." },
    { name: "model_limits", label: "Limits per model (JSON)", type: "json", placeholder: '{"gpt-4o": {"rpm": 10}}',
      help: "On top of the key's own limits: model name to rpm, rpd, tpm." },
    { name: "metadata", label: "Metadata (JSON)", type: "json", placeholder: '{"team": "research"}',
      help: "Your own labels; returned with the key, never used for routing." },
  ].map((f) => (f.name === "allowed_models" ? { ...f, models } : f));
}

function modelsDatalist(models) {
  return h("datalist", { id: "model-names" }, models.map((m) => h("option", { value: m.name })));
}

export async function editKey(key, groups, models) {
  const creating = !key;
  const form = buildForm(keySpec(groups, models), key || {}, { creating });
  return dialog(creating ? "Create a key" : `Edit ${key.name}`, (close) => [
    modelsDatalist(models),
    formBody(form, {
      submitLabel: creating ? "Create key" : "Save changes",
      close,
      save: (body) => creating
        ? api("admin/v1/keys", { method: "POST", body })
        : api(`admin/v1/keys/${encodeURIComponent(key.id)}`, { method: "PATCH", body }),
    }),
  ]);
}

export function showSecret(created, verb = "created") {
  let copied = null;
  return dialog(`Key ${verb}: ${created.name}`, (close) => {
    copied = h("span", { class: "muted", role: "status" });
    const code = h("code", { "data-secret": "" }, created.key);
    return [
      h("p", { class: "notice" }, "Copy this key now. It is shown once: the gateway keeps only a hash of it."),
      h("div", { class: "secret" }, code,
        h("button", { type: "button", class: "btn primary", on: { click: async () => {
          copied.textContent = (await copyText(created.key)) ? "Copied to the clipboard." : "Select the key and copy it.";
        } } }, "Copy")),
      copied,
      h("p", { class: "muted" }, "Use it as the API key of any OpenAI client, with ", h("code", {}, `${location.origin}${PREFIX}v1`), " as the base URL."),
      h("div", { class: "actions" }, h("button", { type: "button", class: "btn", on: { click: () => close() } }, "Done")),
    ];
  }, { narrow: true });
}

function status(key) {
  if (!key.enabled) return h("span", { class: "badge neutral" }, "Disabled");
  if (key.expires_at && new Date(key.expires_at) < new Date()) return h("span", { class: "badge bad" }, "Expired");
  if (key.max_budget !== null && key.max_budget !== undefined && key.spend >= key.max_budget) return h("span", { class: "badge bad" }, "Over budget");
  return h("span", { class: "badge ok" }, "Active");
}

/** "Expires Jan 5, 2027" under the status, when the key has an expiry. */
function expiryLine(k) {
  if (!k.expires_at) return null;
  const past = new Date(k.expires_at) < new Date();
  return h("div", { class: "sub", title: dateTime(k.expires_at) }, `${past ? "Expired" : "Expires"} ${date(k.expires_at)}`);
}

/** Which models the key may call (names in the tooltip), and its own limits. */
function accessCell(k) {
  const names = k.allowed_models;
  const models = !names.length ? "All models"
    : names.length <= 2 ? names.join(", ") : `${names.slice(0, 2).join(", ")} +${names.length - 2} more`;
  return [h("div", { title: names.length ? `Models: ${names.join(", ")}` : null }, models),
    h("div", { class: "sub" }, limitsText(k))];
}

export function spendCell(o) {
  const hasBudget = o.max_budget !== null && o.max_budget !== undefined;
  const share = hasBudget && o.max_budget > 0 ? Math.min(1, o.spend / o.max_budget) : hasBudget ? 1 : 0;
  return h("div", {},
    h("div", {}, hasBudget ? `${money(o.spend)} / ${money(o.max_budget)}` : money(o.spend)),
    hasBudget ? h("div", { class: `bar${share >= 1 ? " bad" : share >= 0.8 ? " warn" : ""}`, role: "img",
      "aria-label": `${Math.round(share * 100)}% of the budget used` }, h("span", { style: `width:${(share * 100).toFixed(1)}%` })) : null,
    h("div", { class: "sub" }, hasBudget ? budgetText(o).replace(/^[^ ]+ of [^ ]+ /, "") : "no budget"));
}

async function keyActions(key, refresh) {
  return {
    toggle: async () => {
      await api(`admin/v1/keys/${encodeURIComponent(key.id)}`, { method: "PATCH", body: { enabled: !key.enabled } });
      toast(`${key.name} ${key.enabled ? "disabled" : "enabled"}.`);
      refresh();
    },
  };
}

async function rotate(key, refresh) {
  const ok = await confirmDialog(`Rotate ${key.name}?`,
    "A new secret replaces the current one at once: clients using the old secret get 401 until they switch.", "Rotate key", { danger: false });
  if (!ok) return;
  const rotated = await api(`admin/v1/keys/${encodeURIComponent(key.id)}/rotate`, { method: "POST", body: {} });
  await showSecret(rotated, "rotated");
  refresh();
}

async function remove(key, after) {
  const ok = await confirmDialog(`Delete ${key.name}?`,
    `The key ${key.prefix}… stops working at once and cannot be restored. Its request logs and usage stay.`, "Delete key");
  if (!ok) return;
  await api(`admin/v1/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
  toast(`${key.name} deleted.`);
  after();
}

function run(fn) {
  return async () => {
    try {
      await fn();
    } catch (err) {
      toast(err.message, "bad");
    }
  };
}

export async function render(root, [keyId]) {
  if (keyId) return renderKey(root, keyId);
  const [{ items: keys, total }, { items: groups }, { items: models }] = await Promise.all([
    all("admin/v1/keys", { group: state.group || undefined, enabled: state.status || undefined }),
    all("admin/v1/groups"), all("admin/v1/models"),
  ]);
  const refresh = () => render(root, []);
  const create = h("button", { type: "button", class: "btn primary", on: { click: run(async () => {
    const created = await editKey(null, groups, models);
    if (created) {
      await showSecret(created);
      refresh();
    }
  }) } }, "Create key");

  const search = field("Search", h("input", { type: "search", placeholder: "Name, prefix or id", value: state.search }));
  const group = field("Group", select([["", "All groups"], ...groups.map((g) => [g.name, g.name])], state.group));
  const statusSel = field("Status", select([["", "Any status"], ["true", "Enabled"], ["false", "Disabled"]], state.status));
  const expiring = field("Expiring within 30 days", h("input", { type: "checkbox", checked: state.expiring }));
  const results = h("div");
  root.replaceChildren(
    pageHead("Keys", `${count(total)} virtual ${total === 1 ? "key" : "keys"}. Applications use them in place of provider keys.`, create),
    h("div", { class: "toolbar" }, search.wrap, group.wrap, statusSel.wrap, expiring.wrap),
    results);

  const draw = () => {
    const q = state.search.toLowerCase();
    const soon = Date.now() + 30 * 86400000;
    const shown = keys.filter((k) =>
      (!q || [k.name, k.prefix, k.id].some((v) => String(v).toLowerCase().includes(q))) &&
      (!state.expiring || (k.expires_at && new Date(k.expires_at).getTime() < soon)));
    // Keys about to expire: the soonest first, unless a column says otherwise.
    const sort = state.sort || (state.expiring ? { key: "expires", dir: "asc" } : null);
    if (sort) {
      const value = SORTS[sort.key];
      const sign = sort.dir === "asc" ? 1 : -1;
      shown.sort((a, b) => (value(a) < value(b) ? -sign : value(a) > value(b) ? sign : 0));
    }
    const pages = Math.max(1, Math.ceil(shown.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    const slice = shown.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE);
    if (!keys.length && !state.group && !state.status) {
      results.replaceChildren(h("div", { class: "card" }, empty("No keys yet",
        "Create a virtual key for each application or person; you can cap its spend and rate.", create.cloneNode(true))));
      results.querySelector(".empty .btn").addEventListener("click", () => create.click());
      return;
    }
    if (!shown.length) {
      results.replaceChildren(h("div", { class: "card" }, empty("No key matches", "Clear the search or the filters to see every key.")));
      return;
    }
    // Six columns fit 1024 px and up: what the key is, whether it works (expiry included),
    // spend, what it may do, when it was used, and the actions (kept in view). Every setting
    // is on the key's own page.
    const columns = [
      { label: "Name", sortKey: "name", cell: (k) => [
        trunc(k.name, { tag: "a", cls: "linklike", href: `#/keys/${encodeURIComponent(k.id)}` }),
        h("div", { class: "sub line-trunc", title: k.group ? `Group ${k.group}` : null }, h("span", { class: "mono" }, `${k.prefix}…`),
          k.group ? ` · ${k.group}` : null)] },
      { label: "Status / expiry", sortKey: "expires", cell: (k) => [status(k), expiryLine(k)] },
      { label: "Spend / budget", sortKey: "spend", cls: "wrap spend", cell: spendCell },
      { label: "Access", cls: "wrap hide-md", cell: accessCell },
      { label: "Last used", sortKey: "last_used", cell: (k) => k.last_used_at
        ? h("span", { title: dateTime(k.last_used_at) }, relative(k.last_used_at)) : h("span", { class: "muted" }, "Never") },
      { label: "Actions", cls: "col-actions", cell: (k) => h("div", { class: "chips row-actions" },
        h("button", { type: "button", class: "btn small", on: { click: run(async () => {
          if (await editKey(k, groups, models)) { toast(`${k.name} saved.`); refresh(); }
        }) }, "aria-label": `Edit ${k.name}` }, "Edit"),
        h("button", { type: "button", class: "btn small", on: { click: run(async () => (await keyActions(k, refresh)).toggle()) },
          "aria-label": `${k.enabled ? "Disable" : "Enable"} ${k.name}` }, k.enabled ? "Disable" : "Enable"),
        h("button", { type: "button", class: "btn small", on: { click: run(() => rotate(k, refresh)) }, "aria-label": `Rotate ${k.name}` }, "Rotate"),
        h("button", { type: "button", class: "btn small danger", on: { click: run(() => remove(k, refresh)) }, "aria-label": `Delete ${k.name}` }, "Delete")) },
    ];
    const from = state.page * PAGE_SIZE;
    results.replaceChildren(
      table(columns, slice, { caption: "Virtual keys", sort: state.sort, onSort: (key) => {
        const first = key === "name" || key === "expires" ? "asc" : "desc";
        state.sort = state.sort?.key === key ? { key, dir: state.sort.dir === "asc" ? "desc" : "asc" } : { key, dir: first };
        draw();
        results.querySelector(`th[aria-sort] .sort`)?.focus();
      } }),
      h("div", { class: "pager" },
        h("span", { class: "muted" }, `${count(from + 1)}–${count(from + slice.length)} of ${count(shown.length)}${total > keys.length ? ` (newest ${count(keys.length)} loaded)` : ""}`),
        h("div", { class: "chips" },
          h("button", { type: "button", class: "btn small", disabled: state.page === 0, on: { click: () => { state.page--; draw(); } } }, "Previous"),
          h("button", { type: "button", class: "btn small", disabled: state.page >= pages - 1, on: { click: () => { state.page++; draw(); } } }, "Next"))));
  };
  search.input.addEventListener("input", () => { state.search = search.input.value; state.page = 0; draw(); });
  expiring.input.addEventListener("change", () => { state.expiring = expiring.input.checked; state.page = 0; draw(); });
  group.input.addEventListener("change", () => { state.group = group.input.value; state.page = 0; refresh(); });
  statusSel.input.addEventListener("change", () => { state.status = statusSel.input.value; state.page = 0; refresh(); });
  draw();
  if (document.activeElement === document.body && state.search) search.input.focus();
}

async function renderKey(root, keyId) {
  const [key, { items: groups }, { items: models }] = await Promise.all([
    api(`admin/v1/keys/${encodeURIComponent(keyId)}`), all("admin/v1/groups"), all("admin/v1/models")]);
  const refresh = () => render(root, [keyId]);
  const detail = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  root.replaceChildren(
    h("p", {}, h("a", { href: "#/keys" }, "← All keys")),
    pageHead(key.name, `${key.prefix}… · created ${dateTime(key.created_at)}`,
      h("button", { type: "button", class: "btn", on: { click: run(async () => { if (await editKey(key, groups, models)) { toast("Saved."); refresh(); } }) } }, "Edit"),
      h("button", { type: "button", class: "btn", on: { click: run(async () => (await keyActions(key, refresh)).toggle()) } }, key.enabled ? "Disable" : "Enable"),
      h("button", { type: "button", class: "btn", on: { click: run(() => rotate(key, refresh)) } }, "Rotate"),
      h("button", { type: "button", class: "btn danger", on: { click: run(() => remove(key, () => { location.hash = "#/keys"; })) } }, "Delete")),
    h("div", { class: "stats" },
      h("div", { class: "stat" }, h("div", { class: "label" }, "Status"), h("div", { class: "value" }, status(key))),
      h("div", { class: "stat" }, h("div", { class: "label" }, "Spend this period"), h("div", { class: "value" }, money(key.spend)),
        h("div", { class: "sub" }, budgetText(key))),
      h("div", { class: "stat" }, h("div", { class: "label" }, "Last used"), h("div", { class: "value", title: key.last_used_at ? dateTime(key.last_used_at) : null }, key.last_used_at ? relative(key.last_used_at) : "Never")),
      h("div", { class: "stat" }, h("div", { class: "label" }, "Expires"), h("div", { class: "value" }, key.expires_at ? date(key.expires_at) : "Never"),
        key.expires_at ? h("div", { class: "sub" }, `at ${time(key.expires_at)}`) : null)),
    h("div", { class: "card" }, h("h2", {}, "Settings"), h("dl", { class: "details" },
      detail("Id", h("span", { class: "mono" }, key.id)),
      detail("Group", key.group || "—"),
      detail("Models", key.allowed_models.length ? key.allowed_models.join(", ") : "All models"),
      detail("Limits", limitsText(key)),
      detail("Addresses", key.allowed_ips.length ? key.allowed_ips.join(", ") : "Any address"),
      detail("Per end user", Object.keys(key.user_limits || {}).length ? limitsText(key.user_limits) : "—"),
      detail("Per model", Object.keys(key.model_limits || {}).length
        ? Object.entries(key.model_limits).map(([m, l]) => `${m}: ${limitsText(l)}`).join("; ") : "—"),
      detail("Metadata", Object.keys(key.metadata || {}).length ? Object.entries(key.metadata).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ") : "—"))),
    h("div", { class: "card" }, h("h2", {}, "Usage, last 30 days"), await usageChart({ key_id: key.id }, 30, "model")));
}
