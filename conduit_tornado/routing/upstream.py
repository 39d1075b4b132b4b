"""The one module that talks HTTP to providers, through pyreqwest clients built by
clients.py (one configuration for every outbound call).

What it adds to the library: deadlines per deployment (connect, first byte, total), a cap
on every answer's size after decompression and on its headers, outgoing header values
checked before anything is sent, the ``Via`` chain on every call, and failures turned into
``ProviderError`` with a kind that routing understands.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import orjson
from pyreqwest.client import Client
from pyreqwest.exceptions import PyreqwestError, RequestTimeoutError
from pyreqwest.http import Url
from pyreqwest.request import StreamRequest
from pyreqwest.response import Response as RawResponse

from conduit_tornado.core import tracing, via
from conduit_tornado.core.errors import ApiError
from conduit_tornado.core.scrub import scrub
from conduit_tornado.core.settings import Settings

from .clients import ClientConfigError, ClientFactory, Identity, client_identity, env_proxy

Json = dict[str, Any]
MAX_SSE_EVENT = 16 * 1024 * 1024  # one event larger than this is not a chat chunk
MAX_HEADER_BYTES = 64 * 1024  # an answer's header block larger than this is refused
MAX_ERROR_BODY = 64 * 1024  # what is read of an error answer, for its message
#: Bytes pyreqwest gathers before handing a body on: each network read reaches us (and a
#: stream's client) as it arrives. It also makes the head available with the first body
#: bytes rather than after 64 KiB of them, so a declared length over the cap fails at once.
#: Reading whole answers with a bigger batch measured no cheaper (bench/client.py). A bigger
#: limit would bring a stream's events across the thread boundary in batches, but pyreqwest
#: hands a batch on only once it holds that many bytes (there is no timer): the events of a
#: slow stream would wait for later ones. Each body frame therefore crosses on its own.
READ_BUFFER = 1


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    first_byte: float | None
    total: float


class ProviderError(Exception):
    """An upstream failure, classified so routing can decide to retry and the client gets
    an honest OpenAI error that never leaks credentials or internal URLs."""

    #: "config" (a deployment's own settings cannot be sent, e.g. a header with a line
    #: break) is retryable: nothing was sent, and another deployment may work. An answer
    #: over the size caps ("too_large") is not: asking again costs as much again.
    RETRYABLE = frozenset(
        {
            "rate_limit",
            "server",
            "timeout",
            "connect",
            "auth",
            "bad_response",
            "config",
            "no_route",
            "no_model",
        }
    )
    #: Kinds where asking the same deployment again gets the same answer: its settings
    #: (credentials, base_url, model) are wrong. Routing tries each such target once.
    SETTLED = frozenset({"auth", "no_route", "no_model"})

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
        # Providers have echoed the key they were sent in their error messages, which
        # reach clients, logs and spans from here.
        message = scrub(message)
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

    def to_api_error(self, provider: str = "", model: str = "", hint: str = "") -> ApiError:
        """The client's error. ``provider`` is the provider's configured name (never its
        key), ``model`` the deployment's upstream model and ``hint`` what the provider's
        type expects of its base_url: an operator reading the message knows what to fix."""
        who = f"the provider {provider!r}" if provider else "the upstream provider"
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
                f"The gateway's credentials were refused by {who}: check its API key.",
                code="upstream_auth_error",
                type="upstream_error",
            )
        if self.kind == "connect":
            return ApiError(
                502, f"{_upper(who)} could not be reached.", code="upstream_unreachable"
            )
        if self.kind == "no_route":
            return ApiError(
                502,
                f"{_upper(who)} has no such API path (it answered HTTP {self.status}): its "
                f"base_url is likely wrong. {hint}".rstrip(),
                code="upstream_not_found",
                type="upstream_error",
            )
        if self.kind == "no_model":
            named = f" {model!r}" if model else ""
            return ApiError(
                502,
                f"{_upper(who)} does not know the model{named} its deployment names "
                f"(it said: {self.message.rstrip('. ')}). Check the deployment's model.",
                code="upstream_model_not_found",
                type="upstream_error",
            )
        if self.kind == "unsupported":
            return ApiError(400, self.message, code="unsupported_for_model", param=self.param)
        if self.kind == "loop":
            return ApiError(
                508,
                f"Request loop detected upstream: {self.message}",
                code="loop_detected",
                type="upstream_error",
            )
        if self.kind == "too_large":
            return ApiError(
                502, f"The upstream provider failed: {self.message}", code="upstream_too_large"
            )
        if self.kind == "config":
            return ApiError(
                502,
                f"The gateway cannot call {who}: {self.message}",
                code="upstream_misconfigured",
                type="upstream_error",
            )
        return ApiError(502, f"The upstream provider failed: {self.message}", code="upstream_error")


def _upper(text: str) -> str:
    return text[:1].upper() + text[1:]


#: A 404 whose error is about a model (OpenAI's and Azure's codes, or a message naming the
#: model or deployment, as Anthropic, Gemini, Ollama and vLLM word it). Any other 404 or
#: 405 means the provider has no such path: its base_url is wrong, since every call the
#: gateway makes goes to a fixed path under it.
_MODEL_CODES = frozenset({"model_not_found", "DeploymentNotFound"})
_MODEL_WORDS = re.compile(r"(?i)\b(?:models?\b|deployment)")


def _not_found_kind(status: int, message: str, code: str | None, explained: bool) -> str:
    about_model = code in _MODEL_CODES or _MODEL_WORDS.search(message) is not None
    if status == 404 and explained and about_model and not message.startswith("Invalid URL"):
        return "no_model"
    return "no_route"


def classify_status(
    status: int,
    message: str,
    retry_after: float | None = None,
    *,
    code: str | None = None,
    param: str | None = None,
    reason: str | None = None,
    explained: bool = False,
) -> ProviderError:
    """An error answer as a ProviderError. ``code`` and ``param`` are the provider's own
    (OpenAI and Azure name context_length_exceeded, content_filter ...): clients branch on
    them, so a client error keeps them. Gemini says a bad key with a 400 whose reason is
    API_KEY_INVALID: that is the gateway's credential, not the client's request.
    ``explained``: the message is the provider's own (a JSON error), not just the status.

    A 404 or 405 is never the client's: every call goes to a fixed path for a model the
    gateway chose, so it means the deployment's model or the provider's base_url is wrong
    (kinds "no_model" and "no_route"), and another deployment may serve the request."""
    if status in (401, 403) or reason in _KEY_REASONS:
        return ProviderError("auth", message, status=status)
    if status == 508:  # a gateway on the way saw the request come back: asking again loops
        return ProviderError("loop", message, status=status)
    if status == 429:
        return ProviderError("rate_limit", message, status=status, retry_after=retry_after)
    if status in (408, 504):
        return ProviderError("timeout", message, status=status)
    if status >= 500 or status == 409:
        return ProviderError("server", message, status=status, retry_after=retry_after)
    if status in (404, 405):
        kind = _not_found_kind(status, message, code, explained)
        return ProviderError(kind, message, status=status, code=code)
    return ProviderError("client", message, status=status, code=code, param=param)


_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})


def error_details(data: Any) -> tuple[str | None, str | None, str | None]:
    """(code, param, reason) of an error answer, where the provider gives them: OpenAI's
    string code and param, and Gemini's ErrorInfo reason."""
    err = data.get("error", data) if isinstance(data, dict) else None
    if isinstance(data, list) and data:
        return error_details(data[0])
    if not isinstance(err, dict):
        return None, None, None
    code = err.get("code") if isinstance(err.get("code"), str) else None
    param = err.get("param") if isinstance(err.get("param"), str) else None
    reason = None
    for detail in err.get("details") or ():
        if isinstance(detail, dict) and isinstance(detail.get("reason"), str):
            reason = detail["reason"]
    return (code[:100] if code else None), (param[:200] if param else None), reason


