"""OpenAI and every OpenAI-compatible API (Groq, Together, Mistral, vLLM, Ollama's /v1 ...),
plus Azure OpenAI, which differs only in URLs and the auth header.

Requests pass through unchanged except ``model`` (the deployment's) and, for streams,
``stream_options.include_usage`` (always asked, so usage is never a guess).
"""

from __future__ import annotations

import functools
from urllib.parse import quote, urlencode

from orjson import JSONDecodeError, loads

from conduit_tornado.routing.realtime import (
    RealtimeSocket,
    connect_ws,
    create_call,
    hangup_call,
)
from conduit_tornado.routing.upstream import (
    Json,
    ProviderError,
    Response,
    SseReader,
    Timeouts,
    body_chunks,
    parse_event,
    parse_json,
    read_body,
)

from .base import Adapter, ByteStream, ChunkStream, Probe, Upload, open_batches, upload_form

DONE = b"[DONE]"


class OpenAIAdapter(Adapter):
    native_completions = True
    default_base = "https://api.openai.com/v1"
    base_url_hint = (
        "An openai provider's base_url includes the API's version path, as in "
        "https://api.openai.com/v1: the gateway appends /chat/completions, /embeddings, "
        "/responses ... to it."
    )

    def url(self, path: str, model: str) -> str:
        return f"{self.provider.base_url or self.default_base}{path}"

    def params(self) -> dict[str, str] | None:
        return None

    def probe(self) -> Probe:
        return Probe(f"{self.provider.base_url or self.default_base}/models", self.headers())

    def headers(self) -> dict[str, str]:
        headers = dict(self.provider.headers)
        if self.provider.api_key:
            headers["Authorization"] = f"Bearer {self.provider.api_key}"
        return headers

    async def _post(self, path: str, body: Json, model: str, t: Timeouts) -> Json:
        data = await self.upstream.request_json(
            self.provider.id,
            "POST",
            self.url(path, model),
            t,
            json={**body, "model": model},
            headers=self.headers(),
            params=self.params(),
        )
        if not isinstance(data, dict):
            raise ProviderError("bad_response", "the provider answered with an unexpected shape")
        return data

    def stream_usage(self) -> bool:
        """Whether the provider takes stream_options.include_usage."""
        return True

    async def _stream(self, path: str, body: Json, model: str, t: Timeouts) -> ChunkStream:
        payload = {**body, "model": model, "stream": True}
        if self.stream_usage():
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            payload["stream_options"] = options
        else:
            payload.pop("stream_options", None)
        response = await self.upstream.request(
            self.provider.id,
            "POST",
            self.url(path, model),
            t,
            json=payload,
            headers=self.headers(),
            params=self.params(),
        )

        async def close() -> None:
            await response.aclose()

        return await open_batches(_Chunks(response).next_batch, close, t.first_byte)

    async def chat(self, body: Json, model: str, t: Timeouts) -> Json:
        return await self._post("/chat/completions", body, model, t)

    async def moderations(self, body: Json, model: str, t: Timeouts) -> Json:
        return await self._post("/moderations", body, model, t)

    async def rerank(self, body: Json, model: str, t: Timeouts) -> Json:
        # vLLM, Jina and Cohere (base_url .../v2) share this path and shape.
        return await self._post("/rerank", body, model, t)

    @functools.cached_property
    def native_responses(self) -> bool:  # type: ignore[override]
        """OpenAI itself serves /responses; an OpenAI-compatible server may not, so others
        are translated to chat unless the provider's ``options.responses`` says native.
        Read per Responses request, of a provider that never changes (a changed provider
        gets a new adapter)."""
        choice = self.provider.options.get("responses")
        if choice in ("native", "translate"):
            return bool(choice == "native")
        return (self.provider.base_url or self.default_base).rstrip("/") == self.default_base

    async def responses(self, body: Json, model: str, t: Timeouts) -> Json:
        return await self._post("/responses", body, model, t)

    async def responses_stream(self, body: Json, model: str, t: Timeouts) -> ChunkStream:
        response = await self.upstream.request(
            self.provider.id,
            "POST",
            self.url("/responses", model),
            t,
            json={**body, "model": model, "stream": True},
            headers=self.headers(),
            params=self.params(),
        )

        async def close() -> None:
            await response.aclose()

        return await open_batches(_Events(response).next_batch, close, t.first_byte)

    async def chat_stream(self, body: Json, model: str, t: Timeouts) -> ChunkStream:
        return await self._stream("/chat/completions", body, model, t)

    async def completion(self, body: Json, model: str, t: Timeouts) -> Json:
        return await self._post("/completions", body, model, t)

    async def completion_stream(self, body: Json, model: str, t: Timeouts) -> ChunkStream:
        return await self._stream("/completions", body, model, t)

    async def embeddings(self, body: Json, model: str, t: Timeouts) -> Json:
        return await self._post("/embeddings", body, model, t)

    async def images(self, body: Json, model: str, t: Timeouts) -> Json:
        return await self._post("/images/generations", body, model, t)

    async def transcribe(
        self, kind: str, fields: list[tuple[str, str]], upload: Upload, model: str, t: Timeouts
    ) -> tuple[bytes, str]:
        content_type, length, pieces = upload.form(
            [(name, model if name == "model" else value) for name, value in fields]
        )
        response = await self.upstream.request(
            self.provider.id,
            "POST",
            self.url(f"/audio/{kind}", model),
            t,
            stream=pieces,
            length=length,
            headers={**self.headers(), "Content-Type": content_type},
            params=self.params(),
        )
        body = await read_body(response)
        return body, response.headers.get("Content-Type", "application/json")

    async def image_edit(
        self,
        kind: str,
        fields: list[tuple[str, str]],
        uploads: list[Upload],
        model: str,
        t: Timeouts,
    ) -> Json:
        content_type, length, pieces = upload_form(
            [(name, model if name == "model" else value) for name, value in fields], uploads
        )
        response = await self.upstream.request(
            self.provider.id,
            "POST",
            self.url(f"/images/{kind}", model),
            t,
            stream=pieces,
            length=length,
            headers={**self.headers(), "Content-Type": content_type},
            params=self.params(),
        )
        data = parse_json(await read_body(response))
        if not isinstance(data, dict):
            raise ProviderError("bad_response", "the provider answered with an unexpected shape")
        return data

    async def speech(self, body: Json, model: str, t: Timeouts) -> ByteStream:
        response = await self.upstream.request(
            self.provider.id,
            "POST",
            self.url("/audio/speech", model),
            t,
            json={**body, "model": model},
            headers=self.headers(),
            params=self.params(),
        )

        async def close() -> None:
            await response.aclose()

        return ByteStream(
            response.headers.get("Content-Type", "application/octet-stream"),
            body_chunks(response, "the provider's audio stream broke off"),
            close,
        )

    def realtime_url(self, model: str, intent: str | None = None) -> str:
        base = self.provider.base_url or self.default_base
        # A transcription session names its model in its session.update, not the URL.
        query = {"intent": intent} if intent else {"model": model}
        return _ws(base) + "/realtime?" + urlencode(query)

    async def realtime(self, model: str, t: Timeouts, max_message: int) -> RealtimeSocket:
        return await connect_ws(
            self.upstream,
            self.provider.id,
            self.realtime_url(model),
            self.headers(),
            t,
            max_message,
        )

    async def realtime_transcription(
        self, model: str, t: Timeouts, max_message: int
    ) -> RealtimeSocket:
        return await connect_ws(
            self.upstream,
            self.provider.id,
            self.realtime_url(model, "transcription"),
            self.headers(),
            t,
            max_message,
        )

    async def realtime_call(
        self, sdp: str, session: Json, model: str, t: Timeouts
    ) -> tuple[str, str]:
        return await create_call(
            self.upstream,
            self.provider.id,
            self.url("/realtime/calls", model),
            self.headers(),
            t,
            sdp,
            {**session, "type": "realtime", "model": model},
        )

    async def realtime_sideband(
        self, call_id: str, t: Timeouts, max_message: int
    ) -> RealtimeSocket:
        base = self.provider.base_url or self.default_base
        url = _ws(base) + "/realtime?" + urlencode({"call_id": call_id})
        return await connect_ws(
            self.upstream, self.provider.id, url, self.headers(), t, max_message
        )

    async def realtime_hangup(self, call_id: str, t: Timeouts) -> None:
        url = self.url(f"/realtime/calls/{quote(call_id, safe='')}/hangup", "")
        await hangup_call(self.upstream, self.provider.id, url, self.headers(), t)


