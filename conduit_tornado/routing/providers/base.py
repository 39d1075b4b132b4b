"""What every provider adapter shares: usage, errors, timeouts, and the adapter interface.

Adapters speak OpenAI's shapes on one side (request dicts in, ``chat.completion`` /
``chat.completion.chunk`` / ``list`` of embeddings out) and their provider's wire format on
the other. They never see virtual model names, keys or limits.
"""

from __future__ import annotations

import asyncio
import functools
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any

from conduit_tornado.routing.catalog import Provider
from conduit_tornado.routing.realtime import RealtimeSocket
from conduit_tornado.routing.upstream import Json as Json  # one definition, re-exported
from conduit_tornado.routing.upstream import ProviderError, Timeouts, Upstream

#: An adapter sets this key on an answer whose usage it estimated (the provider reported
#: none); the handler removes it before the client sees the answer and marks the log.
ESTIMATED_USAGE = "_conduit_estimated_usage"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    estimated: bool = False
    #: Input tokens written to a provider's prompt cache (Anthropic bills them above input).
    cache_write_tokens: int = 0
    #: Of those, the ones written for an hour (Anthropic bills them at 2x input, not 1.25x).
    cache_write_1h_tokens: int = 0
    #: Audio tokens among the prompt's and the completion's (billed at audio rates).
    audio_prompt_tokens: int = 0
    audio_completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.cache_write_1h_tokens += other.cache_write_1h_tokens
        self.audio_prompt_tokens += other.audio_prompt_tokens
        self.audio_completion_tokens += other.audio_completion_tokens
        self.estimated = self.estimated or other.estimated

    def openai(self) -> Json:
        out: Json = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return out

    @classmethod
    def from_openai(cls, data: Any) -> Usage | None:
        if not isinstance(data, dict):
            return None
        details = data.get("prompt_tokens_details") or {}
        if not isinstance(details, dict):
            details = {}
        out_details = data.get("completion_tokens_details") or {}
        if not isinstance(out_details, dict):
            out_details = {}
        return cls(
            prompt_tokens=int(data.get("prompt_tokens") or 0),
            completion_tokens=int(data.get("completion_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
            cache_write_tokens=int(details.get("cache_write_tokens") or 0),
            cache_write_1h_tokens=int(details.get("cache_write_1h_tokens") or 0),
            audio_prompt_tokens=int(details.get("audio_tokens") or 0),
            audio_completion_tokens=int(out_details.get("audio_tokens") or 0),
        )


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (~4 characters a token), used only when a provider
    reports nothing; results built on it are marked ``estimated``."""
    return math.ceil(len(text) / 4) if text else 0


def prompt_text(body: Json) -> str:
    """All text a request sends, for estimates."""
    parts: list[str] = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):  # handlers refuse non-string text; skip it here
            parts.extend(
                t for p in content if isinstance(p, dict) and isinstance(t := p.get("text"), str)
            )
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        parts.append(prompt)
    elif isinstance(prompt, list):
        parts.extend(p for p in prompt if isinstance(p, str))
    return "\n".join(parts)


def _refuse(message: str, param: str) -> ProviderError:
    return ProviderError("client", message, param=param)


def shape_checked(translate: Callable[..., Json]) -> Callable[..., Json]:
    """For translators of a provider's answer: an answer of another shape than the
    provider documents (a list where an object belongs, a string for a number) is the
    provider's failure, a 502 ``bad_response`` (retried elsewhere), not a gateway crash."""

    @functools.wraps(translate)
    def checked(*args: Any, **kwargs: Any) -> Json:
        try:
            return translate(*args, **kwargs)
        except (AttributeError, TypeError, KeyError, ValueError, IndexError):
            raise ProviderError(
                "bad_response", "the provider answered with an unexpected shape"
            ) from None

    return checked


def function_tools(body: Json) -> list[Json]:
    """The request's function tools as ``{name, description?, parameters?}``, for adapters
    that translate them; a malformed one is refused (400) with its place named."""
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _refuse("tools must be an array.", "tools")
    out: list[Json] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _refuse("Each tool must be an object.", f"tools[{i}]")
        if tool.get("type") != "function":
            continue
        fn = tool.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _refuse("A function tool needs a function.name.", f"tools[{i}].function.name")
        for name, kind in (("description", str), ("parameters", dict)):
            if fn.get(name) is not None and not isinstance(fn[name], kind):
                raise _refuse(
                    f"function.{name} must be {'a string' if kind is str else 'an object'}.",
                    f"tools[{i}].function.{name}",
                )
        out.append({k: fn[k] for k in ("name", "description", "parameters") if fn.get(k)})
    return out


def tool_calls(message: Json, index: int) -> list[tuple[Any, str, Any]]:
    """An assistant message's tool calls as (id, function name, raw arguments)."""
    calls = message.get("tool_calls")
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise _refuse("tool_calls must be an array.", f"messages[{index}].tool_calls")
    out = []
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _refuse(
                "Each tool call needs a function with a name.",
                f"messages[{index}].tool_calls[{j}]",
            )
        out.append((call.get("id"), fn["name"], fn.get("arguments")))
    return out


def tool_choice_name(choice: Json) -> Any:
    """The function a ``tool_choice`` object names (None if it names none)."""
    fn = choice.get("function")
    return fn.get("name") if isinstance(fn, dict) else None


def stop_sequences(body: Json) -> list[str] | None:
    """``stop`` as a list of strings (None when unset)."""
    stop = body.get("stop")
    if stop is None or stop == []:
        return None
    if isinstance(stop, str):
        return [stop] if stop else None
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return stop
    raise _refuse("stop must be a string or an array of strings.", "stop")


NextBatch = Callable[[], Awaitable[list["Json"] | None]]


@dataclass(frozen=True, slots=True)
class Probe:
    """A health check's request: GET ``url`` with these headers and query parameters."""

    url: str
    headers: dict[str, str]
    params: dict[str, str] | None = None


class ChunkStream:
    """An opened stream of OpenAI chunk dicts. Opening already awaited the first event, so a
    failure before anything reached the client can still be retried elsewhere.

    Chunks come in batches: every chunk parsed from one network read, as one list. The
    relay takes a batch at a time (one await and one client write per read, not per
    chunk); ``async for`` still gives one chunk at a time. ``rest`` is a coroutine
    function giving the next batch (None at the end): no generator is left suspended
    when a stream ends early, which asyncio would close later with a task of its own.

    ``waited``: the seconds spent awaiting the provider after opening (which the router
    timed), so that a stream's upstream time is all of it and its overhead the gateway's
    own (ProxyHandler.pump_events adds it to the Outcome)."""

    def __init__(self, first: list[Json] | None, rest: NextBatch, close: Any) -> None:
        self._pending: list[Json] = first or []
        self._rest = rest
        self._ended = False
        self._close = close
        self.waited = 0.0

    def __aiter__(self) -> ChunkStream:
        return self

    async def __anext__(self) -> Json:
        while not self._pending:
            batch = await self.next_batch()
            if batch is None:
                raise StopAsyncIteration
            self._pending = batch
        return self._pending.pop(0)

    async def next_batch(self) -> list[Json] | None:
        if self._pending:
            pending, self._pending = self._pending, []
            return pending
        if self._ended:
            return None
        # Timed a batch (what one network read brought) at a time: no clock read a chunk.
        started = time.monotonic()
        try:
            batch = await self._rest()
        finally:  # a wait cut short (the client left, a cancel) was spent upstream too
            self.waited += time.monotonic() - started
        if batch is None:
            self._ended = True
        return batch

    async def aclose(self) -> None:
        await self._close()


def one_at_a_time(chunks: AsyncIterator[Json]) -> NextBatch:
    """Batches of one, for streams that translate an event at a time."""
    iterator = aiter(chunks)

    async def rest() -> list[Json] | None:
        try:
            return [await anext(iterator)]
        except StopAsyncIteration:
            return None
        except (AttributeError, TypeError, KeyError, ValueError, IndexError):
            # An event of another shape than the provider documents (see shape_checked).
            raise ProviderError(
                "bad_response", "the provider sent a stream event of an unexpected shape"
            ) from None

    return rest


async def open_stream(
    events: AsyncIterator[Json], close: Any, first_byte: float | None
) -> ChunkStream:
    """A stream of chunks an event at a time (translating adapters)."""
    return await open_batches(one_at_a_time(events), close, first_byte)


async def open_batches(rest: NextBatch, close: Any, first_byte: float | None) -> ChunkStream:
    """Open a stream: wait (up to ``first_byte`` seconds) for its first chunks."""
    try:
        if first_byte:
            async with asyncio.timeout(first_byte):  # a timer; wait_for would add a task
                first = await _first_batch(rest)
        else:
            first = await _first_batch(rest)
    except TimeoutError:
        await close()
        raise ProviderError("timeout", "no first byte in time") from None
    except BaseException:
        await close()
        raise
    if first is None:
        # A 200 whose body held no event (a JSON error, a proxy's page, an empty body):
        # relayed, it would be an empty answer billed as a success. Another try may work.
        await close()
        raise ProviderError("bad_response", "the provider's stream held no events")
    return ChunkStream(first, rest, close)


async def _first_batch(rest: NextBatch) -> list[Json] | None:
    while (batch := await rest()) is not None:
        if batch:
            return batch
    return None


class ByteStream:
    """An opened upstream byte stream (speech audio): iterate chunks as they arrive."""

    def __init__(self, content_type: str, chunks: AsyncIterator[bytes], close: Any) -> None:
        self.content_type = content_type
        self._chunks = chunks
        self._close = close

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def aclose(self) -> None:
        await self._close()


UPLOAD_PIECE = 256 * 1024  # bytes read from the spooled upload per write


class Upload:
    """A spooled uploaded file, readable again for every attempt (retries)."""

    def __init__(
        self, file: IO[bytes], filename: str, content_type: str, size: int, name: str = "file"
    ) -> None:
        self._file = file
        self.filename = filename
        self.content_type = content_type
        self.size = size
        self.name = name  # the form field it was sent in (file, image, image[], mask ...)

    def form(self, fields: list[tuple[str, str]]) -> tuple[str, int, AsyncIterator[bytes]]:
        """The fields and this file as a multipart/form-data body: (content type, length,
        the bytes in pieces), re-read from the spool on every call so retries resend it."""
        return upload_form(fields, [self])

    def pieces(self) -> AsyncIterator[bytes]:
        async def read() -> AsyncIterator[bytes]:
            self._file.seek(0)
            while piece := self._file.read(UPLOAD_PIECE):
                yield piece

        return read()


def upload_form(
    fields: list[tuple[str, str]], uploads: list[Upload]
) -> tuple[str, int, AsyncIterator[bytes]]:
    """Fields and files (each under its own field name, repeated names kept in order) as
    one multipart/form-data body: (content type, length, the bytes in pieces)."""
    boundary = secrets.token_hex(16)
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n{value}\r\n'
        for name, value in fields
    ).encode()
    # A file's bytes end its part: the next delimiter starts with the line break.
    heads = [
        (b"\r\n" if i else b"")
        + (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(u.name)}"; '
            f'filename="{_quoted(u.filename)}"\r\nContent-Type: {u.content_type}\r\n\r\n'
        ).encode()
        for i, u in enumerate(uploads)
    ]
    tail = (b"\r\n" if uploads else b"") + f"--{boundary}--\r\n".encode()

    async def pieces() -> AsyncIterator[bytes]:
        yield head
        for part_head, upload in zip(heads, uploads, strict=True):
            yield part_head
            async for piece in upload.pieces():
                yield piece
        yield tail

    length = len(head) + sum(len(h) + u.size for h, u in zip(heads, uploads, strict=True))
    return f"multipart/form-data; boundary={boundary}", length + len(tail), pieces()


