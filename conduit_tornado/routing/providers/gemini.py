"""Google Gemini's generateContent / streamGenerateContent / batchEmbedContents,
translated to and from OpenAI's shapes."""

from __future__ import annotations

import mimetypes
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from conduit_tornado.routing.upstream import ProviderError, Timeouts, parse_event, sse_events

from .anthropic import _arguments, _text
from .base import (
    ESTIMATED_USAGE,
    Adapter,
    ChunkStream,
    Json,
    Probe,
    estimate_tokens,
    function_tools,
    open_stream,
    shape_checked,
    stop_sequences,
    tool_calls,
    tool_choice_name,
)

FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
#: Answers the model failed to form (a call it could not write, a call to no declared
#: tool): a bad answer, which another attempt may well get right.
MALFORMED = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"})
FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
)


def _parts(content: Any) -> list[Json]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[Json] = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            parts.append({"text": part.get("text", "")})
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str) and url.startswith("data:"):
                header, _, data = url.partition(",")
                parts.append({"inlineData": {"mimeType": header[5:].split(";")[0], "data": data}})
            elif isinstance(url, str):
                # Gemini wants an IANA type, not image/*: from the URL's extension, else
                # JPEG (what most image URLs serve).
                guessed = mimetypes.guess_type(url.split("?")[0])[0]
                mime = guessed if guessed and guessed.startswith("image/") else "image/jpeg"
                parts.append({"fileData": {"mimeType": mime, "fileUri": url}})
    return parts


#: What to_gemini carries over (translated or as is); any other field a client sets is
#: named in the x-conduit-dropped-params header. presence_penalty and frequency_penalty are
#: among the dropped: current Gemini models refuse them, even at 0.
CARRIED = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "top_p",
        "seed",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "response_format",
        "tools",
        "tool_choice",
        "stream",
        "stream_options",
    }
)


def dropped_fields(body: Json) -> list[str]:
    """The chat fields a client set that Gemini's generateContent has no place for."""
    out = [k for k, v in body.items() if k not in CARRIED and v is not None]
    if body.get("parallel_tool_calls") is not False and "parallel_tool_calls" in out:
        out.remove("parallel_tool_calls")  # true is what Gemini does anyway
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") != "text" and function_tools(body):
        out.append("response_format")  # JSON mode and tools cannot be combined on Gemini
    return sorted(out)


def to_gemini(body: Json) -> Json:
    system: list[str] = []
    contents: list[Json] = []
    call_names: dict[str, str] = {}

    def push(role: str, parts: list[Json]) -> None:
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for i, m in enumerate(body.get("messages") or []):
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text(m.get("content")))
        elif role == "user":
            push("user", _parts(m.get("content")))
        elif role == "assistant":
            parts = _parts(m.get("content"))
            raw_calls = m.get("tool_calls") if isinstance(m.get("tool_calls"), list) else []
            for j, (call_id, name, arguments) in enumerate(tool_calls(m, i)):
                call_names[str(call_id)] = name
                part: Json = {"functionCall": {"name": name, "args": _arguments(arguments)}}
                signature = _signature(raw_calls[j] if j < len(raw_calls) else None)
                if signature:
                    # Gemini 3 refuses the next step of a tool loop without it.
                    part["thoughtSignature"] = signature
                parts.append(part)
            push("model", parts)
        elif role == "tool":
            text = _text(m.get("content"))
            try:
                result = orjson.loads(text)
            except orjson.JSONDecodeError:
                result = text
            name = call_names.get(str(m.get("tool_call_id")), "tool")
            push("user", [{"functionResponse": {"name": name, "response": {"content": result}}}])
    out: Json = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config: Json = {}
    # presence_penalty and frequency_penalty are not sent: current Gemini models refuse
    # them (even at 0).
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("n", "candidateCount"),
    ):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit:
        config["maxOutputTokens"] = limit
    stop = stop_sequences(body)
    if stop:
        config["stopSequences"] = stop
    fmt = body.get("response_format") or {}
    if not isinstance(fmt, dict):
        raise ProviderError("client", "response_format must be an object.", param="response_format")
    tools = function_tools(body)
    # JSON mode and function calling cannot be combined on Gemini: with tools, the format
    # is left to the model (the schema still goes, as guidance it accepts).
    if fmt.get("type") in ("json_object", "json_schema") and not tools:
        config["responseMimeType"] = "application/json"
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema:
            config["responseJsonSchema"] = schema
    if config:
        out["generationConfig"] = config
    if tools:
        # parametersJsonSchema takes full JSON Schema; parameters takes an OpenAPI subset
        # that refuses additionalProperties, $ref, const ... (what strict tools send).
        out["tools"] = [
            {
                "functionDeclarations": [
                    {k if k != "parameters" else "parametersJsonSchema": v for k, v in tool.items()}
                    for tool in tools
                ]
            }
        ]
    choice = body.get("tool_choice")
    if choice is not None:
        if isinstance(choice, dict):
            mode: Json = {"mode": "ANY", "allowedFunctionNames": [tool_choice_name(choice)]}
        else:
            mode = {
                "mode": {"auto": "AUTO", "required": "ANY", "none": "NONE"}.get(str(choice), "AUTO")
            }
        out["toolConfig"] = {"functionCallingConfig": mode}
    return out


