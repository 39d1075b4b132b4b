// The admin API, called with the session cookie. Paths are relative to where the gateway
// is mounted: "/" standalone, "{base_url}conduit/" inside Jupyter.

const path = location.pathname;
export const PREFIX = path.slice(0, path.lastIndexOf("/ui/") + 1) || "/";
let csrf = null;
let csrfHeader = "X-Conduit-CSRF";
let onSignedOut = () => {};

export function setSession(session) {
  csrf = session ? session.csrf : null;
  if (session && session.csrf_header) csrfHeader = session.csrf_header;
}
export function whenSignedOut(fn) {
  onSignedOut = fn;
}

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `The gateway answered ${status}.`);
    this.status = status;
    this.param = err.param || null;
    this.code = err.code || null;
  }
}

function cookie(name) {
  const found = document.cookie.split("; ").find((c) => c.startsWith(`${name}=`));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : null;
}

export function headers(extra = {}) {
  const out = { ...extra };
  if (csrf) out[csrfHeader] = csrf;
  const xsrf = cookie("_xsrf"); // inside Jupyter, which checks its own token too
  if (xsrf) out["X-XSRFToken"] = xsrf;
  return out;
}

export async function api(route, { method = "GET", body, query, quiet401 = false, retried = false } = {}) {
  let url = PREFIX + route;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") params.set(k, v);
    const qs = params.toString();
    if (qs) url += `?${qs}`;
  }
  let response;
  try {
    response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: headers(body !== undefined ? { "Content-Type": "application/json" } : {}),
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch {
    throw new ApiError(0, { error: { message: `Could not reach the gateway at ${location.origin}${PREFIX}. Is it running?` } });
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.status === 401 && method !== "GET" && csrf && !retried) {
    // Signed in again in another tab: this page holds the old session's token. Ask for
    // the current one and try once more; a real sign-out still ends here.
    const fresh = await api("ui/api/session", { quiet401: true }).catch(() => null);
    if (fresh && fresh.csrf && fresh.csrf !== csrf) {
      setSession(fresh);
      return api(route, { method, body, query, quiet401, retried: true });
    }
  }
  if (!response.ok) {
    const err = new ApiError(response.status, data);
    if (response.status === 401 && !quiet401) onSignedOut(err);
    throw err;
  }
  return data;
}

/** Every page of a list endpoint, up to `max` items. */
export async function all(route, query = {}, max = 1000) {
  const items = [];
  let offset = 0;
  for (;;) {
    const page = await api(route, { query: { ...query, offset, limit: Math.min(1000, max) } });
    items.push(...page.data);
    offset += page.data.length;
    if (!page.has_more || items.length >= max || !page.data.length) return { items, total: page.total };
  }
}
