"""The one module that talks HTTP to providers (aiohttp: the fastest client measured here).

One pooled keep-alive session per provider, created on the running loop and closed on
stop. Failures become ``ProviderError`` with a kind that routing understands.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from .errors import ApiError

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
    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def session(self, pool: str) -> aiohttp.ClientSession:
        session = self._sessions.get(pool)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=0, keepalive_timeout=60, enable_cleanup_closed=False
            )
            session = aiohttp.ClientSession(
                connector=connector,
                json_serialize=lambda o: orjson.dumps(o).decode(),
                skip_auto_headers=("User-Agent",),
                auto_decompress=True,
            )
            self._sessions[pool] = session
        return session

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    async def request(
        self,
        pool: str,
        method: str,
        url: str,
        t: Timeouts,
        *,
        json: Json | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """Send a request and return the response once its headers arrived with a 2xx
        status; anything else raises ProviderError. The caller releases the response."""
        timeout = aiohttp.ClientTimeout(total=t.total, connect=min(t.connect, t.total))
        body = orjson.dumps(json) if json is not None else data
        hdrs = dict(headers or {})
        if json is not None:
            hdrs["Content-Type"] = "application/json"
        try:
            call = self.session(pool).request(
                method, url, data=body, headers=hdrs, params=params, timeout=timeout
            )
            response = await (asyncio.wait_for(call, t.first_byte) if t.first_byte else call)
        except TimeoutError:
            raise ProviderError("timeout", "timed out waiting for the provider") from None
        except aiohttp.ClientConnectorError:
            raise ProviderError("connect", "connection refused or failed") from None
        except aiohttp.ClientError as exc:
            raise ProviderError("connect", type(exc).__name__) from None
        if response.status >= 400:
            try:
                raw = await response.read()
            except (aiohttp.ClientError, TimeoutError):
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
        try:
            raw = await response.read()
        except TimeoutError:
            raise ProviderError("timeout", "timed out reading the provider's answer") from None
        except aiohttp.ClientError:
            raise ProviderError("server", "the provider closed the connection early") from None
        finally:
            response.release()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProviderError("bad_response", "the provider answered with invalid JSON") from None


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


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, bytes]]:
    """Parse a text/event-stream into (event name, data) pairs; comments are skipped.

    Reads whatever bytes have arrived and splits out every complete event at once (one
    await per network read, not per line). Lines may end in LF or CRLF (Gemini uses CRLF).
    The response is not released here.
    """
    buf = b""
    try:
        async for received in response.content.iter_any():
            buf += received
            if b"\r" in buf:
                buf = buf.replace(b"\r\n", b"\n")  # a lone trailing CR waits for its LF
            while True:
                end = buf.find(b"\n\n")
                if end < 0:
                    if len(buf) > MAX_SSE_EVENT:
                        raise ProviderError(
                            "bad_response", "the provider sent an oversized stream event"
                        )
                    break
                parsed = _sse_block(buf[:end])
                buf = buf[end + 2 :]
                if parsed is not None:
                    yield parsed
        if buf.strip():
            parsed = _sse_block(buf.strip(b"\r\n"))
            if parsed is not None:
                yield parsed
    except TimeoutError:
        raise ProviderError("timeout", "the provider's stream stalled") from None
    except aiohttp.ClientError:
        raise ProviderError("server", "the provider's stream broke off") from None


def parse_event(data: bytes) -> Json:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProviderError("bad_response", "the provider sent a malformed stream event") from None
    if not isinstance(value, dict):
        raise ProviderError("bad_response", "the provider sent a malformed stream event")
    return value
