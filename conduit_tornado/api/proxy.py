"""What every model-calling route shares: model resolution, the request log entry,
usage and cost, headers, and the SSE relay."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from tornado.iostream import StreamClosedError

from conduit_tornado.admission.limits import Grant
from conduit_tornado.core import meters
from conduit_tornado.core.errors import ApiError
from conduit_tornado.formats.sse import named_events as named_events  # routes import it here
from conduit_tornado.metering.pricing import Price
from conduit_tornado.metering.recorder import new_log_entry
from conduit_tornado.routing.catalog import ModelRoute
from conduit_tornado.routing.providers.base import (
    ChunkStream,
    Json,
    Usage,
    estimate_tokens,
    prompt_text,
)
from conduit_tornado.routing.router import Outcome, RoutingFailed
from conduit_tornado.routing.upstream import ProviderError

from .base import ClientHandler, dumps, model_name, resolve_model

T = TypeVar("T")
FREE = Price(0.0, 0.0)
_PARAM_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
MAX_NAMED = 32  # names in x-conduit-dropped-params
MAX_USER = 256
#: The capabilities (any one of) a model needs for each route's requests.
NEEDS: dict[str, frozenset[str]] = {
    "chat.completions": frozenset({"chat"}),
    "completions": frozenset({"completions", "chat"}),
    "embeddings": frozenset({"embeddings"}),
    "images.generations": frozenset({"images"}),
    "images.edits": frozenset({"images"}),
    "images.variations": frozenset({"images"}),
    "audio.transcriptions": frozenset({"audio"}),
    "audio.translations": frozenset({"audio"}),
    "audio.speech": frozenset({"audio"}),
    "audio.speech.stream": frozenset({"audio"}),
    "responses": frozenset({"responses", "chat"}),
    "messages": frozenset({"chat", "responses"}),
    "moderations": frozenset({"moderations"}),
    "rerank": frozenset({"rerank"}),
}


def note_chunk(seen: dict[str, Any], chunk: Json) -> None:
    """What a route that translates chat chunks notes of each: the model the provider says
    answered, the usage, and the streamed characters (for an estimate without usage)."""
    if seen["reported"] is None and isinstance(chunk.get("model"), str) and chunk["model"]:
        seen["reported"] = chunk["model"]
    if chunk.get("usage"):
        seen["usage"] = Usage.from_openai(chunk["usage"])
    for choice in chunk.get("choices") or ():
        text = (choice.get("delta") or {}).get("content")
        if text:
            seen["chars"] += len(text)


def _usd(cost: float) -> str:
    return f"{cost:.10f}".rstrip("0").rstrip(".") or "0"


@dataclass(slots=True)
class _Seen:
    """What a relay saw pass: the usage chunk, and streamed characters for estimates."""

    usage: Usage | None = None
    chars: int = 0
    reported: str | None = None  # the model the provider says answered


class ProxyHandler(ClientHandler):
    endpoint = ""
    #: The request log's error code (and type) of a stream stopped because its client left.
    GONE = "client_disconnected"
    _first_event: float | None = None  # streams: when the provider's first event was here
    _metered = False

    def initialize(self) -> None:
        super().initialize()
        self.entry: dict[str, Any] | None = None
        self.route: ModelRoute | None = None
        self.outcome: Outcome | None = None
        self._relay: asyncio.Task[None] | None = None
        self._client_gone = False
        self._last_write = 0.0
        self._keepalive: asyncio.TimerHandle | None = None
        self._streaming = False  # the response head has gone out; events go direct
        self.grant: Grant | None = None
        self.reported_model: str | None = None  # what the provider says answered (spans)

    # -- request --------------------------------------------------------------------------

    def resolve(self, body: Json) -> ModelRoute:
        model = model_name(body.get("model"))
        user = body.get("user")
        if isinstance(user, str) and len(user) > MAX_USER:
            # It is logged, and keys a limit bucket per end user: bounded like a name.
            raise ApiError(
                400,
                f"user is limited to {MAX_USER} characters.",
                param="user",
                code="string_above_max_length",
            )
        # The entry exists before the checks, so refusals (404, 403) are logged too.
        self.entry = new_log_entry(
            self.request_id,
            self.ctx.clock.now(),
            self.key,
            self.endpoint,
            model,
            stream=body.get("stream") is True,  # "false" is refused, not a stream
            user=user if isinstance(user, str) else None,
        )
        if self.trace is not None:
            self.trace.model_request(self.endpoint, model, body)
        self.route = resolve_model(self.ctx, self.key, model)
        needs = NEEDS.get(self.endpoint)
        declared = self.route.declared
        if needs is not None and declared is not None and not needs & declared:
            raise ApiError(
                400,
                f"The model '{model}' does not support {self.endpoint} requests "
                f"(it can do: {', '.join(sorted(declared))}).",
                param="model",
                code="unsupported_for_model",
            )
        return self.route

    async def admit(
        self, body: Json, prompt_tokens: int | None = None, completion_reserve: bool = True
    ) -> None:
        """Reserve this request against every limit of its key (429 if any is reached)."""
        assert self.entry is not None
        tokens = prompt_tokens if prompt_tokens is not None else estimate_tokens(prompt_text(body))
        if completion_reserve:
            most = body.get("max_completion_tokens") or body.get("max_tokens")
            per_choice = most if isinstance(most, int) else self.ctx.settings.tpm_default_reserve
            n = body.get("n")
            tokens += per_choice * (n if isinstance(n, int) and n > 1 else 1)
        self.grant = await self.ctx.limiter.admit(
            self.key.doc, self.entry["model"], self.entry["user"], tokens
        )
        self.put_headers(self.grant.headers)

    # -- accounting -----------------------------------------------------------------------

    def token_cost(
        self, usage: Usage, outcome: Outcome, reported: str | None = None
    ) -> float | None:
        """Cost of tokens (None: unpriced). ``reported`` is the model the provider says
        answered: Azure deployment names are arbitrary, but the answer names the real
        model, which the price table knows."""
        target = outcome.target
        prices = self.ctx.prices
        price = prices.price(target.model, target.deployment.get("pricing"), target.route.pricing)
        if price is None and reported:
            price = prices.lookup(reported)
        if price is None and target.adapter.free:
            price = FREE
        return price.cost(usage) if price is not None else None

    def account(
        self,
        usage: Usage,
        outcome: Outcome,
        reported: str | None = None,
        *,
        cost: float | None = None,
        media: dict[str, Any] | None = None,
    ) -> float | None:
        """Fill the log entry from an answered request; return its cost (None: unpriced).

        Token-priced work passes only usage; media work passes ``media`` (what was made:
        images, audio seconds, characters) and the ``cost`` priced from it."""
        target = outcome.target
        if media is None:
            cost = self.token_cost(usage, outcome, reported)
        elif cost is None and target.adapter.free:
            cost = 0.0
        assert self.entry is not None
        self.reported_model = reported
        if media is not None:
            self.entry["media"] = media
        self.entry.update(
            provider=target.provider.name,
            deployment=target.model,
            fallback_model=target.route.name
            if self.route and target.route.name != self.route.name
            else None,
            attempts=outcome.attempts,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            total_tokens=usage.total_tokens,
            estimated=usage.estimated,
            cost=cost,
            unpriced=cost is None,
            upstream_ms=round(outcome.upstream_seconds * 1000, 3),
        )
        return cost

    def routing_headers(self, outcome: Outcome) -> None:
        self.put_headers(
            {
                "x-conduit-provider": outcome.target.provider.name,
                "x-conduit-model": outcome.target.model,
                "x-conduit-attempts": str(outcome.attempts),
                "x-conduit-overhead-ms": f"{self.overhead_ms(outcome):.3f}",
            }
        )

    def overhead_ms(self, outcome: Outcome) -> float:
        """Time the gateway itself added: elapsed minus upstream calls and retry waits."""
        elapsed = time.perf_counter() - self.started
        return max(0.0, (elapsed - outcome.upstream_seconds - outcome.waited_seconds) * 1000)

    def answer_headers(self, outcome: Outcome, cost: float | None) -> None:
        """Headers of a complete answer: routing, and its cost when priced."""
        self.routing_headers(outcome)
        if cost is not None:
            self.put_headers({"x-conduit-cost-usd": _usd(cost)})

    def send_answer(self, result: Json, usage: Usage, outcome: Outcome) -> None:
        reported = result.get("model")
        cost = self.account(usage, outcome, reported if isinstance(reported, str) else None)
        self.answer_headers(outcome, cost)
        if self.trace is not None:
            self.trace.model_answer(result)
        result["model"] = self.entry["model"] if self.entry else result.get("model")
        self.send_json(result)

    def name_dropped(self, names: list[str]) -> None:
        """Say in x-conduit-dropped-params which fields the deployment answering could not
        take (an attempt that drops none clears what an earlier one said)."""
        # Names come from the client's own field names: only parameter-like ones go into a
        # header (a name with control characters would make the answer unsendable).
        named = [n for n in names if _PARAM_NAME.fullmatch(n)][:MAX_NAMED] if names else None
        if named:
            self.put_headers({"x-conduit-dropped-params": ",".join(named)})
        else:
            self._own_headers.pop("x-conduit-dropped-params", None)

    def usage_of(self, result: Json, body: Json) -> Usage:
        usage = Usage.from_openai(result.get("usage"))
        if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
            return usage
        text = "".join(
            str((c.get("message") or {}).get("content") or c.get("text") or "")
            for c in result.get("choices") or []
        )
        return Usage(estimate_tokens(prompt_text(body)), estimate_tokens(text), estimated=True)

    # -- streaming ------------------------------------------------------------------------

    async def relay(
        self,
        stream: ChunkStream,
        outcome: Outcome,
        body: Json,
        transform: Callable[[Json], Json] | None = None,
    ) -> None:
        """Send an opened upstream stream to the client as SSE: what each network read
        from upstream held, in one write, as soon as it is parsed."""
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.start_events(outcome)
        seen = _Seen()
        model = self.entry["model"] if self.entry else ""

        async def pump() -> None:
            # A batch is what one network read from upstream held: its events go to the
            # client together, in one write, as soon as it is parsed.
            while (batch := await stream.next_batch()) is not None:
                events = []
                chars = 0
                for chunk in batch:
                    if (
                        seen.reported is None
                        and isinstance(chunk.get("model"), str)
                        and chunk["model"]
                    ):
                        seen.reported = chunk["model"]
                    usage = chunk.get("usage")
                    if usage:
                        seen.usage = Usage.from_openai(usage)
                        if not include_usage:
                            if not chunk.get("choices"):
                                continue
                            del chunk["usage"]
                    elif include_usage:
                        chunk["usage"] = None  # as OpenAI does on every chunk when asked
                    elif "usage" in chunk:
                        del chunk["usage"]
                    choices = chunk.get("choices")
                    if choices:
                        for choice in choices:
                            delta = choice.get("delta")
                            text = (delta.get("content") if delta else None) or choice.get("text")
                            if text:
                                chars += len(text)
                    chunk["model"] = model
                    # Plain orjson: chunks from providers have string keys.
                    events.append(orjson.dumps(transform(chunk) if transform else chunk))
                seen.chars += chars
                if events:
                    behind = self._events(events)
                    if behind is not None:
                        await behind
            behind = self._events([b"[DONE]"])
            if behind is not None:
                await behind

        await self.pump_events(
            stream, outcome, pump(), lambda error: b"data: " + dumps(error.envelope()) + b"\n\n"
        )
        usage = seen.usage
        if usage is None:  # no usage chunk (the client left, or a terse provider): estimate
            usage = Usage(
                estimate_tokens(prompt_text(body)), math.ceil(seen.chars / 4), estimated=True
            )
        self.account(usage, outcome, seen.reported)
        self.end_events()

    # What every streamed route (chat, Responses, Messages) shares around its own pump.

    def start_events(self, outcome: Outcome) -> None:
        """The head of a server-sent event stream."""
        self._first_event = time.perf_counter()  # opening the stream awaited its first event
        meters.STREAMS_OPEN.n += 1
        self.sse_headers()
        self.routing_headers(outcome)

    def sse_headers(self) -> None:
        """A server-sent event stream's own headers (start_events adds routing's)."""
        self._headers["Content-Type"] = "text/event-stream; charset=utf-8"
        self.put_headers(
            {
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # tell nginx-style proxies not to buffer
            }
        )

    async def pump_events(
        self,
        stream: ChunkStream,
        outcome: Outcome,
        pump: Coroutine[Any, Any, None],
        error_event: Callable[[ApiError], bytes],
    ) -> None:
        """Run a stream's pump with keepalives; the upstream is closed however it ends,
        and the time spent awaiting it is the outcome's upstream time (not overhead)."""
        self._last_write = time.monotonic()
        self._keepalive_tick()
        try:
            await self.run_relay(pump, error_event)
        finally:
            if self._keepalive is not None:
                self._keepalive.cancel()
            outcome.upstream_seconds += stream.waited  # before account() logs it
            await stream.aclose()  # closes the upstream connection if it is still open

    def end_events(self) -> None:
        if self._client_gone:
            self.done()
        else:
            self.finish()

    async def send_named(self, events: list[Json]) -> None:
        """Write events as named SSE events (``event: <type>``), as OpenAI's Responses
        API and Anthropic's Messages API send them, in one write."""
        behind = self._write_frames(named_events(events))
        if behind is not None:
            await behind

    async def run_relay(
        self, pump: Coroutine[Any, Any, None], error_event: Callable[[ApiError], bytes] | None
    ) -> None:
        """Run a relay so that the client leaving cancels it (on_connection_close): a
        disconnect is logged as 499, and a provider failure after the first byte (nothing
        can be retried then) is logged and told to the client as ``error_event``."""
        assert self.entry is not None
        try:
            await self.unless_gone(pump)
        except ProviderError as exc:
            target = self.outcome.target if self.outcome is not None else None
            error = (
                exc.to_api_error(target.provider.name, target.model, target.adapter.base_url_hint)
                if target is not None
                else exc.to_api_error()
            )
            self.entry.update(status=error.status, error_code=error.code, error_type=error.type)
            if target is not None:  # after the first byte: the router never saw it
                meters.upstream_error(target.provider.name, exc.kind)
            if error_event is not None:
                with contextlib.suppress(StreamClosedError):
                    self.write(error_event(error))
                    await self.flush()
        except StreamClosedError:
            self.gone()

    async def unless_gone(self, work: Coroutine[Any, Any, T]) -> T | None:
        """Await ``work`` so that the client leaving stops it at once: None then (also
        when it had left before), and the request is logged as abandoned."""
        if self._client_gone:
            work.close()
            self.gone()
            return None
        # It runs in this handler's own task (a task of its own would cost a scheduling
        # round and a write more per stream): a client that leaves cancels this task while
        # it is here, and the cancellation is taken back once handled.
        task = self._relay = asyncio.current_task()
        assert task is not None
        try:
            return await work
        except asyncio.CancelledError:
            if not self._client_gone:
                raise  # cancelled for another reason (shutdown): not ours to handle
            task.uncancel()
            self.gone()
            return None
        finally:
            self._relay = None

    def gone(self) -> None:
        """The client left mid-request: logged as a 499, with the route's GONE code."""
        self._client_gone = True
        assert self.entry is not None
        self.entry.update(status=499, error_code=self.GONE, error_type=self.GONE)

    def _events(self, payloads: list[bytes]) -> asyncio.Future[None] | None:
        """Write SSE events, in one write. Returns a future to await only when the client
        is behind (or gone): a stream that keeps up costs no coroutine per write."""
        if len(payloads) == 1:
            event = b"data: " + payloads[0] + b"\n\n"
        else:
            event = b"".join([b"data: " + p + b"\n\n" for p in payloads])
        return self._write_frames(event)

    def _write_frames(self, event: bytes) -> asyncio.Future[None] | None:
        self._last_write = time.monotonic()
        if self._streaming:
            # Headers are out: straight to the connection (Tornado's HTTPConnection API),
            # skipping RequestHandler's per-write buffering.
            connection = self.request.connection
            assert connection is not None
            sent = connection.write(event)
        else:
            self.write(event)
            sent = self.flush()
            self._streaming = True
        return None if sent.done() and sent.exception() is None else sent

    def _keepalive_tick(self) -> None:
        """A comment after sse_keepalive seconds of silence: one timer per stream,
        re-armed from the last write."""
        interval = self.ctx.settings.sse_keepalive
        idle = time.monotonic() - self._last_write
        if idle >= interval:
            self.write(b": keepalive\n\n")
            with contextlib.suppress(StreamClosedError):  # a closed stream ends the relay
                self.flush().add_done_callback(_retrieved)
            self._last_write = time.monotonic()
            idle = 0.0
        loop = asyncio.get_running_loop()
        self._keepalive = loop.call_later(interval - idle, self._keepalive_tick)

    def on_connection_close(self) -> None:
        self._client_gone = True
        if self._relay is not None:
            self._relay.cancel()  # stop at once (unless_gone); the route bills what was made
        super().on_connection_close()

    # -- logging --------------------------------------------------------------------------

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.log_error(status_code, kwargs.get("exc_info", (None, None, None))[1])
        super().write_error(status_code, **kwargs)

    def log_error(self, status_code: int, exc: BaseException | None) -> None:
        """Put a refusal or failure in the request log entry."""
        if self.entry is not None:
            self.entry["status"] = status_code
            if isinstance(exc, ApiError):
                self.entry.update(error_code=exc.code, error_type=exc.type)
            else:
                self.entry.update(error_code=None, error_type="server_error")
            if isinstance(exc, RoutingFailed):  # what was tried, for the log and access line
                self.outcome = outcome = exc.outcome
                self.entry.update(
                    provider=outcome.target.provider.name,
                    deployment=outcome.target.model,
                    attempts=outcome.attempts,
                    upstream_ms=round(outcome.upstream_seconds * 1000, 3),
                )

    def on_finish(self) -> None:
        self.done()
        super().on_finish()

    def done(self) -> None:
        """The request is over (answered, failed, or abandoned): log it, settle its limits."""
        entry, self.entry = self.entry, None
        if entry is None:
            return
        if self.grant is not None:
            grant, self.grant = self.grant, None
            self.ctx.limiter.settle(grant, entry.get("total_tokens") or 0, entry.get("cost"))
        seconds = time.perf_counter() - self.started
        entry["latency_ms"] = round(seconds * 1000, 3)
        overhead = None
        if self.outcome is not None:
            overhead = self.overhead_ms(self.outcome) / 1000
            entry["overhead_ms"] = round(overhead * 1000, 3)
            self.ctx.overhead.observe(overhead)
        entry["client_ip"] = self.request.remote_ip
        self.ctx.recorder.record(entry)
        self.request_done(entry)
        self._meter_entry(entry, seconds, overhead)

    def _meter_entry(self, entry: dict[str, Any], seconds: float, overhead: float | None) -> None:
        self._metered = True
        first = self._first_event
        if first is not None:
            meters.STREAMS_OPEN.n -= 1
        meters.request_finished(
            self.endpoint,
            self.route.name if self.route is not None else "unknown",  # never free text
            entry.get("provider") or "",
            entry["status"],
            seconds,
            overhead,
            None if first is None else first - self.started,
        )

    def meter(self) -> None:
        if self.entry is None and not self._metered:  # refused before it had an entry
            super().meter()


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # a write to a closed stream: the relay sees the close itself