def retry_info(data: Any) -> float | None:
    """Seconds to wait from Google's RetryInfo detail ({"retryDelay": "37s"}): Gemini says
    when to come back in the body of its 429, not in a Retry-After header."""
    err = data.get("error") if isinstance(data, dict) else None
    for detail in (err.get("details") if isinstance(err, dict) else None) or ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                seconds = float(delay[:-1])
            except ValueError:
                return None
            return seconds if 0 <= seconds < 86_400 else None
    return None


def _retry_after(headers: Headers) -> float | None:
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


class Headers:
    """An answer's headers, looked up case-insensitively (a repeated header: the first)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: RawResponse) -> None:
        self._raw = raw

    def get(self, name: str, default: Any = None) -> Any:
        value = self._raw.get_header(name)
        return default if value is None else value


class Response:
    """An answer whose status and headers arrived; the body follows on demand, capped
    at ``limit`` bytes after decompression. ``aclose()`` (or ``release()``) must be
    called unless the body was read to its end."""

    __slots__ = (
        "_closed",
        "_ended",
        "_left",
        "_raw",
        "_reader",
        "_request",
        "_unread",
        "headers",
        "status",
    )

    def __init__(
        self, request: StreamRequest, raw: RawResponse, limit: int, declared: int | None = None
    ) -> None:
        self._request = request
        self._raw = raw
        self.status = raw.status
        self.headers = Headers(raw)
        self._reader = raw.body_reader
        self._left = limit
        # Bytes still due by the answer's Content-Length (-1: unknown, e.g. chunked or
        # decompressed): once all arrived, the end is known without another read.
        self._unread = -1 if declared is None else declared
        self._ended = declared == 0
        self._closed = False

    async def next_chunk(self) -> bytes | None:
        """The body bytes that have arrived since the last call (waiting for some),
        decoded if compressed; None at the end."""
        if self._ended or self._closed:
            return None
        try:
            piece = await self._reader.read_chunk()
        except PyreqwestError as exc:
            await self.aclose()
            raise _failure(exc, broke_off=True) from None
        if piece is None:
            self._ended = True
            return None
        self._left -= len(piece)
        if self._left < 0:
            await self.aclose()  # stops the reading and inflating at once
            raise ProviderError("too_large", "its answer is larger than the gateway accepts")
        if self._unread > 0:
            self._unread -= len(piece)
            self._ended = self._unread <= 0  # hyper pools the connection by itself
        return piece.to_bytes()

    async def read(self) -> bytes:
        """The whole body (within the cap)."""
        first = await self.next_chunk()
        if first is None:
            return b""
        if self._ended:  # the usual answer: whole in its first piece, its length declared
            return first
        pieces = [first]
        while (piece := await self.next_chunk()) is not None:
            pieces.append(piece)
        return b"".join(pieces)

    async def aclose(self) -> None:
        """Done with the answer: a body read to its end leaves its connection in the pool;
        one abandoned midway is closed (with the connection)."""
        if self._closed:
            return
        self._closed = True
        if not self._ended:
            await self._request.__aexit__(None, None, None)

    def release(self) -> None:
        """aclose() for callers that cannot await: the close runs as a task."""
        if self._closed:
            return
        if self._ended:
            self._closed = True
            return
        task = asyncio.ensure_future(self.aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Future[None]] = set()  # release()'s closes, held until done


def check_headers(headers: Mapping[str, str]) -> None:
    """Refuse header names and values that could split or smuggle a request: only visible
    ASCII, spaces and tabs may go out (pyreqwest would send other text as UTF-8, which no
    provider expects in a header). Raises ProviderError("config") naming the header."""
    for name, value in headers.items():
        _check_header(name, value)


# A deployment sends the same few headers on every call: each pair is checked once, then
# remembered (a refused pair raises, and is not remembered). The pairs, credentials among
# them, stay in this process's memory only, as the providers' own settings do.
@functools.lru_cache(maxsize=512)
def _check_header(name: str, value: str) -> None:
    if _NOT_TOKEN.search(name) or not name:
        raise ProviderError("config", f"a header name ({name[:40]!r}) is not a valid token")
    if _NOT_VALUE.search(value):
        raise ProviderError(
            "config",
            f"the value of header {name!r} holds a line break, control or non-ASCII character",
        )


def _parsed_url(text: str) -> Url:
    """``text`` parsed once (a deployment calls the same few URLs); ValueError if it is not
    a URL, as pyreqwest raises for the text itself."""
    url = _URLS.get(text)
    if url is None:
        if len(_URLS) >= _CACHED:
            _URLS.clear()  # many distinct URLs (Azure deployments): start over, bounded
        url = _URLS[text] = Url(text)
    return url


def _deadline(seconds: float) -> timedelta:
    total = _DEADLINES.get(seconds)
    if total is None:
        if len(_DEADLINES) >= _CACHED:
            _DEADLINES.clear()
        total = _DEADLINES[seconds] = timedelta(seconds=seconds)
    return total


_CACHED = 256
_URLS: dict[str, Url] = {}
_DEADLINES: dict[float, timedelta] = {}


_NOT_TOKEN = re.compile(r"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_NOT_VALUE = re.compile(r"[^\t\x20-\x7e]")


class Upstream:
    """Provider HTTP calls, through pyreqwest clients from one ClientFactory; aiohttp
    sessions remain only for provider WebSockets (realtime), opened once per session.

    A client (and its pool) is built per distinct connect timeout and client
    certificate; providers register theirs with ``configure``."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        self.factory = ClientFactory(self.settings)
        # Building a client loads the system's trust store (tens of milliseconds of CPU),
        # so clients are built in a thread when first needed, never on the event loop.
        self._clients: dict[tuple[float, str], Client] = {}
        self._building = asyncio.Lock()
        self._identities: dict[str, Identity | None] = {}
        self._broken: dict[str, str] = {}  # pools whose client certificate does not load
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def configure(self, pool: str, options: Mapping[str, Any]) -> None:
        """Take a provider's client certificate options (clients.CLIENT_CERT/CLIENT_KEY).
        A pair that does not load makes each call to that provider fail with its reason."""
        try:
            self._identities[pool] = client_identity(options)
        except ClientConfigError as exc:
            self._identities[pool] = None
            self._broken[pool] = str(exc)
            return
        self._broken.pop(pool, None)

    async def _client(self, pool: str, connect: float) -> Client:
        broken = self._broken.get(pool)
        if broken is not None:
            raise ProviderError("config", broken)
        identity = self._identities.get(pool)
        key = (connect, identity.digest if identity is not None else "")
        client = self._clients.get(key)
        if client is not None:
            return client
        async with self._building:  # one build per key, off the event loop
            client = self._clients.get(key)
            if client is None:
                try:
                    client = await asyncio.to_thread(
                        self.factory.client, connect_timeout=connect, identity=identity
                    )
                except ClientConfigError as exc:
                    raise ProviderError("config", str(exc)) from None
                self._clients[key] = client
        return client

    def session(self, pool: str) -> aiohttp.ClientSession:
        """An aiohttp session for WebSocket connections to this pool's provider, with the
        same trust and client certificate as its HTTP calls."""
        session = self._sessions.get(pool)
        if session is None or session.closed:
            broken = self._broken.get(pool)
            if broken is not None:
                raise ProviderError("config", broken)
            context = self.factory.ssl_context(self._identities.get(pool))
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, enable_cleanup_closed=False, ssl=context or True
                ),
                skip_auto_headers=("User-Agent",),
            )
            self._sessions[pool] = session
        return session

    @staticmethod
    def ws_proxy(url: str) -> str | None:
        """The proxy the environment names for a WebSocket URL (None: direct)."""
        return env_proxy(url)

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

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
        status; anything else raises ProviderError. The caller closes the response."""
        hdrs = dict(headers or {})
        hdrs["Via"] = via.outgoing()
        carried = tracing.outgoing.get()  # traceparent of the attempt's span, when tracing
        if carried:
            hdrs.update(carried)
        check_headers(hdrs)
        builder = (await self._client(pool, t.connect)).request(method, _parsed_url(url))
        if params:
            builder = builder.query(dict(params))
        if json is not None:
            builder = builder.body_bytes(orjson.dumps(json))
            hdrs["Content-Type"] = "application/json"
        elif stream is not None:
            if length is None:
                raise ValueError("a streamed body needs its length")
            builder = builder.body_stream(stream)
            hdrs["Content-Length"] = str(length)  # sent as is, not chunked
        builder = builder.headers(hdrs).timeout(_deadline(t.total))
        request = builder.streamed_read_buffer_limit(READ_BUFFER).build_streamed()
        try:
            if t.first_byte:
                # pyreqwest detaches (does not abort) its Rust task when the await is
                # cancelled: the exchange runs on until its head arrives or its total
                # deadline passes, then its connection is closed. It is never sent again.
                async with asyncio.timeout(t.first_byte):
                    raw = await request.__aenter__()
            else:
                raw = await request.__aenter__()
        except TimeoutError as exc:
            if isinstance(exc, PyreqwestError):
                raise _failure(exc) from None
            raise ProviderError("timeout", "no first byte in time") from None
        except PyreqwestError as exc:
            raise _failure(exc) from None
        limit = self.settings.max_upstream_bytes
        try:
            declared = _check_head(raw, limit)
        except ProviderError:
            await request.__aexit__(None, None, None)
            raise
        response = Response(request, raw, limit, declared)
        if response.status >= 300:
            raw_body = await _error_body(response)
            if response.status < 400:  # redirects are not followed: a paid POST, twice
                raise ProviderError(
                    "config",
                    f"the provider redirected (HTTP {response.status}); its base_url should "
                    "be the address it redirects to",
                )
            try:
                parsed: Any = orjson.loads(raw_body)
            except orjson.JSONDecodeError:
                parsed = None
            fallback = f"HTTP {response.status}"
            message = error_message(parsed, fallback)
            code, param, reason = error_details(parsed)
            raise classify_status(
                response.status,
                message,
                _retry_after(response.headers) or retry_info(parsed),
                code=code,
                param=param,
                reason=reason,
                explained=message is not fallback,
            )
        return response

    async def request_json(
        self, pool: str, method: str, url: str, t: Timeouts, **kwargs: Any
    ) -> Any:
        response = await self.request(pool, method, url, t, **kwargs)
        return parse_json(await read_body(response))


def _check_head(raw: RawResponse, limit: int) -> int | None:
    """Refuse a head over the caps; the body's declared length, if it has one."""
    size = 0
    for name, value in raw.headers.items():
        size += len(name) + len(value) + 4
    if size > MAX_HEADER_BYTES:
        raise ProviderError("too_large", "its answer's headers are larger than the gateway accepts")
    declared = raw.get_header("content-length")
    if declared is None or not declared.isdigit():
        return None
    if int(declared) > limit:
        raise ProviderError("too_large", "its answer is larger than the gateway accepts")
    return int(declared)


