"""The Responses API: POST /v1/responses (whole or streamed), GET and DELETE
/v1/responses/{id}, GET /v1/responses/{id}/input_items, POST /v1/responses/input_tokens
and POST /v1/responses/{id}/cancel.

Every backend is reached through its chat adapter (formats/responses*.py translate both
ways), with the same keys, limits, routing, usage, cost and request log as chat. A stored
response (``store`` is true unless the client says otherwise) is kept under its
``resp_`` id with the conversation that led to it, owned by the key that made it, so a
follow-up naming it as ``previous_response_id`` continues that conversation on any
backend.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import tornado.web

from conduit_tornado.core.errors import ApiError
from conduit_tornado.formats.responses import (
    Translation,
    new_id,
    relayed_items,
    to_chat,
)
from conduit_tornado.formats.responses_events import EventStream
from conduit_tornado.formats.responses_output import (
    as_messages,
    chat_shape_ok,
    output_of,
    response_object,
)
from conduit_tornado.formats.responses_params import CHECKED_PARAMS, check_params
from conduit_tornado.routing.catalog import ModelRoute
from conduit_tornado.routing.providers.base import (
    ChunkStream,
    Json,
    Usage,
    estimate_tokens,
    prompt_text,
)
from conduit_tornado.routing.router import Target
from conduit_tornado.routing.upstream import ProviderError, Timeouts

from .base import ClientHandler, dumps, model_name, resolve_model
from .conversations import (
    append_items,
    check_new_items,
    checked_metadata,
    conversation_id,
)
from .proxy import ProxyHandler, named_events
from .responses_stored import (
    RESPONSES,
    UNFINISHED,
    Kept,
    Owned,
    Prior,
    end_unfinished,
    packed,
    prior,
    unpacked,
)

#: A turn that ended so is not added to its conversation: a cancelled one stopped part
#: way, at its client's word.
_UNRECORDED = ("failed", "cancelled")
log = logging.getLogger("conduit.responses")


@dataclass
class Turn:
    """One POST /v1/responses, as every backend attempt needs it."""

    body: Json
    route: ModelRoute
    response_id: str
    created_at: int
    model: str  # the virtual name the client asked for
    items: list[Json]  # this request's input items, as input_items lists them
    prior: Prior
    translation: Translation | None  # None: only a native provider can take it
    problem: ApiError | None = None  # why it cannot be translated

    def native_body(self, target: Target) -> Json | None:
        """The body for the provider's own Responses API, or None to translate: for a
        provider without one, a gateway conversation, or a previous response made on
        another provider (the stored history then goes as chat)."""
        if not target.adapter.native_responses or self.body.get("conversation") is not None:
            return None
        payload = {k: v for k, v in self.body.items() if k not in _GATEWAY_ONLY}
        if self.body.get("previous_response_id") is not None:
            upstream = self.prior.upstream
            if upstream is None or upstream.get("provider") != target.provider.id:
                return None
            if not upstream.get("stored", True):
                return None
            payload["previous_response_id"] = upstream["id"]
        return payload

    def dropped(self, target: Target, native: Json | None) -> list[str]:
        """What this attempt leaves out of the request: nothing when relayed as sent."""
        if native is not None or self.translation is None:
            return []
        return self.translation.dropped_by(target.adapter.dropped(self.translation.chat))

    def chat(self) -> Json:
        """The chat body for a backend without the Responses API, or why there is none."""
        if self.translation is None:
            assert self.problem is not None
            raise self.problem
        return self.translation.chat

    def response(self, status: str, **kwargs: Any) -> Json:
        return response_object(
            self.body,
            response_id=self.response_id,
            model=self.model,
            created_at=self.created_at,
            status=status,
            **kwargs,
        )

    def relabelled(self, answer: Json) -> Json:
        """A provider's Response under the gateway's id, model name and previous id."""
        return {
            **answer,
            "id": self.response_id,
            "model": self.model,
            "previous_response_id": self.body.get("previous_response_id"),
            "background": bool(self.body.get("background", False)),
        }

    def messages(self, output: list[Json]) -> list[Json]:
        """The conversation after this turn, as chat, for follow-ups on any backend."""
        before = self.translation.messages if self.translation is not None else []
        return before + as_messages(output)

    def replay(self, output: list[Json]) -> tuple[str, list[Json]] | None:
        """What conversation_after needs of this turn besides its items and output, under
        its name: the whole conversation when relayed as sent (the items may hold what the
        translation cannot replay), else the history it continued, if any."""
        if self.translation is None:
            return "messages", self.messages(output)
        if self.prior.messages:
            return "history", self.prior.messages
        return None


#: The parameters ResponsesHandler._check reads.
_CHECKED = CHECKED_PARAMS | {"conversation", "metadata"}
#: Parameters the gateway acts on itself and never passes to a provider.
_GATEWAY_ONLY = frozenset({"model", "background", "conversation", "previous_response_id", "stream"})


def _native_usage(answer: Json) -> Usage | None:
    usage = answer.get("usage")
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details") or {}
    return Usage(
        prompt_tokens=int(usage.get("input_tokens") or 0),
        completion_tokens=int(usage.get("output_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
    )


class ResponsesHandler(ProxyHandler):
    endpoint = "responses"
    _detached = False  # a background run owns the log entry and the grant
    #: Set on a WebSocket's turns (api/responses_socket.py): the socket's own responses,
    #: the turn's lane (``stream_id``) and whether it generates (false: a warm-up).
    kept: Kept | None = None
    lane: str | None = None
    generate = True

    @staticmethod
    def upgrade_handler() -> type[tornado.web.RequestHandler]:
        """Serves a WebSocket upgrade of this URL (the WebSocket mode, see
        server/application.py): ``client.responses.connect()``."""
        from .responses_socket import ResponsesSocketHandler  # it imports this module

        return ResponsesSocketHandler

    async def stream_in_background(self, body: Json) -> bool:
        """background with stream: an in-process run whose events are stored, followed
        by this request (api/responses_stream.py). True: answered."""
        from .responses_stream import background_stream  # it imports this module

        await background_stream(self, body)
        return True

    def new_response_id(self) -> str:
        return new_id("resp")

    async def get(self) -> None:
        """A GET that was not routed to the WebSocket mode: a plain GET, or an upgrade
        where the host application does not route upgrades (inside Jupyter)."""
        raise ApiError(
            426,
            "The Responses WebSocket mode needs a WebSocket upgrade, which this server "
            "does not route here; use POST /v1/responses.",
            code="upgrade_required",
            headers={"Upgrade": "websocket"},
        )

    async def post(self) -> None:
        body = self.json_body()
        if body.get("background") and body.get("stream") and await self.stream_in_background(body):
            return  # its run is this same POST, which checks (and logs) what follows
        user = body.get("user") or body.get("safety_identifier")
        # First: the log entry, so that the refusals below are logged, as chat's are.
        route = self.resolve(
            {"model": body.get("model"), "user": user, "stream": body.get("stream")}
        )
        self._check(body)
        if body.get("conversation") is None and body.get("previous_response_id") is None:
            before = Prior()  # nothing to read (prior would find the same)
        else:
            before = await prior(self, body, self.kept)
        try:
            if self.generate or body.get("input") or before.messages:
                translated = to_chat(body, before.messages)
                translation: Translation | None = translated
                problem = None
                items = translated.items
            else:  # a warm-up may bring only instructions and tools: nothing to translate
                translation, problem, items = None, None, []
        except ApiError as exc:
            # Hosted tools, file inputs and other items only OpenAI's own API takes: fine
            # when a provider in this model's plan relays Responses natively.
            if not any(a.native_responses for a in self.ctx.router.adapters(route)):
                raise
            translation, problem, items = None, exc, relayed_items(body.get("input"))
        if type(body.get("input")) is list and body.get("conversation") is not None:
            # The turn's items are added to the conversation after the call: an id it
            # holds already is refused now, before anything is billed or written.
            await check_new_items(self, conversation_id(body["conversation"]), items, "input")
        assert self.entry is not None
        turn = Turn(
            body,
            route,
            self.new_response_id(),
            int(time.time()),
            self.entry["model"],
            items,
            before,
            translation,
            problem,
        )
        if not self.generate:
            await self._prepare(turn)
            return
        if translation is not None:
            await self.admit(translation.chat)
        else:
            await self.admit({"messages": [{"role": "user", "content": str(body.get("input"))}]})
        if body.get("background"):
            await self._start(turn)
        elif body.get("stream"):
            if self.kept is None:
                await self._stream(turn)
            else:  # a WebSocket's turn (always streamed): its id is known from the start
                with self.kept.running(turn.response_id, self.key.id):
                    await self._stream(turn)
        else:
            response, upstream, cost = await self._complete(turn)
            assert self.outcome is not None
            self.answer_headers(self.outcome, cost)
            encoded = dumps(response)  # once, for the answer and the store
            await self._save(turn, response, upstream, encoded)
            self.finish(encoded)

    async def _complete(self, turn: Turn) -> tuple[Json, Json | None, float | None]:
        """Call the backend for the whole answer: the Response, where it was made (for a
        native provider's follow-ups) and its cost."""

        async def call(target: Target, t: Timeouts) -> tuple[Json, Json | None]:
            payload = turn.native_body(target)
            self.name_dropped(turn.dropped(target, payload))
            if payload is not None:
                answer = await target.adapter.responses(payload, target.model, t)
                made = {
                    "provider": target.provider.id,
                    "id": answer.get("id"),
                    "stored": payload.get("store", True) is not False,
                }
                return answer, made
            answer = await target.adapter.chat(turn.chat(), target.model, t)
            if not chat_shape_ok(answer):
                raise ProviderError(
                    "bad_response", "the provider answered with an unexpected shape"
                )
            return answer, None

        (result, upstream), self.outcome = await self.ctx.router.run(turn.route, call)
        reported = result.get("model")
        if upstream is not None:
            usage = _native_usage(result) or Usage(estimated=True)
            response = turn.relabelled(result)
        else:
            assert turn.translation is not None
            usage = self.usage_of(result, turn.translation.chat)
            output, status, incomplete = output_of(result)
            response = turn.response(status, output=output, usage=usage, incomplete=incomplete)
        cost = self.account(usage, self.outcome, reported if isinstance(reported, str) else None)
        return response, upstream, cost

    async def _prepare(self, turn: Turn) -> None:
        """``generate`` false (the WebSocket mode's warm-up): no model call and nothing
        billed; a completed Response with no output and zero usage, kept (stored, or in the
        socket) with its input items so that a follow-up can continue from it. Its log
        entry says so: no provider, zero tokens, no cost."""
        assert self.entry is not None
        # It still writes (the store, a conversation's items): the key's request limits
        # and budgets admit it as any request, reserving no tokens.
        await self.admit({}, prompt_tokens=0, completion_reserve=False)
        self.entry.update(
            prompt_tokens=0, completion_tokens=0, total_tokens=0, cost=0.0, unpriced=False
        )
        events = EventStream(turn.body, turn.response_id, turn.model, turn.created_at)
        frames = events.prepared_frames()
        assert events.final is not None
        await self._save(turn, events.final, None, events.final_encoded)
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(frames)

    # -- background -----------------------------------------------------------------------

    async def _start(self, turn: Turn) -> None:
        """Answer 'queued' at once and run the request after the response has gone."""
        queued = turn.response("queued")
        await self.ctx.store.insert(RESPONSES, self._running_doc(turn, queued))
        self._detached = True
        self.ctx.in_flight.start_run(turn.response_id, self._run(turn))
        self.send_json(queued)

    async def _run(self, turn: Turn) -> None:
        store = self.ctx.store
        assert self.entry is not None
        running = turn.response("in_progress")
        try:
            if (
                await store.update(
                    RESPONSES,
                    turn.response_id,
                    {"status": "in_progress", "response": packed(running)},
                    where={"status": "queued"},
                )
                is None
            ):
                return  # cancelled before it started
            response, upstream, _ = await self._complete(turn)
            await self._record(turn, response)
            await store.update(
                RESPONSES,
                turn.response_id,
                {
                    "status": response["status"],
                    "response": packed(response),
                    "messages": packed(turn.messages(response["output"])),
                    "upstream": upstream,
                },
                where={"status": "in_progress"},
            )
        except asyncio.CancelledError:
            # Either a client's cancel (which recorded 'cancelled' first) or the gateway
            # stopping: then the run failed, and says why.
            self.entry.update(status=499, error_code="cancelled", error_type="cancelled")
            await end_unfinished(
                store, running, "The gateway stopped before this response finished."
            )
            raise
        except ApiError as exc:  # the router turns provider failures into these
            self.entry.update(status=exc.status, error_code=exc.code, error_type=exc.type)
            await end_unfinished(store, running, exc.message, exc.code or exc.type)
        except Exception:
            log.exception("background response %s failed", turn.response_id)
            self.entry.update(status=500, error_code=None, error_type="server_error")
            await end_unfinished(store, running, "The gateway failed while running this response.")
        finally:
            self.done()  # the request log, and the limits it held while it ran

    def on_finish(self) -> None:
        if self._detached:
            # The background run logs and settles this request when it ends.
            ClientHandler.on_finish(self)
        else:
            super().on_finish()

    @staticmethod
    def _check(body: Json) -> None:
        """Refuse what this gateway does not do, before anything is spent."""
        if _CHECKED.isdisjoint(body):
            return  # a plain request: one set test
        check_params(body)  # first: what follows reads booleans
        if body.get("background") and body.get("store") is False:
            raise ApiError(
                400,
                "background responses must be stored: they are read back with GET "
                "/v1/responses/{id}. Send store true, or drop background.",
                param="background",
            )
        if body.get("conversation") is not None and body.get("previous_response_id"):
            raise ApiError(
                400,
                "conversation and previous_response_id cannot be used together: a "
                "conversation already carries its history.",
                param="conversation",
            )
        checked_metadata(body.get("metadata"))

    def _stored(self, turn: Turn, response: Json, encoded: bytes | None = None) -> Json:
        """The stored document of a response (``encoded``: the response as JSON text,
        when the caller has it already)."""
        return {
            "_id": turn.response_id,
            "key": self.key.id,
            # The request's start, as its log entry has it (retention reads this).
            "created_at": self.entry["created_at"] if self.entry else self.ctx.clock.now(),
            "status": response["status"],
            "response": encoded.decode() if encoded is not None else packed(response),
            "items": packed(turn.items),
        }

    def _running_doc(self, turn: Turn, response: Json) -> Json:
        """The stored document of a background response as its run starts: what runs it
        (current() asks whether that still runs) and the conversation so far, which its
        end completes."""
        return {
            **self._stored(turn, response),
            "runner": self.ctx.limiter.instance,
            "messages": packed(turn.messages([])),
        }

    async def _record(self, turn: Turn, response: Json) -> None:
        """Add the turn to its conversation, if it has one."""
        if turn.body.get("conversation") is not None and response["status"] not in _UNRECORDED:
            await append_items(
                self, conversation_id(turn.body["conversation"]), turn.items + response["output"]
            )

    async def _save(
        self, turn: Turn, response: Json, upstream: Json | None, encoded: bytes | None = None
    ) -> None:
        """Keep a response for retrieval and follow-ups, unless the client said not to,
        and add the turn to its conversation. ``encoded``: the response as JSON text, when
        the caller has it already."""
        if response["status"] == "failed":
            return
        await self._record(turn, response)
        replay = turn.replay(response["output"])
        if self.kept is not None:
            # The socket's own copy, read before the store (the only one with store false).
            kept: Json = {
                "key": self.key.id,
                "items": turn.items,
                "response": {"output": response["output"]},
                "upstream": upstream,
            }
            if replay is not None:
                kept[replay[0]] = replay[1]
            self.kept.keep(self.lane, turn.response_id, kept)
        if turn.body.get("store") is False:
            return
        doc = self._stored(turn, response, encoded)
        doc["upstream"] = upstream
        if replay is not None:
            doc[replay[0]] = packed(replay[1])  # what conversation_after replays
        await self.ctx.store.insert(RESPONSES, doc)

    # -- streaming ------------------------------------------------------------------------

    async def _stream(self, turn: Turn) -> None:
        async def open_stream(target: Target, t: Timeouts) -> tuple[ChunkStream, Json | None]:
            payload = turn.native_body(target)
            self.name_dropped(turn.dropped(target, payload))
            if payload is not None:
                opened = await target.adapter.responses_stream(payload, target.model, t)
                made = {
                    "provider": target.provider.id,
                    "id": None,  # known from the stream's first event
                    "stored": payload.get("store", True) is not False,
                }
                return opened, made
            return await target.adapter.chat_stream(turn.chat(), target.model, t), None

        events = EventStream(turn.body, turn.response_id, turn.model, turn.created_at)
        seen: dict[str, Any] = {"usage": None, "reported": None, "chars": 0, "final": None}
        chat = turn.translation.chat if turn.translation is not None else {}
        # The client leaving (a background run: its cancel) while the provider is reached
        # stops that too: nothing is streamed then.
        opened = await self.unless_gone(self.ctx.router.run(turn.route, open_stream))
        if opened is None or self._client_gone:
            usage = Usage()  # nothing was made
            if opened is not None:  # the provider answered as the client left: unread
                (stream, _), self.outcome = opened
                await stream.aclose()
                usage = self._estimate(chat, 0)
                self.account(usage, self.outcome)
                self.gone()
            await self._cut_short(turn, events, seen, None, usage)
            self.end_events()
            return
        (stream, upstream), self.outcome = opened
        outcome = self.outcome
        self.start_events(outcome)

        def relayed(batch: list[Json]) -> list[Json]:
            """A native provider's events, under the gateway's id and model name."""
            assert upstream is not None
            for event in batch:
                answer = event.get("response")
                if isinstance(answer, dict):
                    if upstream["id"] is None:
                        upstream["id"] = answer.get("id")
                    if seen["reported"] is None and isinstance(answer.get("model"), str):
                        seen["reported"] = answer["model"]
                    event["response"] = turn.relabelled(answer)
                    if event.get("type") in _FINAL:
                        seen["final"] = event["response"]
                        seen["usage"] = _native_usage(answer)
                elif event.get("type") == "response.output_text.delta":
                    seen["chars"] += len(str(event.get("delta") or ""))
            if batch and isinstance(last := batch[-1].get("sequence_number"), int):
                seen["seq"] = last  # a failure goes next (_as_background notes its renumbering)
            return _as_background(batch, seen) if background else batch

        background = bool(turn.body.get("background"))

        async def pump() -> None:
            if upstream is None:
                await self._send_frames(events.start_frames())
                # What note_chunk notes of each chunk, the EventStream notes as it
                # translates; and a write awaited only when the client is behind.
                write = self._write_frames
                while (batch := await stream.next_batch()) is not None:
                    frames = events.batch_frames(batch)
                    if frames:
                        behind = write(frames)
                        if behind is not None:
                            await behind
                _noted(seen, events)
                last = events.finish_frames(seen["usage"] or self._estimate(chat, events.chars))
                seen["final"] = events.final
            else:
                while (batch := await stream.next_batch()) is not None:
                    out = relayed(batch)
                    if out:
                        await self.send_named(out)
                last = b""
            await self._end_stream(turn, seen["final"], upstream, events.final_encoded, last)

        def failed(error: ApiError) -> bytes:
            if upstream is not None:
                # The relayed events were numbered by the provider: the failure goes next.
                events.sequence = seen.get("seq", -1) + 1
            return named_events([events.fail(error.code or error.type, error.message)])

        await self.pump_events(stream, outcome, pump(), failed)
        if upstream is None:
            _noted(seen, events)  # the client may have left before the end
        usage = seen["usage"] or self._estimate(chat, seen["chars"])
        self.account(usage, outcome, seen["reported"])
        if seen["final"] is None:  # the client left, or the provider failed part way
            await self._cut_short(turn, events, seen, upstream, usage)
        self.end_events()

    async def _cut_short(
        self, turn: Turn, events: EventStream, seen: Json, upstream: Json | None, usage: Usage
    ) -> None:
        """A stream that ended before its Response: nothing to keep here (a failed
        response is not stored, and a client that left reads nothing more)."""

    async def _send_frames(self, frames: bytes) -> None:
        behind = self._write_frames(frames)
        if behind is not None:
            await behind

    async def _end_stream(
        self,
        turn: Turn,
        final: Json | None,
        upstream: Json | None,
        encoded: bytes | None,
        last: bytes,
    ) -> None:
        """Store the Response, then send the stream's last events: a client that has
        read response.completed can read the Response back at once."""
        if final is not None:
            await self._save(turn, final, upstream, encoded)
        if last:
            await self._send_frames(last)

    @staticmethod
    def _estimate(chat: Json, chars: int) -> Usage:
        return Usage(estimate_tokens(prompt_text(chat)), math.ceil(chars / 4), estimated=True)


_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _as_background(batch: list[Json], seen: Json) -> list[Json]:
    """A native provider's events for a background run (the provider runs it in the
    foreground): created queued and said queued, as the translated stream's are, the
    numbers after response.created one up; and what a cancel's end needs noted in
    ``seen``: the last number, the latest Response and the finished output items."""
    out = []
    for event in batch:
        seq = event.get("sequence_number")
        if isinstance(seq, int) and event.get("type") != "response.created":
            event["sequence_number"] = seen["seq"] = seq + 1
        answer = event.get("response")
        if isinstance(answer, dict):
            seen["latest"] = answer
            if event.get("type") == "response.created":
                queued = {**answer, "status": "queued"}
                out.append({**event, "response": queued})
                seen["seq"] = (seq if isinstance(seq, int) else 0) + 1
                event = {
                    "type": "response.queued",
                    "sequence_number": seen["seq"],
                    "response": queued,
                }
        elif event.get("type") == "response.output_item.done" and isinstance(
            event.get("item"), dict
        ):
            seen.setdefault("items", []).append(event["item"])
        out.append(event)
    return out


def _noted(seen: dict[str, Any], events: EventStream) -> None:
    """What a translated stream's EventStream noted, where a relayed stream's is kept."""
    seen.update(chars=events.chars, reported=events.reported, usage=events.usage)


class ResponseHandler(Owned):
    async def get(self, response_id: str) -> None:
        doc = await self.owned(response_id)
        if self.bool_arg("stream"):
            # A streamed background response's events, from after starting_after on.
            from .responses_stream import follow_stored  # it imports this module

            await follow_stored(self, doc)
            return
        self.send_json(doc["response"])

    async def delete(self, response_id: str) -> None:
        await self.owned(response_id)
        await self.ctx.store.delete(RESPONSES, response_id)
        self.send_json({"id": response_id, "object": "response", "deleted": True})


class ResponseCancelHandler(Owned):
    async def post(self, response_id: str) -> None:
        doc = await self.owned(response_id)
        if not doc["response"].get("background"):
            raise ApiError(
                400,
                "Only responses created with background=true can be cancelled.",
                param="response_id",
                code="invalid_request",
            )
        run = self.ctx.in_flight.runs.get(response_id)
        if doc["status"] in UNFINISHED and doc.get("events") and run is not None:
            from .responses_stream import cancel_streamed  # it imports this module

            # A streamed run here ends its stream and stores the Response, cancelled,
            # with what it made: what this answers.
            if await cancel_streamed(response_id, run):
                doc = unpacked(await self.ctx.store.get(RESPONSES, response_id) or doc)
        if doc["status"] in UNFINISHED:
            cancelled = {**doc["response"], "status": "cancelled"}
            done = await self.ctx.store.update(
                RESPONSES,
                response_id,
                {"status": "cancelled", "response": packed(cancelled)},
                where={"status": {"$in": list(UNFINISHED)}},
            )
            if run is not None:
                run.cancel()  # it stops reading upstream; what it used is still billed
            # A run on another gateway sees 'cancelled' when it ends and keeps it.
            doc = unpacked(done or await self.ctx.store.get(RESPONSES, response_id) or doc)
        self.send_json(doc["response"])


class InputItemsHandler(Owned):
    async def get(self, response_id: str) -> None:
        doc = await self.owned(response_id)
        limit = self.int_arg("limit", 20, 1, 100)
        order = self.get_query_argument("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, "order must be 'asc' or 'desc'.", param="order")
        items: list[Json] = list(doc.get("items") or [])
        if order == "desc":
            items.reverse()
        after = self.get_query_argument("after", None)
        if after is not None:
            ids = [item.get("id") for item in items]
            if after not in ids:
                raise ApiError(400, f"No input item with id '{after}'.", param="after")
            items = items[ids.index(after) + 1 :]
        page = items[:limit]
        self.send_json(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            }
        )


class InputTokensHandler(ClientHandler):
    """POST /v1/responses/input_tokens: what the input would count, without a call.

    Backends count tokens their own way and chat backends have no counting endpoint, so
    this is the gateway's estimate (the same one its limits reserve with)."""

    async def post(self) -> None:
        body = self.json_body()
        ResponsesHandler._check(body)  # what POST /v1/responses would refuse
        if body.get("model") is None:
            body["model"] = ""  # optional here: the estimate is the same for every model
        else:
            resolve_model(self.ctx, self.key, model_name(body["model"]))
        history = (await prior(self, body)).messages
        chat = to_chat(body, history).chat
        self.send_json(
            {"object": "response.input_tokens", "input_tokens": estimate_tokens(prompt_text(chat))}
        )
