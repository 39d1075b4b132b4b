"""The one module that talks HTTP to providers, through our lean client (http_client.py).

One keep-alive pool per provider, created on the running loop and closed on stop.
Failures become ``ProviderError`` with a kind that routing understands.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from conduit_tornado.core.errors import ApiError

from .http_client import ClientError, HttpClient, Response

Json = dict[str, Any]
MAX_SSE_EVENT = 16 * 1024 * 1024  # one event larger than this is not a chat chunk


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    first_byte: float | None
    total: float


class ProviderError(Exception):
    """An upstream failure, classified so routing can decide to retry and the client gets
    an honest OpenAI error that never leaks credentials or internal URLs."""

    RETRYABLE = frozenset({"rate_limit", "server", "timeout", "connect", "auth", "bad_response"})

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int = 0,
        retry_after: float | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.code = code
        self.param = param

    @property
    def retryable(self) -> bool:
        return self.kind in self.RETRYABLE

    def to_api_error(self) -> ApiError:
        if self.kind == "client":
            status = (
                400
                if self.status in (0, 422) or self.status not in (400, 404, 413)
                else self.status
            )
            return ApiError(status, self.message, code=self.code, param=self.param)
        if self.kind == "rate_limit":
            wait = max(1, math.ceil(self.retry_after or 1))
            return ApiError(
                429,
                "The upstream provider is rate limiting requests; retry shortly.",
                code="upstream_rate_limited",
                headers={"Retry-After": str(wait)},
            )
        if self.kind == "timeout":
            return ApiError(
                504, "The upstream provider did not answer in time.", code="upstream_timeout"
            )
        if self.kind == "auth":
            return ApiError(
                502,
                "The gateway's credentials were refused by the upstream provider.",
                code="upstream_auth_error",
                type="upstream_error",
            )
        if self.kind == "connect":
            return ApiError(
                502, "The upstream provider could not be reached.", code="upstream_unreachable"
            )
        if self.kind == "unsupported":
            return ApiError(400, self.message, code="unsupported_for_model", param=self.param)
        return ApiError(502, f"The upstream provider failed: {self.message}", code="upstream_error")


def classify_status(status: int, message: str, retry_after: float | None = None) -> ProviderError:
    if status in (401, 403):
        return ProviderError("auth", message, status=status)
    if status == 429:
        return ProviderError("rate_limit", message, status=status, retry_after=retry_after)
    if status in (408, 504):
        return ProviderError("timeout", message, status=status)
    if status >= 500 or status == 409:
        return ProviderError("server", message, status=status, retry_after=retry_after)
    return ProviderError("client", message, status=status)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for name in ("retry-after-ms", "Retry-After"):
        raw = headers.get(name)
        if raw:
            try:
                value = float(raw)
            except ValueError:
                continue  # an HTTP date: too rare from LLM APIs to parse
            return value / 1000 if name == "retry-after-ms" else value
    return None


def error_message(data: Any, fallback: str) -> str:
    """Pull a human message out of the common error shapes (OpenAI, Anthropic, Gemini)."""
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:1000]
        if isinstance(err, str):
            return err[:1000]
    if isinstance(data, list) and data:
        return error_message(data[0], fallback)
    return fallback


class Upstream:
    """Provider HTTP calls go through our lean client; aiohttp sessions remain only for
    provider WebSockets (realtime), where they are opened once per session, not per call."""

    def __init__(self) -> None:
        self.http = HttpClient()
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def session(self, pool: str) -> aiohttp.ClientSession:
        """An aiohttp session for WebSocket connections to this pool's provider."""
        session = self._sessions.get(pool)
        if session is None or session.closed:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=False),
                skip_auto_headers=("User-Agent",),
            )
            self._sessions[pool] = session
        return session

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
        await self.http.close()

    async def request(
        self,
        pool: str,
        method: str,
        url: str,
        t: Timeouts,
        *,
        json: Json | None = None,
        stream: AsyncIterable[bytes] | None = None,
        length: int | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Response:
        """Send a request and return the response once its headers arrived with a 2xx
        status; anything else raises ProviderError. The caller releases the response."""
        hdrs = dict(headers or {})
        body: bytes | AsyncIterable[bytes] = stream if stream is not None else b""
        if json is not None:
            body = orjson.dumps(json)
            hdrs["Content-Type"] = "application/json"
        try:
            response = await self.http.request(
                pool,
                method,
                url,
                body=body,
                length=length,
                headers=hdrs,
                params=params,
                connect_timeout=t.connect,
                first_byte_timeout=t.first_byte,
                total_timeout=t.total,
            )
        except ClientError as exc:
            raise _provider_error(exc) from None
        if response.status >= 400:
            try:
                raw = await response.read()
            except ClientError:
                raw = b""
            finally:
                response.release()
            try:
                parsed: Any = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = None
            message = error_message(parsed, f"HTTP {response.status}")
            raise classify_status(response.status, message, _retry_after(response.headers))
        return response

    async def request_json(
        self, pool: str, method: str, url: str, t: Timeouts, **kwargs: Any
    ) -> Any:
        response = await self.request(pool, method, url, t, **kwargs)
        return parse_json(await read_body(response))


async def read_body(response: Response) -> bytes:
    """The whole body, then the connection goes back to the pool."""
    try:
        return await response.read()
    except ClientError as exc:
        raise _provider_error(exc, early="the provider closed the connection early") from None
    finally:
        response.release()


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProviderError("bad_response", "the provider answered with invalid JSON") from None


def _provider_error(exc: ClientError, early: str | None = None) -> ProviderError:
    if exc.timeout:
        return ProviderError("timeout", "timed out waiting for the provider")
    if exc.connect:
        return ProviderError("connect", "connection refused or failed")
    if early:
        return ProviderError("server", early)
    return ProviderError("connect", str(exc))


async def body_chunks(response: Response, broke_off: str) -> AsyncIterator[bytes]:
    """The body as it arrives; a failure midway is a ProviderError saying ``broke_off``."""
    while (piece := await next_chunk(response, broke_off)) is not None:
        yield piece


async def next_chunk(response: Response, broke_off: str) -> bytes | None:
    """Response.next_chunk, with a failure midway as a ProviderError saying ``broke_off``."""
    try:
        return await response.next_chunk()
    except ClientError as exc:
        if exc.timeout:
            raise ProviderError("timeout", "the provider's stream stalled") from None
        raise ProviderError("server", broke_off) from None


def _sse_block(block: bytes) -> tuple[str, bytes] | None:
    """One event block (its lines) as (event name, data); None if it carries no data."""
    event = ""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue  # comments (keepalives)
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            event = value.decode("utf-8", "replace")
    return (event or "message", b"\n".join(data)) if data else None


class SseReader:
    """Parses a text/event-stream into (event name, data) pairs, comments skipped.
    ``next_batch()`` returns every complete event that has arrived, as one list per
    network read (one await per read, not per event or line), and None at the end. Lines
    may end in LF or CRLF (Gemini uses CRLF). The response is not released here."""

    def __init__(self, response: Response) -> None:
        self._response = response
        self._buf = b""
        self._ended = False

    async def next_batch(self) -> list[tuple[str, bytes]] | None:
        while not self._ended:
            received = await next_chunk(self._response, "the provider's stream broke off")
            if received is None:
                self._ended = True
                rest = self._buf.strip(b"\r\n")
                parsed = _sse_block(rest) if rest.strip() else None
                return [parsed] if parsed is not None else None
            buf = self._buf + received
            if b"\r" in buf:
                buf = buf.replace(b"\r\n", b"\n")  # a lone trailing CR waits for its LF
            batch = []
            start = 0  # walk the buffer by offset: a burst is not re-copied per event
            while True:
                end = buf.find(b"\n\n", start)
                if end < 0:
                    break
                block = buf[start:end]
                start = end + 2
                if block.startswith(b"data: ") and b"\n" not in block:
                    batch.append(("message", block[6:]))  # the usual shape, without a call
                elif (parsed := _sse_block(block)) is not None:
                    batch.append(parsed)
            self._buf = buf[start:]
            if len(self._buf) > MAX_SSE_EVENT:
                raise ProviderError("bad_response", "the provider sent an oversized stream event")
            if batch:
                return batch
        return None


async def sse_batches(response: Response) -> AsyncIterator[list[tuple[str, bytes]]]:
    """SseReader's batches as an async iterator."""
    reader = SseReader(response)
    while (batch := await reader.next_batch()) is not None:
        yield batch


async def sse_events(response: Response) -> AsyncIterator[tuple[str, bytes]]:
    """sse_batches, an event at a time."""
    async for batch in sse_batches(response):
        for event in batch:
            yield event


def parse_event(data: bytes) -> Json:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProviderError("bad_response", "the provider sent a malformed stream event") from None
    if not isinstance(value, dict):
        raise ProviderError("bad_response", "the provider sent a malformed stream event")
    return value