async def _error_body(response: Response) -> bytes:
    """Up to MAX_ERROR_BODY bytes of an error answer, then the answer is closed."""
    pieces: list[bytes] = []
    size = 0
    try:
        while size < MAX_ERROR_BODY and (piece := await response.next_chunk()) is not None:
            pieces.append(piece)
            size += len(piece)
    except ProviderError:
        return b""
    finally:
        await response.aclose()
    return b"".join(pieces)[:MAX_ERROR_BODY]


async def read_body(response: Response) -> bytes:
    """The whole body (within the cap); then the connection goes back to the pool."""
    try:
        return await response.read()
    finally:
        if response._ended:
            response._closed = True  # what aclose() does then, without awaiting it
        else:
            await response.aclose()


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProviderError("bad_response", "the provider answered with invalid JSON") from None


def _failure(exc: PyreqwestError, *, broke_off: bool = False) -> ProviderError:
    """A pyreqwest failure as a ProviderError. Its exception classes say little about
    whether the request went out (a connection the server closed after reading it is a
    ConnectError too), so the causes hyper-util reports decide: "(Connect)" means no
    connection was made, and only that is a "connect" failure."""
    causes = getattr(exc, "details", None) or {}
    text = " | ".join(c.get("message", "") for c in causes.get("causes") or ()) or str(exc)
    never_connected = "client error (Connect)" in text
    if isinstance(exc, RequestTimeoutError):
        if never_connected:
            return ProviderError("connect", "timed out connecting to the provider")
        return ProviderError(
            "timeout", "the provider's stream stalled" if broke_off else "timed out"
        )
    if never_connected:
        return ProviderError("connect", "connection refused or failed")
    if broke_off:
        return ProviderError("server", "the provider closed the connection early")
    return ProviderError("server", "the provider closed the connection before answering")


