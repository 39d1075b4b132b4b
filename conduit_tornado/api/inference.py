"""POST /v1/chat/completions, /v1/completions and /v1/embeddings."""

from __future__ import annotations

import base64
import struct
from typing import Any

from conduit_tornado.core.errors import ApiError
from conduit_tornado.formats.responses_params import wrong_type
from conduit_tornado.routing.fanout import (
    chat_chunk_to_completion,
    chat_to_completion,
    completion_to_chat,
    gather_all,
    merge_completions,
    merge_streams,
    offset_choices,
)
from conduit_tornado.routing.providers.base import (
    ESTIMATED_USAGE,
    Adapter,
    ChunkStream,
    Json,
    Usage,
    estimate_tokens,
)
from conduit_tornado.routing.router import Target
from conduit_tornado.routing.upstream import ProviderError, Timeouts

from .proxy import ProxyHandler

MAX_N = 128
#: Largest embedding size asked for: OpenAI's largest model has 3072; common open models
#: served through OpenAI-compatible APIs go to 4096.
MAX_DIMENSIONS = 4096


def _n(body: Json) -> int:
    n = body.get("n", 1)
    if n is None:
        return 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N:
        raise ApiError(
            400, f"n must be an integer from 1 to {MAX_N}.", param="n", code="invalid_value"
        )
    return n


def _stream(body: Json) -> bool:
    """Whether to stream, refused as OpenAI refuses it: ``stream`` a boolean (a string
    such as "false" is truthy), ``stream_options`` an object and only with a stream."""
    stream = body.get("stream")
    if stream is not None and type(stream) is not bool:
        raise wrong_type(stream, "stream", "a boolean")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise ApiError(
                400,
                "stream_options must be an object.",
                param="stream_options",
                code="invalid_type",
            )
        if not stream:
            raise ApiError(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
    return stream is True


def _chat_text(messages: list[Any]) -> str:
    """Check the messages' shape and return their text, for the token estimate: one walk
    over the messages, which admission needs anyway."""
    parts: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(
                400,
                f"Each message must be an object with a role (messages[{i}] is not).",
                param="messages",
                code="invalid_value",
            )
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict):
                    raise ApiError(
                        400,
                        "Each content part must be an object.",
                        param=f"messages[{i}].content[{j}]",
                        code="invalid_type",
                    )
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
                elif "text" in part or part.get("type") == "text":
                    raise ApiError(
                        400,
                        "A text content part's text must be a string.",
                        param=f"messages[{i}].content[{j}].text",
                        code="invalid_type",
                    )
        elif content is not None:
            raise ApiError(
                400,
                "A message's content must be a string or an array of content parts.",
                param=f"messages[{i}].content",
                code="invalid_type",
            )
    return "\n".join(parts)


def _upstream_calls(adapter: Adapter, n: int, prompts: int | None) -> int:
    """Upstream calls one try on this adapter makes: n separate calls where the provider
    has no n, times the prompts of a legacy completion on a chat-only provider."""
    if prompts is not None and adapter.native_completions:
        return 1
    return (1 if adapter.supports_n else n) * (prompts or 1)


def _check_fanout(adapters: list[Adapter], n: int, prompts: int | None, most: int) -> None:
    """400 before admission if a try anywhere in the plan would exceed ``max_fanout``."""
    if max((_upstream_calls(a, n, prompts) for a in adapters), default=1) <= most:
        return
    param = "n" if n > most or not prompts else "prompt"
    raise ApiError(
        400,
        f"This request would take {n} separate upstream calls per prompt for {prompts or 1} "
        f"prompt(s) on this model; the gateway allows at most {most} per request. Send fewer "
        "prompts, or a smaller n.",
        param=param,
        code="too_many_upstream_calls",
    )


async def chat_call(adapter: Adapter, body: Json, model: str, t: Timeouts, n: int) -> Json:
    if n > 1 and not adapter.supports_n:
        single = {**body, "n": 1}
        return merge_completions(await gather_all(adapter.chat(single, model, t) for _ in range(n)))
    return await adapter.chat(body, model, t)


async def chat_stream_call(
    adapter: Adapter, body: Json, model: str, t: Timeouts, n: int
) -> ChunkStream:
    if n > 1 and not adapter.supports_n:
        single = {**body, "n": 1}
        return merge_streams(
            await gather_all(adapter.chat_stream(single, model, t) for _ in range(n))
        )
    return await adapter.chat_stream(body, model, t)


