// Playground: chat with a virtual key and a model, streamed, with the gateway's headers.
import { api, all, PREFIX } from "./api.js";
import { h, field, select, pageHead, toast, empty } from "./dom.js";
import { money, count } from "./format.js";

const SHOWN_HEADERS = {
  "x-conduit-provider": "Provider", "x-conduit-model": "Provider's model", "x-conduit-attempts": "Attempts",
  "x-conduit-overhead-ms": "Gateway overhead", "x-conduit-cost-usd": "Cost", "x-request-id": "Request id",
  "x-ratelimit-remaining-requests": "Requests left this minute", "x-ratelimit-remaining-tokens": "Tokens left this minute",
};
const conversation = [];

/** The text of a Responses API answer (the SDK's output_text, which the JSON lacks). */
function outputText(body) {
  return (body.output || []).filter((item) => item.type === "message")
    .flatMap((item) => item.content || []).map((part) => part.text || "").join("");
}

/** Responses usage in the chat shape the headers panel shows. */
function asChatUsage(usage) {
  return usage ? { prompt_tokens: usage.input_tokens, completion_tokens: usage.output_tokens } : null;
}

export async function render(root) {
  const { items: models } = await all("admin/v1/models");
  if (!models.length) {
    root.replaceChildren(pageHead("Playground", "Try a model through the gateway, as an application would."),
      h("div", { class: "card" }, empty("No models yet", "Add a provider, then map a model name to it; the Playground can then call it.",
        h("a", { class: "btn primary", href: "#/providers" }, "Add a provider"))));
    return;
  }
  const stored = sessionStorage.getItem("conduit-playground-key") || "";
  const secret = field("Virtual key", h("input", { type: "password", autocomplete: "off", value: stored, placeholder: "condt_…" }),
    { help: "Paste a key's secret, or create a temporary one (1 hour, $1 budget)." });
  const temp = h("button", { type: "button", class: "btn small" }, "Create a temporary key");
  temp.addEventListener("click", async () => {
    temp.disabled = true;
    try {
      const expires = new Date(Date.now() + 3600000).toISOString();
      const created = await api("admin/v1/keys", { method: "POST", body: {
        name: `playground-${new Date().toISOString().slice(0, 16)}`, expires_at: expires, max_budget: 1, budget_duration: "total",
        metadata: { created_by: "web-ui-playground" } } });
      secret.input.value = created.key;
      sessionStorage.setItem("conduit-playground-key", created.key);
      toast(`Temporary key ${created.prefix}… created; it expires in an hour.`);
    } catch (err) {
      secret.setError(err.message);
    } finally {
      temp.disabled = false;
    }
  });
  const model = field("Model", select(models.filter((m) => m.enabled !== false).map((m) => m.name), sessionStorage.getItem("conduit-playground-model")));
  const system = field("System prompt", h("textarea", { rows: 3, placeholder: "Optional instructions for the model" }));
  const stream = field("Stream the answer", h("input", { type: "checkbox", checked: true }));
  const apiKind = field("API", select(["Chat completions", "Responses"], sessionStorage.getItem("conduit-playground-api")),
    { help: "Responses is the API the OpenAI SDK's client.responses calls; the gateway translates it for every provider." });
  const prompt = field("Message", h("textarea", { rows: 3, placeholder: "Ask something…" }), { help: "Ctrl+Enter sends." });
  const send = h("button", { type: "submit", class: "btn primary" }, "Send");
  const stop = h("button", { type: "button", class: "btn", disabled: true }, "Stop");
  const clear = h("button", { type: "button", class: "btn ghost" }, "Clear chat");
  const chat = h("div", { class: "chat", "aria-live": "polite", "aria-label": "Conversation", role: "log" });
  const headersList = h("dl", { class: "details stack" }, h("dt", {}, "—"), h("dd", { class: "muted" }, "Send a message to see them."));
  let controller = null;

  const bubble = (role, text) => {
    const body = h("span", {}, text);
    hint.remove();
    const el = h("div", { class: `msg ${role}` }, h("span", { class: "who" }, role === "user" ? "You" : role === "error" ? "Error" : "Assistant"), body);
    chat.append(el);
    chat.scrollTop = chat.scrollHeight;
    return body;
  };
  const hint = h("p", { class: "chat-hint muted" }, "Messages appear here. Answers stream in as the model writes them.");
  if (conversation.length) for (const m of conversation) bubble(m.role, m.content);
  else chat.append(hint);

  const addDetail = (label, value) => headersList.append(h("dt", {}, label), h("dd", { class: "mono" }, value));
  /** What a streamed answer's headers cannot carry (they leave before the answer is
   * complete): its usage, from the last chunk, and its cost, from the request log. */
  const afterStream = async (response, usage) => {
    if (usage) addDetail("Tokens", `${count(usage.prompt_tokens)} prompt + ${count(usage.completion_tokens)} completion`);
    const requestId = response.headers.get("x-request-id");
    if (!requestId || response.headers.get("x-conduit-cost-usd") !== null) return;
    try {
      const logs = await api("admin/v1/logs", { query: { request_id: requestId, limit: 1 } });
      const log = logs.data[0];
      if (log) addDetail("Cost (from the request log)", money(log.cost));
    } catch {
      // the answer is shown; its cost is in the request logs
    }
  };
  const showHeaders = (response) => {
    headersList.replaceChildren(...Object.entries(SHOWN_HEADERS).filter(([n]) => response.headers.get(n) !== null).flatMap(([n, label]) => {
      let v = response.headers.get(n);
      if (n === "x-conduit-cost-usd") v = money(Number(v));
      if (n === "x-conduit-overhead-ms") v = `${v} ms`;
      return [h("dt", { title: n }, label), h("dd", { class: "mono" }, v)];
    }));
  };

  const form = h("form", { novalidate: true },
    h("div", { class: "composer" }, prompt.wrap, h("div", { class: "chips", style: "flex-wrap:nowrap;padding-bottom:22px" }, send, stop)));
  prompt.input.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit(); });
  clear.addEventListener("click", () => { conversation.length = 0; chat.replaceChildren(hint); });
  stop.addEventListener("click", () => controller && controller.abort());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    secret.setError("");
    prompt.setError("");
    const key = secret.input.value.trim();
    if (!key) { secret.setError("Paste a virtual key or create a temporary one."); secret.input.focus(); return; }
    const text = prompt.input.value.trim();
    if (!text) { prompt.setError("Type a message first."); prompt.input.focus(); return; }
    sessionStorage.setItem("conduit-playground-key", key);
    sessionStorage.setItem("conduit-playground-model", model.input.value);
    sessionStorage.setItem("conduit-playground-api", apiKind.input.value);
    const responsesApi = apiKind.input.value === "Responses";
    conversation.push({ role: "user", content: text });
    bubble("user", text);
    prompt.input.value = "";
    const messages = [...(system.input.value.trim() ? [{ role: "system", content: system.input.value.trim() }] : []), ...conversation];
    send.disabled = true;
    stop.disabled = false;
    controller = new AbortController();
    let answer = "";
    let target = null;
    try {
      const instructions = system.input.value.trim();
      const request = responsesApi
        ? { model: model.input.value, input: conversation.map((m) => ({ role: m.role, content: m.content })),
          ...(instructions ? { instructions } : {}), stream: stream.input.checked, store: false }
        : { model: model.input.value, messages, stream: stream.input.checked,
          ...(stream.input.checked ? { stream_options: { include_usage: true } } : {}) };
      const response = await fetch(`${PREFIX}v1/${responsesApi ? "responses" : "chat/completions"}`, {
        method: "POST", signal: controller.signal, credentials: "omit",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${key}` },
        body: JSON.stringify(request),
      });
      showHeaders(response);
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        const message = body?.error?.message || `The gateway answered ${response.status}.`;
        if (response.status === 401) secret.setError(message);
        throw new Error(message);
      }
      target = bubble("assistant", "");
      if (!stream.input.checked) {
        const body = await response.json();
        answer = responsesApi ? outputText(body) : body.choices?.[0]?.message?.content || "";
        target.textContent = answer;
        const usage = responsesApi ? asChatUsage(body.usage) : body.usage;
        if (usage) addDetail("Tokens", `${count(usage.prompt_tokens)} prompt + ${count(usage.completion_tokens)} completion`);
      } else {
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        let usage = null;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          const events = buffer.split(/\r?\n\r?\n/);
          buffer = events.pop();
          for (const ev of events) {
            for (const line of ev.split(/\r?\n/)) {
              if (!line.startsWith("data:")) continue;
              const data = line.slice(5).trim();
              if (data === "[DONE]") continue;
              const chunk = JSON.parse(data);
              if (chunk.error) throw new Error(chunk.error.message || "The stream ended with an error.");
              if (responsesApi) {
                // Responses events: text deltas, then the whole response with its usage.
                if (chunk.type === "response.failed") throw new Error(chunk.response?.error?.message || "The response failed.");
                if (chunk.type === "response.output_text.delta") answer += chunk.delta || "";
                if (chunk.type === "response.completed" || chunk.type === "response.incomplete") usage = asChatUsage(chunk.response?.usage);
              } else {
                if (chunk.usage) usage = chunk.usage;
                answer += chunk.choices?.[0]?.delta?.content || "";
              }
              target.textContent = answer;
              chat.scrollTop = chat.scrollHeight;
            }
          }
        }
        await afterStream(response, usage);
      }
      conversation.push({ role: "assistant", content: answer });
    } catch (err) {
      if (err.name === "AbortError") {
        if (answer) conversation.push({ role: "assistant", content: answer });
        bubble("error", "Stopped.");
      } else bubble("error", err.message);
    } finally {
      send.disabled = false;
      stop.disabled = true;
      controller = null;
      prompt.input.focus();
    }
  });

  root.replaceChildren(
    pageHead("Playground", "Try a model through the gateway, as an application would: same key, limits and logs.", clear),
    h("div", { class: "layout-2" },
      h("div", { class: "card chat-card" }, chat, form),
      h("div", {},
        h("div", { class: "card" }, h("h2", {}, "Settings"), h("div", { style: "display:flex;flex-direction:column;gap:12px" },
          secret.wrap, temp, model.wrap, apiKind.wrap, system.wrap, stream.wrap)),
        h("div", { class: "card" }, h("h2", {}, "Response headers"), headersList))));
}
