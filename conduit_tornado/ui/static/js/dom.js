// Small DOM helpers. Text is always set as text, never parsed as HTML.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "on") for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else if (name === "text") el.textContent = value;
    else if (name === "class") el.className = value;
    else if (name === "style") el.style.cssText = value; // CSSOM: allowed by our CSP, attributes are not
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

let uid = 0;
export const newId = (stem = "f") => `${stem}-${++uid}`;

export function toast(message, kind = "") {
  const box = document.getElementById("toasts");
  const item = h("div", { class: `toast ${kind}` }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "bad" ? 7000 : 3500);
}

/** A labelled field: returns {wrap, input, setError}. `control` is an element or a tag. */
export function field(label, control, { help, wide, id } = {}) {
  const input = control instanceof Node ? control : h(control);
  input.id = input.id || id || newId("field");
  const errorId = `${input.id}-error`;
  const helpId = help ? `${input.id}-help` : null;
  const error = h("div", { class: "error", id: errorId, hidden: true });
  const isCheck = input.type === "checkbox";
  const wrap = h(
    "div",
    { class: `field${isCheck ? " check" : ""}${wide ? " wide" : ""}` },
    isCheck ? [input, h("label", { for: input.id }, label)] : [h("label", { for: input.id }, label), input],
    help ? h("div", { class: "help", id: helpId }, help) : null,
    error,
  );
  if (helpId) input.setAttribute("aria-describedby", helpId);
  const setError = (message) => {
    error.textContent = message || "";
    error.hidden = !message;
    if (message) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", [helpId, errorId].filter(Boolean).join(" "));
    } else {
      input.removeAttribute("aria-invalid");
      if (helpId) input.setAttribute("aria-describedby", helpId);
      else input.removeAttribute("aria-describedby");
    }
  };
  return { wrap, input, setError };
}

export function select(options, value) {
  const el = h("select");
  for (const opt of options) {
    const [v, label] = Array.isArray(opt) ? opt : [opt, opt];
    el.append(h("option", { value: v, selected: String(v) === String(value ?? "") }, label));
  }
  return el;
}

/** Every open dialog closes (resolving as if dismissed): on navigation and at sign-out,
 * so none is left over a page it does not belong to. */
export function closeDialogs() {
  for (const dlg of document.querySelectorAll("dialog[open]")) dlg.close();
}
addEventListener("hashchange", closeDialogs);
addEventListener("popstate", closeDialogs);

/** A modal dialog. `build(close)` returns the body; resolves with what close() is given.
 * Focus returns to what opened it, or to the page when that is gone (the page changed). */
export function dialog(title, build, { narrow = false } = {}) {
  return new Promise((resolve) => {
    const titleId = newId("dlg");
    const opener = document.activeElement;
    const dlg = h("dialog", { class: narrow ? "narrow" : "", "aria-labelledby": titleId });
    let result;
    const close = (value) => {
      result = value;
      dlg.close();
    };
    dlg.addEventListener("close", () => {
      dlg.remove();
      if (!document.querySelector("dialog[open]")) {
        if (opener && opener !== document.body && opener.isConnected) opener.focus();
        else document.getElementById("main")?.focus({ preventScroll: true });
      }
      resolve(result);
    });
    dlg.append(
      h("div", { class: "dialog-head" },
        h("h2", { id: titleId, style: "margin:0" }, title),
        h("button", { type: "button", class: "btn ghost small", on: { click: () => close() } }, "Close")),
      h("div", { class: "dialog-body" }, build(close)),
    );
    document.body.append(dlg);
    dlg.showModal();
    const first = dlg.querySelector(".dialog-body input, .dialog-body select, .dialog-body textarea, .dialog-body button");
    if (first) first.focus();
  });
}

export function confirmDialog(title, message, action, { danger = true } = {}) {
  return dialog(title, (close) => [
    h("p", {}, message),
    h("div", { class: "actions" },
      h("button", { type: "button", class: "btn", on: { click: () => close(false) } }, "Cancel"),
      h("button", { type: "button", class: `btn ${danger ? "danger solid" : "primary"}`, on: { click: () => close(true) } }, action)),
  ], { narrow: true });
}

export function empty(title, text, action) {
  return h("div", { class: "empty" }, h("strong", {}, title), h("div", {}, text), action || null);
}

export function pageHead(title, subtitle, ...actions) {
  return h("div", { class: "page-head" },
    h("div", {}, h("h1", {}, title), subtitle ? h("p", { class: "muted" }, subtitle) : null),
    h("div", { class: "actions", style: "margin:0" }, actions));
}

/** Long text cut with an ellipsis; the whole of it in a tooltip (and to screen readers). */
export function trunc(text, { cls = "", tag = "span", ...attrs } = {}) {
  return h(tag, { class: `trunc ${cls}`.trim(), title: text, ...attrs }, text);
}

// Tables that are wider than their box scroll sideways; the box then says so with a shadow
// at the edge where more is hidden (overlay scrollbars show nothing until a scroll), and the
// actions column stays in view.
function markOverflow(wrap) {
  const more = wrap.scrollWidth - wrap.clientWidth;
  wrap.classList.toggle("overflows", more > 1);
  wrap.classList.toggle("more-right", more > 1 && wrap.scrollLeft < more - 1);
  wrap.classList.toggle("more-left", wrap.scrollLeft > 1);
}

/**
 * columns: [{label, cell(row), num, cls, sortKey}]. Columns with a `sortKey` get a sort
 * button when `sort` ({key, dir}) and `onSort` are given. A column with cls "col-actions" stays
 * at the right edge; "hide-md" columns give way below 1100 px, "hide-sm" ones on phones.
 */
export function table(columns, rows, { caption, sort, onSort } = {}) {
  const headCell = (c) => {
    if (!c.sortKey || !onSort) return c.label;
    const active = sort && sort.key === c.sortKey;
    return h("button", { type: "button", class: "sort", on: { click: () => onSort(c.sortKey) } },
      c.label, h("span", { "aria-hidden": "true" }, active ? (sort.dir === "asc" ? " ▲" : " ▼") : ""));
  };
  const ariaSort = (c) => (c.sortKey && sort && sort.key === c.sortKey ? (sort.dir === "asc" ? "ascending" : "descending") : null);
  const cls = (c) => [c.num ? "num" : "", c.cls || ""].join(" ").trim() || null;
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: cls(c), "aria-sort": ariaSort(c) }, headCell(c))));
  const body = h("tbody", {}, rows.map((row) =>
    h("tr", {}, columns.map((c) => h("td", { class: cls(c), "data-label": c.label }, h("div", {}, c.cell(row)))))));
  const wrap = h("div", { class: "table-wrap", on: { scroll: () => markOverflow(wrap) } },
    h("table", {}, caption ? h("caption", { class: "skip" }, caption) : null, h("thead", {}, head), body));
  // One observer per table (a shared one would keep every replaced table alive).
  const watch = new ResizeObserver(() => markOverflow(wrap));
  watch.observe(wrap);
  watch.observe(wrap.firstChild);
  return wrap;
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = h("textarea", { style: "position:fixed;left:-9999px" });
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}

export function download(name, text, type = "text/csv") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
