// Groups: teams whose keys share a budget and limits.
import { api, all } from "./api.js";
import { h, dialog, confirmDialog, empty, pageHead, table, toast, trunc } from "./dom.js";
import { buildForm, formBody, DURATIONS } from "./forms.js";
import { limitsText, dateTime, date, count } from "./format.js";
import { spendCell } from "./page-keys.js";

const SPEC = [
  { name: "name", label: "Name", required: true, help: "Keys name this group in their Group field." },
  { name: "max_budget", label: "Budget (USD)", type: "money", help: "Shared by every key in the group." },
  { name: "budget_duration", label: "Budget resets", type: "select", options: DURATIONS },
  { name: "rpm", label: "Requests per minute", type: "number" },
  { name: "rpd", label: "Requests per day", type: "number" },
  { name: "tpm", label: "Tokens per minute", type: "number" },
  { name: "max_parallel", label: "Parallel requests", type: "number" },
  { name: "metadata", label: "Metadata (JSON)", type: "json", placeholder: '{"cost_center": "R-42"}' },
];

function edit(group) {
  const creating = !group;
  const spec = creating ? SPEC : SPEC.filter((f) => f.name !== "name");
  const form = buildForm(spec, group || {}, { creating });
  return dialog(creating ? "Create a group" : `Edit group ${group.name}`, (close) => formBody(form, {
    submitLabel: creating ? "Create group" : "Save changes", close,
    save: (body) => creating ? api("admin/v1/groups", { method: "POST", body })
      : api(`admin/v1/groups/${encodeURIComponent(group.name)}`, { method: "PATCH", body }),
  }));
}

export async function render(root) {
  const [{ items: groups }, { items: keys }] = await Promise.all([all("admin/v1/groups"), all("admin/v1/keys")]);
  const refresh = () => render(root);
  const guard = (fn) => async () => { try { await fn(); } catch (err) { toast(err.message, "bad"); } };
  const create = h("button", { type: "button", class: "btn primary", on: { click: guard(async () => { if (await edit(null)) refresh(); }) } }, "Create group");
  root.replaceChildren(pageHead("Groups", "Teams: their keys share one budget and one set of limits.", create));
  if (!groups.length) {
    root.append(h("div", { class: "card" }, empty("No groups yet", "Create a group for a team, then choose it in each of its keys.")));
    return;
  }
  const members = (g) => keys.filter((k) => k.group === g.name);
  root.append(table([
    { label: "Name", cell: (g) => trunc(g.name, { tag: "strong" }) },
    { label: "Members", cls: "wrap", cell: (g) => {
      const m = members(g);
      return m.length ? h("div", {}, `${count(m.length)} ${m.length === 1 ? "key" : "keys"}`,
        h("div", { class: "sub" }, m.slice(0, 4).map((k) => k.name).join(", ") + (m.length > 4 ? ", …" : ""))) : h("span", { class: "muted" }, "No keys");
    } },
    { label: "Spend / budget", cell: spendCell },
    { label: "Limits", cls: "wrap", cell: limitsText },
    { label: "Created", cls: "hide-sm hide-md", cell: (g) => h("span", { title: dateTime(g.created_at) }, date(g.created_at)) },
    { label: "Actions", cls: "col-actions", cell: (g) => h("div", { class: "chips row-actions" },
      h("button", { type: "button", class: "btn small", "aria-label": `Edit group ${g.name}`, on: { click: guard(async () => { if (await edit(g)) refresh(); }) } }, "Edit"),
      h("button", { type: "button", class: "btn small danger", "aria-label": `Delete group ${g.name}`, on: { click: guard(async () => {
        if (!(await confirmDialog(`Delete group ${g.name}?`, `Its ${count(members(g).length)} keys keep working, without the group's budget and limits.`, "Delete group"))) return;
        await api(`admin/v1/groups/${encodeURIComponent(g.name)}`, { method: "DELETE" });
        toast(`Group ${g.name} deleted.`);
        refresh();
      }) } }, "Delete")) },
  ], groups, { caption: "Groups" }));
}
