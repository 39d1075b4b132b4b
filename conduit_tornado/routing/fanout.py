"""Several upstream calls presented as one answer: ``n > 1`` on providers without ``n``,
and several prompts of a legacy completion on chat-only providers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import Any, TypeVar

from conduit_tornado.routing.providers.base import ChunkStream, Json, Usage, one_at_a_time

T = TypeVar("T")


async def gather_all(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Run calls concurrently; on the first failure cancel the rest and raise it as is."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def merge_completions(parts: list[Json]) -> Json:
    merged = dict(parts[0])
    usage = Usage()
    choices: list[Json] = []
    for part in parts:
        for choice in part.get("choices") or []:
            choices.append({**choice, "index": len(choices)})
        usage.add(Usage.from_openai(part.get("usage")) or Usage())
    merged["choices"] = choices
    merged["usage"] = usage.openai()
    return merged


def merge_streams(streams: list[ChunkStream], per_stream: int = 1) -> ChunkStream:
    """Interleave streams as their chunks arrive; stream i's choice k becomes choice
    ``i * per_stream + k``. Their usage chunks are summed into one at the end."""
    queue: asyncio.Queue[tuple[int, Json | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, stream: ChunkStream) -> None:
        try:
            async for chunk in stream:
                await queue.put((i, chunk))
            await queue.put((i, None))
        except BaseException as exc:
            await queue.put((i, exc))

    tasks: list[asyncio.Task[None]] = []

    async def events() -> AsyncIterator[Json]:
        tasks.extend(asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams))
        usage = Usage()
        seen_usage = False
        template: Json | None = None
        open_streams = len(streams)
        while open_streams:
            i, item = await queue.get()
            if item is None:
                open_streams -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            template = template or item
            if item.get("usage"):
                usage.add(Usage.from_openai(item["usage"]) or Usage())
                seen_usage = True
            choices = [
                {**c, "index": i * per_stream + c.get("index", 0)}
                for c in item.get("choices") or []
            ]
            if choices:
                chunk = {k: v for k, v in item.items() if k != "usage"}
                yield {**chunk, "id": template["id"], "choices": choices}
        if seen_usage and template is not None:
            yield {**template, "choices": [], "usage": usage.openai()}

    async def close() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            await stream.aclose()

    return ChunkStream(None, one_at_a_time(events()), close)


def completion_to_chat(body: Json, prompt: str) -> Json:
    """A legacy completion request as a chat request (for chat-only providers)."""
    chat: Json = {"messages": [{"role": "user", "content": prompt}]}
    for name in (
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "n",
        "user",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "stream",
        "stream_options",
    ):
        if body.get(name) is not None:
            chat[name] = body[name]
    return chat


def _as_completion(chat: Json, part: str) -> Json:
    """A chat answer (part "message") or chunk (part "delta") in text_completion shape."""
    out: Json = {
        "id": str(chat.get("id", "")).replace("chatcmpl-", "cmpl-", 1),
        "object": "text_completion",
        "created": chat.get("created"),
        "model": chat.get("model"),
        "choices": [
            {
                "text": (c.get(part) or {}).get("content") or "",
                "index": c.get("index", 0),
                "logprobs": None,
                "finish_reason": c.get("finish_reason"),
            }
            for c in chat.get("choices") or []
        ],
    }
    if "usage" in chat:
        out["usage"] = chat["usage"]
    return out


def chat_to_completion(result: Json) -> Json:
    return _as_completion(result, "message")


def chat_chunk_to_completion(chunk: Json) -> Json:
    return _as_completion(chunk, "delta")


def offset_choices(result: Any, offset: int) -> Any:
    for choice in result.get("choices") or []:
        choice["index"] = choice.get("index", 0) + offset
    return result