def _quoted(value: str) -> str:
    # Field names and filenames go inside quotes; quotes and line breaks must not.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


class Adapter:
    """Base adapter. Subclasses implement the calls their provider supports."""

    supports_n = True  # the provider honours n > 1 itself
    free = False  # answers cost nothing whatever the price tables say (the mock)
    native_completions = False  # has a legacy /completions endpoint
    #: What this type's base_url must be, said when the provider answers that a path does
    #: not exist (upstream_not_found): the one mistake that looks like the client's.
    base_url_hint = ""

    def __init__(self, provider: Provider, upstream: Upstream) -> None:
        self.provider = provider
        self.upstream = upstream
        upstream.configure(provider.id, provider.options)  # its client certificate, if any

    def probe(self) -> Probe | None:
        """The cheapest authenticated call that tells whether the provider answers, for
        active health checks (routing/health.py): a GET of its model list. None: nothing
        to call (the mock)."""
        return None

    @staticmethod
    def dropped(body: Json) -> list[str]:
        """Chat fields the client set that this provider has no place for (left out of the
        upstream request, and named to the client in x-conduit-dropped-params)."""
        return []

    async def chat(self, body: Json, model: str, t: Timeouts) -> Json:
        raise ProviderError(
            "unsupported", "This model does not support chat completions.", param="model"
        )

    async def chat_stream(self, body: Json, model: str, t: Timeouts) -> ChunkStream:
        raise ProviderError(
            "unsupported", "This model does not support chat completions.", param="model"
        )

    async def completion(self, body: Json, model: str, t: Timeouts) -> Json:
        raise ProviderError(
            "unsupported", "This model does not support text completions.", param="model"
        )

    async def completion_stream(self, body: Json, model: str, t: Timeouts) -> ChunkStream:
        raise ProviderError(
            "unsupported", "This model does not support text completions.", param="model"
        )

    async def embeddings(self, body: Json, model: str, t: Timeouts) -> Json:
        raise ProviderError("unsupported", "This model does not support embeddings.", param="model")

    async def images(self, body: Json, model: str, t: Timeouts) -> Json:
        raise ProviderError("unsupported", "This model does not generate images.", param="model")

    async def transcribe(
        self, kind: str, fields: list[tuple[str, str]], upload: Upload, model: str, t: Timeouts
    ) -> tuple[bytes, str]:
        """kind is "transcriptions" or "translations"; returns (body, content type)."""
        raise ProviderError("unsupported", "This model does not transcribe audio.", param="model")

    async def speech(self, body: Json, model: str, t: Timeouts) -> ByteStream:
        raise ProviderError("unsupported", "This model does not generate speech.", param="model")

    async def image_edit(
        self,
        kind: str,
        fields: list[tuple[str, str]],
        uploads: list[Upload],
        model: str,
        t: Timeouts,
    ) -> Json:
        """kind is "edits" or "variations": the images and fields as OpenAI's multipart."""
        raise ProviderError("unsupported", "This model does not edit images.", param="model")

    async def realtime(self, model: str, t: Timeouts, max_message: int) -> RealtimeSocket:
        raise ProviderError("unsupported", "This model has no realtime API.", param="model")

    async def realtime_transcription(
        self, model: str, t: Timeouts, max_message: int
    ) -> RealtimeSocket:
        """A realtime socket for a transcription session (``intent=transcription``)."""
        raise ProviderError(
            "unsupported", "This model has no realtime transcription.", param="model"
        )

    # WebRTC calls (POST /v1/realtime/calls): the offer relayed, then the sideband socket
    # the gateway meters the call on, and the hangup when the budget runs out.
    async def realtime_call(
        self, sdp: str, session: Json, model: str, t: Timeouts
    ) -> tuple[str, str]:
        """(the provider's SDP answer, its call id)."""
        raise ProviderError(
            "unsupported", "This model has no WebRTC realtime calls.", param="model"
        )

    async def realtime_sideband(
        self, call_id: str, t: Timeouts, max_message: int
    ) -> RealtimeSocket:
        raise ProviderError(
            "unsupported", "This model has no WebRTC realtime calls.", param="model"
        )

    async def realtime_hangup(self, call_id: str, t: Timeouts) -> None:
        raise ProviderError(
            "unsupported", "This model has no WebRTC realtime calls.", param="model"
        )

    async def moderations(self, body: Json, model: str, t: Timeouts) -> Json:
        raise ProviderError("unsupported", "This model does not classify content.", param="model")

    async def rerank(self, body: Json, model: str, t: Timeouts) -> Json:
        raise ProviderError("unsupported", "This model does not rerank documents.", param="model")

    #: The provider serves Anthropic's Messages API itself: /v1/messages is relayed to it
    #: as it came (api/messages.py), not translated through chat.
    native_messages = False

    async def messages(self, body: Json, model: str, t: Timeouts, beta: str | None) -> Json:
        raise ProviderError("unsupported", "This provider has no Messages API.", param="model")

    async def messages_stream(
        self, body: Json, model: str, t: Timeouts, beta: str | None
    ) -> ChunkStream:
        """The provider's Messages events, as batches of event dicts."""
        raise ProviderError("unsupported", "This provider has no Messages API.", param="model")

    #: The provider serves the Responses API itself: requests are relayed as they are,
    #: not translated to chat completions (api/responses.py).
    native_responses = False

    async def responses(self, body: Json, model: str, t: Timeouts) -> Json:
        raise ProviderError("unsupported", "This provider has no Responses API.", param="model")

    async def responses_stream(self, body: Json, model: str, t: Timeouts) -> ChunkStream:
        """The provider's Responses events, as batches of event dicts."""
        raise ProviderError("unsupported", "This provider has no Responses API.", param="model")