class ChatCompletionsHandler(ProxyHandler):
    endpoint = "chat.completions"

    async def post(self) -> None:
        body = self.json_body()
        route = self.resolve(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(
                400, "messages must be a non-empty array.", param="messages", code="invalid_value"
            )
        text = _chat_text(messages)
        n = _n(body)
        streamed = _stream(body)
        router = self.ctx.router
        calls = None
        if n > 1:

            def calls(target: Target) -> int:
                return _upstream_calls(target.adapter, n, None)

            _check_fanout(router.adapters(route), n, None, self.ctx.settings.max_fanout)
        await self.admit(body, prompt_tokens=estimate_tokens(text))
        if streamed:

            async def open_stream(target: Target, t: Timeouts) -> ChunkStream:
                self.name_dropped(target.adapter.dropped(body))
                return await chat_stream_call(target.adapter, body, target.model, t, n)

            stream, self.outcome = await router.run(route, open_stream, calls)
            await self.relay(stream, self.outcome, body)
            return

        async def call(target: Target, t: Timeouts) -> Json:
            self.name_dropped(target.adapter.dropped(body))
            return await chat_call(target.adapter, body, target.model, t, n)

        result, self.outcome = await router.run(route, call, calls)
        self.send_answer(result, self.usage_of(result, body), self.outcome)


class CompletionsHandler(ProxyHandler):
    """Legacy text completions. Chat-only providers get the prompt as a user message and the
    answer is translated back; the response says so in ``x-conduit-translated``."""

    endpoint = "completions"

    async def post(self) -> None:
        body = self.json_body()
        route = self.resolve(body)
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompts: list[Any] = [prompt]
        elif isinstance(prompt, list) and prompt:
            prompts = prompt
        else:
            raise ApiError(
                400,
                "prompt must be a string or a non-empty array.",
                param="prompt",
                code="invalid_value",
            )
        n = _n(body)
        stream = _stream(body)
        count = len(prompts)
        _check_fanout(self.ctx.router.adapters(route), n, count, self.ctx.settings.max_fanout)
        await self.admit(body)

        def calls(target: Target) -> int:
            return _upstream_calls(target.adapter, n, count)

        def chat_prompts() -> list[str]:
            if not all(isinstance(p, str) for p in prompts):
                raise ProviderError(
                    "unsupported",
                    "This model accepts text prompts only, not token arrays.",
                    param="prompt",
                )
            return prompts

        async def call(target: Target, t: Timeouts) -> Any:
            adapter = target.adapter
            if adapter.native_completions:
                if stream:
                    return await adapter.completion_stream(body, target.model, t)
                return await adapter.completion(body, target.model, t)
            texts = chat_prompts()
            if stream:
                streams = await gather_all(
                    chat_stream_call(adapter, completion_to_chat(body, p), target.model, t, n)
                    for p in texts
                )
                return streams[0] if len(streams) == 1 else merge_streams(streams, per_stream=n)
            answers = await gather_all(
                chat_call(adapter, completion_to_chat(body, p), target.model, t, n) for p in texts
            )
            for i, answer in enumerate(answers):
                offset_choices(answer, i * n)
            return merge_completions(answers)

        result, self.outcome = await self.ctx.router.run(route, call, calls)
        translated = not self.outcome.target.adapter.native_completions
        if translated:
            self.set_header("x-conduit-translated", "chat.completions")
        if stream:
            await self.relay(
                result, self.outcome, body, chat_chunk_to_completion if translated else None
            )
            return
        if translated:
            result = chat_to_completion(result)
        self.send_answer(result, self.usage_of(result, body), self.outcome)


def _b64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def _valid_input(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(v, str) and v for v in value):
        return True
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return True
    return all(isinstance(v, list) and v and all(isinstance(i, int) for i in v) for v in value)


def _input_tokens(value: Any) -> int:
    items = value if isinstance(value, list) else [value]
    if items and isinstance(items[0], int):
        return len(items)
    return sum(len(i) if isinstance(i, list) else estimate_tokens(i) for i in items)


class EmbeddingsHandler(ProxyHandler):
    endpoint = "embeddings"

    async def post(self) -> None:
        body = self.json_body()
        route = self.resolve(body)
        if not _valid_input(body.get("input")):
            raise ApiError(
                400,
                "input must be a non-empty string, array of strings, or array(s) of token ids.",
                param="input",
                code="invalid_value",
            )
        most = self.ctx.settings.max_embedding_inputs
        inputs = body["input"]
        if isinstance(inputs, list) and not isinstance(inputs[0], int) and len(inputs) > most:
            raise ApiError(
                400,
                f"input may hold at most {most} items; this request has {len(inputs)}.",
                param="input",
                code="too_many_inputs",
            )
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise ApiError(
                400, "encoding_format must be 'float' or 'base64'.", param="encoding_format"
            )
        dims = body.get("dimensions")
        if dims is not None and (
            not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= MAX_DIMENSIONS
        ):
            raise ApiError(
                400,
                f"dimensions must be an integer from 1 to {MAX_DIMENSIONS}.",
                param="dimensions",
                code="invalid_value",
            )
        await self.admit(body, prompt_tokens=_input_tokens(body["input"]), completion_reserve=False)

        async def call(target: Target, t: Timeouts) -> Json:
            return await target.adapter.embeddings(body, target.model, t)

        result, self.outcome = await self.ctx.router.run(route, call)
        estimated = bool(result.pop(ESTIMATED_USAGE, False))
        for item in result.get("data") or []:
            vector = item.get("embedding")
            if encoding == "base64" and isinstance(vector, list):
                item["embedding"] = _b64(vector)
        usage = Usage.from_openai(result.get("usage")) or Usage()
        usage.estimated = estimated
        self.send_answer(result, usage, self.outcome)