def _ws(url: str) -> str:
    return "ws" + url[4:] if url.startswith("http") else url


class OllamaAdapter(OpenAIAdapter):
    """Ollama through its OpenAI-compatible /v1 endpoint."""

    default_base = "http://127.0.0.1:11434/v1"
    base_url_hint = (
        "An ollama provider's base_url ends in /v1, as in http://127.0.0.1:11434/v1: the "
        "gateway appends /chat/completions, /embeddings ... to it."
    )


class AzureAdapter(OpenAIAdapter):
    """Azure OpenAI: ``{base}/openai/deployments/{deployment}/...?api-version=``, ``api-key``.
    The deployment's ``model`` is the Azure deployment name."""

    # Azure serves Responses at another path (/openai/v1/responses) with other
    # api-versions: translated to chat until that is wired and tested.
    native_responses = False

    default_api_version = "2024-10-21"
    base_url_hint = (
        "An azure provider's base_url is the resource's endpoint without a path, as in "
        "https://NAME.openai.azure.com: the gateway appends "
        "/openai/deployments/{deployment}/chat/completions ... to it."
    )

    def url(self, path: str, model: str) -> str:
        return f"{self.provider.base_url}/openai/deployments/{model}{path}"

    def params(self) -> dict[str, str]:
        return {
            "api-version": str(self.provider.options.get("api_version", self.default_api_version))
        }

    def probe(self) -> Probe:
        return Probe(f"{self.provider.base_url}/openai/models", self.headers(), self.params())

    def headers(self) -> dict[str, str]:
        headers = dict(self.provider.headers)
        if self.provider.api_key:
            headers["api-key"] = self.provider.api_key
        return headers

    def stream_usage(self) -> bool:
        # stream_options arrived with api-version 2024-09-01-preview; older versions
        # refuse the request outright, so their streams' usage is estimated.
        return self.params()["api-version"][:10] >= "2024-09-01"

    async def realtime_call(
        self, sdp: str, session: Json, model: str, t: Timeouts
    ) -> tuple[str, str]:
        # Azure's WebRTC endpoint is regional and takes an ephemeral key: not wired yet.
        raise ProviderError(
            "unsupported", "WebRTC calls are not supported for Azure providers.", param="model"
        )

    def realtime_url(self, model: str, intent: str | None = None) -> str:
        extra = {"intent": intent} if intent else {}
        query = urlencode({**self.params(), **extra, "deployment": model})
        return f"{_ws(self.provider.base_url or '')}/openai/realtime?{query}"


