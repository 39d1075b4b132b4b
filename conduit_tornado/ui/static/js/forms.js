// Forms built from a list of fields: labelled inputs, values read back as API bodies, and
// each error shown as a sentence under the field it concerns.
import { h, field, select } from "./dom.js";

/** YYYY-MM-DD of an instant in UTC (the UI's one time zone; what a date input shows). */
function utcDay(iso) {
  return new Date(iso).toISOString().slice(0, 10);
}

/**
 * spec: [{name, label, type, help, options, wide, placeholder, required}]
 * types: text, number, money, select, check, date, list (comma or newline separated), json
 */
export function buildForm(spec, initial = {}, { creating = true } = {}) {
  const fields = {};
  const grid = h("div", { class: "form-grid" });
  for (const f of spec) {
    if (f.type === "section") {
      grid.append(h("h3", { class: "wide", style: "margin:4px 0 0" }, f.label));
      continue;
    }
    const value = initial[f.name];
    let input;
    if (f.type === "select") input = select(f.options, value ?? f.default ?? "");
    else if (f.type === "check") input = h("input", { type: "checkbox", checked: value ?? f.default ?? false });
    else if (f.type === "json") {
      input = h("textarea", { spellcheck: "false", class: "mono", placeholder: f.placeholder || "" });
      input.value = value && Object.keys(value).length ? JSON.stringify(value, null, 2) : "";
      input.rows = Math.min(10, Math.max(3, input.value.split("\n").length));
    } else if (f.type === "list") {
      input = h("input", { type: "text", placeholder: f.placeholder || "" });
      input.value = (value || []).join(", ");
    } else if (f.type === "date") {
      input = h("input", { type: "date" });
      input.value = value ? utcDay(value) : "";
    } else {
      const numeric = f.type === "number" || f.type === "money";
      input = h("input", {
        type: f.type === "password" ? "password" : numeric ? "number" : "text",
        min: numeric ? "0" : null, step: f.type === "money" ? "0.01" : numeric ? "1" : null,
        inputmode: numeric ? (f.type === "money" ? "decimal" : "numeric") : null,
        placeholder: f.placeholder || "", autocomplete: "off",
        list: f.datalist || null,
      });
      input.value = value ?? "";
    }
    input.name = f.name;
    if (f.required) input.required = true;
    const made = field(f.label, input, { help: f.help, wide: f.wide || f.type === "json" });
    fields[f.name] = { ...made, spec: f };
    grid.append(made.wrap);
  }
  const formError = h("p", { class: "form-error", role: "alert", hidden: true });

  function clearErrors() {
    for (const f of Object.values(fields)) f.setError("");
    formError.hidden = true;
  }

  /** The body to send, or null after showing the errors found here. */
  function collect() {
    clearErrors();
    const body = {};
    let ok = true;
    const fail = (name, message) => {
      fields[name].setError(message);
      if (ok) fields[name].input.focus();
      ok = false;
    };
    for (const [name, { input, spec: f }] of Object.entries(fields)) {
      const raw = f.type === "check" ? input.checked : input.value.trim();
      const before = initial[name];
      if (f.type === "check") {
        if (creating ? raw !== (f.default ?? false) : raw !== Boolean(before ?? f.default)) body[name] = raw;
        continue;
      }
      if (raw === "") {
        if (f.required) fail(name, `Enter ${f.label.toLowerCase()}.`);
        else if (!creating && before !== null && before !== undefined && !(Array.isArray(before) && !before.length)
          && !(typeof before === "object" && !Array.isArray(before) && !Object.keys(before).length)) {
          body[name] = f.type === "list" ? [] : f.type === "json" && !("clearAs" in f) ? {} : (f.clearAs ?? null);
        }
        continue;
      }
      let value = raw;
      if (f.type === "number" || f.type === "money") {
        value = Number(raw);
        if (!Number.isFinite(value) || value < 0 || (f.type === "number" && !Number.isInteger(value))) {
          fail(name, f.type === "money" ? `${f.label} must be an amount in US dollars, such as 25 or 12.50.` : `${f.label} must be a whole number.`);
          continue;
        }
        if (f.type === "number" && value < 1 && !f.allowZero) {
          fail(name, `${f.label} must be at least 1 (leave it empty for no limit).`);
          continue;
        }
      } else if (f.type === "list") {
        value = raw.split(/[\s,]+/).filter(Boolean);
      } else if (f.type === "json") {
        try {
          value = JSON.parse(raw);
        } catch (err) {
          fail(name, `${f.label} is not valid JSON: ${err.message}.`);
          continue;
        }
        if (typeof value !== "object" || value === null || Array.isArray(value)) {
          fail(name, `${f.label} must be a JSON object, such as {"team": "research"}.`);
          continue;
        }
      } else if (f.type === "date") {
        if (!creating && before && utcDay(before) === raw) continue; // unchanged
        value = new Date(`${raw}T23:59:59Z`).toISOString();
      }
      if (creating || JSON.stringify(value) !== JSON.stringify(before)) body[name] = value;
    }
    return ok ? body : null;
  }

  /** Put an API error under its field (its `param`: "allowed_ips.1" is the allowed_ips
   * field), else above the buttons. */
  function showError(err) {
    // A check across fields names none as `param`, but its message may start with one
    // ("base_url is required for azure providers"): that field is the one to fix.
    const named = Object.keys(fields).find((name) => plain(err.message).startsWith(`${name} `));
    const param = (err.param || named || "").split(".")[0];
    if (param && fields[param]) {
      fields[param].setError(fieldMessage(err.message, err.param || named, fields[param].spec.label));
      fields[param].input.focus();
    } else {
      formError.textContent = err.message;
      formError.hidden = false;
    }
  }

  return { element: h("div", {}, grid, formError), fields, collect, showError, clearErrors, creating };
}