def _usage(meta: Json | None) -> Json:
    meta = meta or {}
    prompt = int(meta.get("promptTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + int(
        meta.get("thoughtsTokenCount") or 0
    )
    out: Json = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    cached = int(meta.get("cachedContentTokenCount") or 0)
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def _finish(reason: str | None, has_calls: bool) -> str | None:
    if not reason:
        return None
    if reason in MALFORMED:
        raise ProviderError("bad_response", f"The model failed to form its answer ({reason}).")
    if reason in FILTERED:
        return "content_filter"
    if has_calls:
        return "tool_calls"
    return FINISH.get(reason, "stop")


def _signature(call: Any) -> str | None:
    """A tool call's Gemini thought signature, where OpenAI-shaped clients keep it (as
    Google's own OpenAI-compatible endpoint does): extra_content.google.thought_signature."""
    extra = call.get("extra_content") if isinstance(call, dict) else None
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) else None


def _candidate(candidate: Json) -> tuple[str, list[Json]]:
    text = []
    calls = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "text" in part and not part.get("thought"):
            text.append(part["text"])
        elif "functionCall" in part:
            fn = part["functionCall"]
            call: Json = {
                "id": "call_" + secrets.token_hex(12),
                "type": "function",
                "function": {
                    "name": fn.get("name"),
                    "arguments": orjson.dumps(fn.get("args") or {}).decode(),
                },
            }
            if isinstance(part.get("thoughtSignature"), str):
                call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
            calls.append(call)
    return "".join(text), calls


@shape_checked
def from_gemini(data: Json, model: str) -> Json:
    choices = []
    for i, candidate in enumerate(data.get("candidates") or []):
        text, calls = _candidate(candidate)
        message: Json = {
            "role": "assistant",
            "content": text if text or not calls else None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {
                "index": candidate.get("index", i),
                "message": message,
                "logprobs": None,
                "finish_reason": _finish(candidate.get("finishReason"), bool(calls)) or "stop",
            }
        )
    if not choices:
        reason = (data.get("promptFeedback") or {}).get("blockReason")
        if reason:
            raise ProviderError(
                "client", f"The provider refused the prompt ({reason}).", code="content_filter"
            )
        raise ProviderError("bad_response", "The provider returned no answer.")
    return {
        "id": "chatcmpl-" + str(data.get("responseId") or secrets.token_hex(12)),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("modelVersion", model),
        "choices": choices,
        "usage": _usage(data.get("usageMetadata")),
    }


