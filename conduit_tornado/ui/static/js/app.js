// The shell: theme, sign-in, navigation between pages (#/keys, #/logs, ...).
import { api, setSession, whenSignedOut, PREFIX } from "./api.js";
import { h, field, toast, closeDialogs } from "./dom.js";
import * as keys from "./page-keys.js";
import * as logs from "./page-logs.js";
import * as usage from "./page-usage.js";
import * as playground from "./page-playground.js";
import * as groups from "./page-groups.js";
import * as providers from "./page-providers.js";
import * as models from "./page-models.js";
import * as alerts from "./page-alerts.js";
import * as health from "./page-health.js";
import * as mine from "./page-mine.js";

const PAGES = [
  ["keys", "Keys", keys], ["logs", "Request logs", logs], ["usage", "Usage", usage],
  ["playground", "Playground", playground], ["groups", "Groups", groups],
  ["providers", "Providers", providers], ["models", "Models", models],
  ["alerts", "Alerts", alerts], ["health", "Health", health],
];
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signout = document.getElementById("signout");
let session = null;
// The gateway as a JupyterHub service: sign-in through the hub (Hub OAuth) is offered, and a
// hub user who is not a hub admin gets their own page only (page-mine.js).
let hubLogin = false;
let hubUser = null;

// -- theme: the system's preference until the toggle is used, then the stored choice ----
const themeButton = document.getElementById("theme");
const media = matchMedia("(prefers-color-scheme: dark)");
function applyTheme() {
  const stored = localStorage.getItem("conduit-theme");
  if (stored) document.documentElement.dataset.theme = stored;
  else delete document.documentElement.dataset.theme;
  const dark = stored ? stored === "dark" : media.matches;
  themeButton.textContent = dark ? "Light theme" : "Dark theme"; // what a press switches to
  themeButton.dataset.dark = String(dark);
}
themeButton.addEventListener("click", () => {
  const dark = themeButton.dataset.dark === "true";
  localStorage.setItem("conduit-theme", dark ? "light" : "dark");
  applyTheme();
});
media.addEventListener("change", applyTheme);
applyTheme();

// -- sign-in ----------------------------------------------------------------------------
function showLogin(message) {
  closeDialogs();
  session = null;
  hubUser = null;
  setSession(null);
  nav.hidden = true;
  signout.hidden = true;
  const next = encodeURIComponent(location.pathname);
  const viaHub = hubLogin ? h("div", { class: "hub-login" },
    h("a", { class: "btn primary", href: `${PREFIX}hub/login?next=${next}` }, "Sign in with JupyterHub"),
    h("p", { class: "muted" }, "Hub users see their own key and usage; hub admins manage the gateway. Or sign in with the master key:")) : null;
  const key = field("Master key", h("input", { type: "password", autocomplete: "current-password", name: "key", required: true }),
    { help: "The gateway's CONDUIT_MASTER_KEY. Virtual keys cannot sign in." });
  const button = h("button", { type: "submit", class: "btn primary" }, "Sign in");
  const form = h("form", { novalidate: true }, key.wrap, button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    key.setError("");
    if (!key.input.value.trim()) {
      key.setError("Enter the master key.");
      key.input.focus();
      return;
    }
    button.disabled = true;
    try {
      await api("ui/api/login", { method: "POST", body: { key: key.input.value }, quiet401: true });
      key.input.value = "";
      await start();
    } catch (err) {
      key.setError(err.message);
      key.input.focus();
    } finally {
      button.disabled = false;
    }
  });
  main.replaceChildren(h("section", { class: "login card" },
    h("h1", {}, "Sign in to Conduit"),
    h("p", { class: "muted" }, "Manage virtual keys, providers, models and spend for this gateway."),
    message ? h("p", { class: "notice", role: "alert" }, message) : null,
    viaHub,
    form));
  key.input.focus();
}

whenSignedOut(() => showLogin("Your session has ended. Sign in again to continue."));

signout.addEventListener("click", async () => {
  try {
    await api(hubUser ? "hub/logout" : "ui/api/logout", { method: "POST", body: {}, quiet401: true });
  } catch {
    // already signed out: the sign-in page follows either way
  }
  location.hash = "";
  showLogin("You are signed out.");
});

// -- navigation ------------------------------------------------------------------------
function renderNav(current) {
  nav.replaceChildren(...PAGES.map(([id, label]) =>
    h("a", { href: `#/${id}`, "aria-current": id === current ? "page" : null }, label)));
}

let rendering = 0;
async function route() {
  if (!session) return;
  const [, id = "keys", ...rest] = (location.hash || "#/keys").split("/");
  const page = PAGES.find(([name]) => name === id) || PAGES[0];
  renderNav(page[0]);
  document.title = `${page[1]} · Conduit`;
  const turn = ++rendering;
  const container = h("div", { "data-page": page[0] });
  main.replaceChildren(container);
  try {
    await page[2].render(container, rest.map(decodeURIComponent));
  } catch (err) {
    if (turn !== rendering || err.status === 401) return;
    container.replaceChildren(h("div", { class: "card", role: "alert" },
      h("h1", {}, page[1]), h("p", {}, err.message || String(err))));
  }
  if (turn === rendering) container.dataset.ready = "true";
}
addEventListener("hashchange", () => {
  route();
  main.focus({ preventScroll: true });
});

/** Who JupyterHub says this browser is (asked only when the gateway is a hub service): the
 * user, or { signedOut } when this browser has not signed in through the hub. */
async function askHub() {
  try {
    return await api("hub/api/me", { quiet401: true });
  } catch (err) {
    return err.code === "hub_login_required" ? { signedOut: true } : null;
  }
}

async function start() {
  try {
    // Answers a browser that is not signed in too ({"via": null}), and says whether the
    // gateway is a JupyterHub service: only then is the hub asked (a plain gateway has no
    // hub routes, and a request to one would fail on every load).
    session = await api("ui/api/session", { quiet401: true });
  } catch (err) {
    if (err.status !== 401) {
      main.replaceChildren(h("p", { class: "pad", role: "alert" }, err.message));
      return;
    }
    session = null;
  }
  const hubMode = Boolean(session && session.hub);
  if (session && !session.via) session = null;
  hubLogin = hubMode;
  if (hubMode && (!session || session.via === "host")) {
    const hub = await askHub();
    if (hub && hub.via === "hub") {
      hubUser = hub;
      setSession({ csrf: hub.csrf, csrf_header: hub.csrf_header });
      signout.hidden = false;
      if (!hub.admin) {
        nav.hidden = true;
        document.title = "Your key · Conduit";
        const container = h("div", { "data-page": "mine" });
        main.replaceChildren(container);
        try {
          await mine.render(container, hub);
        } catch (err) {
          if (err.status !== 401) container.replaceChildren(h("div", { class: "card", role: "alert" }, h("p", {}, err.message)));
        }
        container.dataset.ready = "true";
        return;
      }
      session = { ...(session || {}), via: "hub" };
    }
  }
  if (!session) return showLogin();
  if (!hubUser) setSession(session);
  nav.hidden = false;
  signout.hidden = session.via !== "session" && !hubUser;
  await route();
}

window.conduitUi = { prefix: PREFIX, toast };
start();
