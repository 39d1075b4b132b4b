// A JupyterHub user's own page (the gateway as a hub service, the user not a hub admin):
// their key, its spend against the budget, its usage, and a new secret on request. Only
// hub/api/me... is called: the admin API is not theirs.
import { api, PREFIX } from "./api.js";
import { h, pageHead, table, empty, confirmDialog, toast } from "./dom.js";
import { stackedBars } from "./chart.js";
import { money, count, day, date, dateTime, relative, limitsText, budgetText } from "./format.js";
import { showSecret, spendCell } from "./page-keys.js";

const DAYS = 30;
const isoDay = (d) => d.toISOString().slice(0, 10);

function stat(label, value, sub) {
  return h("div", { class: "stat" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value), h("div", { class: "sub" }, sub));
}

function status(key) {
  if (!key.enabled) return h("span", { class: "badge neutral" }, "Disabled");
  if (key.max_budget !== null && key.max_budget !== undefined && key.spend >= key.max_budget) return h("span", { class: "badge bad" }, "Over budget");
  return h("span", { class: "badge ok" }, "Active");
}

export async function render(root, me) {
  const end = new Date();
  const start = new Date(end.getTime() - (DAYS - 1) * 86400000);
  const range = { start: isoDay(start), end: isoDay(end) };
  const [perDay, perModel] = await Promise.all([
    api("hub/api/me/usage", { query: { ...range, group_by: "day" } }),
    api("hub/api/me/usage", { query: { ...range, group_by: "model" } }),
  ]);
  const key = perDay.key;
  const rerender = async () => render(root, { ...me, secret: null, key: (await api("hub/api/me")).key });
  const rotate = h("button", { type: "button", class: "btn", on: { click: async () => {
    const ok = await confirmDialog("Get a new secret?",
      "The current secret stops working at once, also in your running JupyterHub server: restart it from the hub home page to give it the new one.",
      "New secret", { danger: false });
    if (!ok) return;
    try {
      const rotated = await api("hub/api/me/rotate", { method: "POST", body: {} });
      await showSecret(rotated, "rotated");
      await rerender();
    } catch (err) {
      toast(err.message, "bad");
    }
  } } }, "New secret");
  const base = `${location.origin}${PREFIX}v1`;
  const days = [];
  for (let d = new Date(`${range.start}T00:00:00Z`); isoDay(d) <= range.end; d = new Date(d.getTime() + 86400000)) days.push(isoDay(d));
  const spendBy = new Map(perDay.data.map((r) => [r.day, Number(r.cost) || 0]));
  const t = perDay.totals;
  const named = `${date(`${range.start}T12:00:00Z`)} – ${date(`${range.end}T12:00:00Z`)}`;
  const parts = [
    pageHead("Your key", `Signed in with JupyterHub as ${me.user}. Your notebooks use this key; its spend counts against your budget.`, rotate),
    h("div", { class: "stats" },
      stat("Spend", money(key.spend), budgetText(key)),
      stat("Requests", count(t.requests), `${count(t.errors)} errors, ${named}`),
      stat("Tokens", count(t.total_tokens), `${count(t.prompt_tokens)} prompt, ${count(t.completion_tokens)} completion`)),
    h("div", { class: "card" },
      h("h2", {}, key.name),
      table([
        { label: "Key", cell: (k) => h("span", { class: "mono" }, `${k.prefix}…`) },
        { label: "Status", cell: status },
        { label: "Group", cell: (k) => k.group || h("span", { class: "muted" }, "—") },
        { label: "Spend / budget", cls: "wrap spend", cell: spendCell },
        { label: "Limits", cls: "wrap", cell: (k) => limitsText(k) },
        { label: "Last used", cell: (k) => h("span", { title: dateTime(k.last_used_at) }, k.last_used_at ? relative(k.last_used_at) : "Never") },
      ], [key], { caption: "Your virtual key" }),
      h("p", { class: "muted" }, "In your JupyterHub server, OPENAI_BASE_URL and OPENAI_API_KEY are set, so OpenAI() works with no setup. Elsewhere use ",
        h("code", {}, base), " as the base URL with a secret from “New secret”.")),
    h("div", { class: "card" }, h("h2", {}, `Spend per day, ${named}`),
      perDay.data.length
        ? stackedBars({ labels: days, series: [{ name: key.name, values: days.map((d) => spendBy.get(d) || 0) }],
          yTitle: "Spend (USD)", xTitle: "Day (UTC)", format: money, xFormat: day, title: `Spend per day, ${named}` })
        : empty("No usage in this period", "Call a model from a notebook; it shows here within a few seconds.")),
    perModel.data.length ? table([
      { label: "Model", cell: (r) => r.model || "(unknown)" },
      { label: "Requests", num: true, cell: (r) => count(r.requests) },
      { label: "Tokens", num: true, cell: (r) => count(r.total_tokens) },
      { label: "Spend", num: true, cell: (r) => money(r.cost) },
    ], perModel.data.sort((a, b) => b.cost - a.cost), { caption: "Usage by model" }) : null,
  ];
  root.replaceChildren(...parts.filter(Boolean));
  if (me.secret) await showSecret({ name: key.name, key: me.secret }, "created");
}