// Pydantic's prefix for a validator's own message, which older gateways passed on.
const plain = (message) => String(message || "").replace(/^Value error, /, "");

/**
 * An API error's message as shown under the field it concerns. The admin API names fields
 * by their JSON names ("allowed_ips must be ..."), for API users; beside a field labelled
 * "Allowed addresses" the label reads better. Otherwise the message is the API's own.
 */
export function fieldMessage(message, param, label) {
  let text = plain(message);
  const parts = String(param || "").split(".");
  const names = [param, parts[0], parts[parts.length - 1]].filter(Boolean);
  for (const name of names) {
    const legacy = `Invalid value for ${name}: `; // older gateways' wording
    if (text.startsWith(legacy)) {
      text = plain(text.slice(legacy.length));
      break;
    }
  }
  for (const name of names) {
    if (text.startsWith(`${name} `) || text.startsWith(`${name}:`)) return label + text.slice(name.length);
  }
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** A form in a dialog: submit calls `save(body)`; errors stay in the form. */
export function formBody(form, { submitLabel, save, close }) {
  const submit = h("button", { type: "submit", class: "btn primary" }, submitLabel);
  const el = h("form", { novalidate: true }, form.element,
    h("div", { class: "actions" },
      h("button", { type: "button", class: "btn", on: { click: () => close() } }, "Cancel"), submit));
  el.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = form.collect();
    if (!body) return;
    if (!form.creating && !Object.keys(body).length) {
      close(); // nothing changed: nothing to send
      return;
    }
    submit.disabled = true;
    try {
      close(await save(body));
    } catch (err) {
      form.showError(err);
    } finally {
      submit.disabled = false;
    }
  });
  return el;
}

export const DURATIONS = [["", "No reset"], ["1d", "Daily"], ["7d", "Weekly"], ["30d", "Every 30 days"], ["monthly", "Monthly (calendar)"], ["total", "Never (lifetime)"]];