class _Chunks:
    """An OpenAI-style event stream as batches of chunk dicts, up to ``[DONE]``."""

    def __init__(self, response: Response) -> None:
        self._reader = SseReader(response)
        self._done = False
        self._failure: ProviderError | None = None

    async def next_batch(self) -> list[Json] | None:
        while not self._done:
            if self._failure is not None:
                self._done = True
                raise self._failure
            events = await self._reader.next_batch()
            if events is None:
                self._done = True
                break
            chunks: list[Json] = []
            for _, data in events:
                if data == DONE:
                    self._done = True
                    break
                try:
                    try:  # parse_event's work, inline: this runs for every event of a stream
                        chunk = loads(data)
                    except JSONDecodeError:
                        chunk = None
                    if not isinstance(chunk, dict):
                        raise ProviderError(
                            "bad_response", "the provider sent a malformed stream event"
                        )
                    if "error" in chunk:  # some servers report failures in the stream
                        err = chunk["error"]
                        message = err.get("message") if isinstance(err, dict) else err
                        raise ProviderError("server", str(message)[:500])
                except ProviderError as exc:
                    if not chunks:
                        raise
                    self._failure = exc  # what came before it goes out first
                    break
                if chunk.get("choices") == [] and not chunk.get("usage"):
                    # Azure opens with a chunk holding only prompt_filter_results (and an
                    # empty model): nothing for clients, and no model to price by.
                    continue
                chunks.append(chunk)
            if chunks:
                return chunks
        return None


class _Events:
    """A Responses event stream as batches of event dicts (it has no [DONE]: it ends
    with its response.completed, .incomplete or .failed event, or an error event)."""

    def __init__(self, response: Response) -> None:
        self._reader = SseReader(response)

    async def next_batch(self) -> list[Json] | None:
        events = await self._reader.next_batch()
        if events is None:
            return None
        return [parse_event(data) for _, data in events if data and data != DONE]