class GeminiAdapter(Adapter):
    default_base = "https://generativelanguage.googleapis.com"
    base_url_hint = (
        "A gemini provider's base_url has no version path, as in "
        "https://generativelanguage.googleapis.com: the gateway appends "
        "/v1beta/models/{model}:generateContent ... to it."
    )

    @staticmethod
    def dropped(body: Json) -> list[str]:
        return dropped_fields(body)

    def _url(self, model: str, method: str) -> str:
        return f"{self.provider.base_url or self.default_base}/v1beta/models/{model}:{method}"

    def _headers(self) -> dict[str, str]:
        headers = dict(self.provider.headers)
        if self.provider.api_key:
            headers["x-goog-api-key"] = self.provider.api_key
        return headers

    def probe(self) -> Probe:
        base = self.provider.base_url or self.default_base
        return Probe(f"{base}/v1beta/models", self._headers(), {"pageSize": "1"})

    async def chat(self, body: Json, model: str, t: Timeouts) -> Json:
        data = await self.upstream.request_json(
            self.provider.id,
            "POST",
            self._url(model, "generateContent"),
            t,
            json=to_gemini(body),
            headers=self._headers(),
        )
        if not isinstance(data, dict):
            raise ProviderError("bad_response", "the provider answered with an unexpected shape")
        return from_gemini(data, model)

    async def chat_stream(self, body: Json, model: str, t: Timeouts) -> ChunkStream:
        response = await self.upstream.request(
            self.provider.id,
            "POST",
            self._url(model, "streamGenerateContent"),
            t,
            json=to_gemini(body),
            headers=self._headers(),
            params={"alt": "sse"},
        )
        created = int(time.time())
        chunk_id = "chatcmpl-" + secrets.token_hex(12)

        async def events() -> AsyncIterator[Json]:
            usage: Json | None = None
            started: set[int] = set()
            tools_seen: dict[int, int] = {}
            async for _, data in sse_events(response):
                event = parse_event(data)
                if "error" in event:
                    err = event["error"]
                    raise ProviderError(
                        "server", str(err.get("message") if isinstance(err, dict) else err)[:500]
                    )
                usage = event.get("usageMetadata") or usage
                blocked = (event.get("promptFeedback") or {}).get("blockReason")
                if blocked and not event.get("candidates"):
                    raise ProviderError(
                        "client",
                        f"The provider refused the prompt ({blocked}).",
                        code="content_filter",
                    )
                choices = []
                for i, candidate in enumerate(event.get("candidates") or []):
                    index = candidate.get("index", i)
                    text, calls = _candidate(candidate)
                    delta: Json = {}
                    if index not in started:
                        started.add(index)
                        delta["role"] = "assistant"
                    if text or not calls:
                        delta["content"] = text
                    if calls:
                        first = tools_seen.get(index, 0)
                        tools_seen[index] = first + len(calls)
                        delta["tool_calls"] = [
                            {"index": first + j, **c} for j, c in enumerate(calls)
                        ]
                    finish = _finish(candidate.get("finishReason"), index in tools_seen)
                    choices.append(
                        {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
                    )
                if choices:
                    yield {
                        "id": chunk_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": event.get("modelVersion", model),
                        "choices": choices,
                    }
            yield {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(usage),
            }

        async def close() -> None:
            response.release()

        return await open_stream(events(), close, t.first_byte)

    async def embeddings(self, body: Json, model: str, t: Timeouts) -> Json:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if not all(isinstance(i, str) for i in inputs):
            raise ProviderError(
                "client", "This model accepts text input only, not token arrays.", param="input"
            )
        request: Json = {
            "requests": [
                {
                    "model": f"models/{model}",
                    "content": {"parts": [{"text": text}]},
                    **(
                        {"outputDimensionality": body["dimensions"]}
                        if body.get("dimensions")
                        else {}
                    ),
                }
                for text in inputs
            ]
        }
        data = await self.upstream.request_json(
            self.provider.id,
            "POST",
            self._url(model, "batchEmbedContents"),
            t,
            json=request,
            headers=self._headers(),
        )
        vectors = data.get("embeddings") if isinstance(data, dict) else None
        if not isinstance(vectors, list) or len(vectors) != len(inputs):
            raise ProviderError("bad_response", "the provider answered with an unexpected shape")
        tokens = sum(estimate_tokens(text) for text in inputs)  # Gemini reports no counts here
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": v.get("values", [])}
                for i, v in enumerate(vectors)
            ],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            ESTIMATED_USAGE: True,
        }