async def body_chunks(response: Response, broke_off: str) -> AsyncIterator[bytes]:
    """The body as it arrives; a failure midway is a ProviderError saying ``broke_off``."""
    while (piece := await next_chunk(response, broke_off)) is not None:
        yield piece


async def next_chunk(response: Response, broke_off: str) -> bytes | None:
    """Response.next_chunk, with the connection breaking midway as a ProviderError
    saying ``broke_off``."""
    try:
        return await response.next_chunk()
    except ProviderError as exc:
        if exc.kind == "server":
            raise ProviderError("server", broke_off) from None
        raise


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
        # Appended to, and searched only where it grew: an event that never ends (a
        # decompressing bomb of zeros) costs one pass over its bytes, not one per read.
        self._buf = bytearray()
        self._scanned = 0
        self._cr = False  # the last read ended in a CR, whose LF may be the next byte
        self._ended = False

    async def next_batch(self) -> list[tuple[str, bytes]] | None:
        while not self._ended:
            try:  # Response.next_chunk awaited here, not through next_chunk(): one frame less
                received = await self._response.next_chunk()
            except ProviderError as exc:
                if exc.kind == "server":
                    raise ProviderError("server", "the provider's stream broke off") from None
                raise
            if received is None:
                self._ended = True
                rest = bytes(self._buf).strip(b"\r\n")
                parsed = _sse_block(rest) if rest.strip() else None
                return [parsed] if parsed is not None else None
            if (
                not self._buf
                and not self._cr
                and received.startswith(b"data: ")
                and received.endswith(b"\n\n")
                and received.count(b"\n") == 2
                and b"\r" not in received
            ):
                # What OpenAI-style providers send per read: one whole data-only event,
                # taken without the buffer's copies (the same result as the walk below).
                return [("message", received[6:-2])]
            if self._cr:
                received = b"\r" + received
            self._cr = received.endswith(b"\r")
            if self._cr:
                received = received[:-1]
            if b"\r" in received:
                received = received.replace(b"\r\n", b"\n")
            buf = self._buf
            buf += received
            batch = []
            start = 0  # walk the buffer by offset: a burst is not re-copied per event
            search = max(0, self._scanned - 1)  # a separator may straddle two reads
            while True:
                end = buf.find(b"\n\n", search)
                if end < 0:
                    break
                block = bytes(buf[start:end])
                start = search = end + 2
                if block.startswith(b"data: ") and b"\n" not in block:
                    batch.append(("message", block[6:]))  # the usual shape, without a call
                elif (parsed := _sse_block(block)) is not None:
                    batch.append(parsed)
            if start:
                del buf[:start]
            self._scanned = len(buf)
            if len(buf) > MAX_SSE_EVENT:
                raise ProviderError("too_large", "the provider sent an oversized stream event")
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
