"""The one handler base: request ids, body limits, JSON in and out, auth, the error envelope.

Every route is one of three kinds, and a test walks the route table to prove it:
``PublicHandler`` (health), ``ClientHandler`` (virtual key) or ``AdminHandler`` (master key).
"""

from __future__ import annotations

import email.utils
import functools
import http
import logging
import re
import time
from asyncio import Future
from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
import tornado.httputil
import tornado.web
from pydantic import BaseModel, ValidationError
from tornado.http1connection import HTTP1Connection

from conduit_tornado.admission.keys import VirtualKey
from conduit_tornado.context import Context
from conduit_tornado.core import meters, via
from conduit_tornado.core.errors import (
    ApiError,
    default_type,
    error_envelope,
    invalid_api_key,
    store_unavailable,
)
from conduit_tornado.core.ids import IdSequence
from conduit_tornado.core.schemas import MAX_STORED_DEPTH, unstorable
from conduit_tornado.core.settings import MIB
from conduit_tornado.core.validation import first_problem
from conduit_tornado.routing.catalog import ModelRoute
from conduit_tornado.server import tornado_private
from conduit_tornado.server.http import Exchange
from conduit_tornado.store import StoreUnavailable

from .observe import request_done

log = logging.getLogger("conduit.http")
M = TypeVar("M", bound=BaseModel)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_REASONS = {
    404: "Not found.",
    405: "Method not allowed.",
    413: "Request body too large.",
}


new_request_id = IdSequence("req_")


def http_date() -> str:
    """The Date header's value, formatted once per second."""
    return _formatted_date(int(time.time()))


@functools.lru_cache(maxsize=2)
def _formatted_date(second: int) -> str:
    return email.utils.formatdate(second, usegmt=True)


def reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


def bearer_token(handler: tornado.web.RequestHandler) -> str | None:
    header = handler.request.headers.get("Authorization")
    if header:
        scheme, _, token = header.partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None
    return handler.request.headers.get("api-key") or None  # Azure OpenAI clients send this.


class ApiResponses(tornado.web.RequestHandler):
    """Request ids, JSON defaults and OpenAI's error envelope: shared by every handler,
    the WebSocket ones included (which cannot take BaseHandler's streamed bodies)."""

    _request_id: str | None = None

    @property
    def request_id(self) -> str:
        if self._request_id is None:
            given = self.request.headers.get("x-request-id", "")
            self._request_id = given if _REQUEST_ID.match(given) else new_request_id()
        return self._request_id

    def clear(self) -> None:
        """Tornado's clear(), minus its per-request cost: it formats the Date header with
        email.utils every time and sets a Server header we would remove. Date and
        x-request-id go through ``_own_headers`` (see BaseHandler.put_headers); handlers
        whose responses Tornado writes itself (WebSockets) merge them in at once."""
        tornado_private.reset_response(
            self, tornado.httputil.HTTPHeaders({"Content-Type": "application/json"})
        )
        self._own_headers: dict[str, str] = {"Date": http_date(), "x-request-id": self.request_id}
        if self.merges_own_headers:
            self._merge_own_headers()

    #: Whether every response goes through Tornado's own flush (which writes only
    #: ``_headers``): true here, false for BaseHandler, whose flush writes both.
    merges_own_headers = True

    def _merge_own_headers(self) -> None:
        """Into Tornado's headers, for code that writes only those (Tornado's own
        connection inside Jupyter, output transforms, WebSocket handshakes)."""
        own, self._own_headers = self._own_headers, {}
        for name, value in own.items():
            self._headers[name] = value

    def refuse_loops(self) -> None:
        """Take the request's Via chain into this request's context (upstream calls
        extend it) and refuse a request that has been through this gateway already: a
        provider whose base_url leads back here would otherwise call itself forever.
        Runs before any auth or store work, so a loop costs one cheap answer per hop."""
        hops = self.request.headers.get_list("Via")  # no KeyError raised when absent
        if not hops:
            # Nothing to set: every request runs in a task of its own, whose context
            # starts without a chain (the server's code never sets one).
            return
        chain = ", ".join(hops)
        via.received.set(chain)
        if via.loops(chain):
            raise ApiError(
                508,
                "Request loop detected: this request has already passed through this "
                "gateway (check that no provider's base_url points back at it).",
                code="loop_detected",
            )

    def compute_etag(self) -> None:
        return None  # API responses are not cacheable; hashing every body is wasted CPU

    def check_xsrf_cookie(self) -> None:
        """Called only where the application enables XSRF (Jupyter). A request that
        authenticates with a header cannot be forged by a third-party page, so only
        cookie-authenticated requests need the token."""
        if bearer_token(self) is None:
            super().check_xsrf_cookie()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            self.error_headers(exc)
            body = exc.envelope()
        elif status_code >= 500:
            body = error_envelope(
                f"The server had an error processing your request (request id {self.request_id}).",
                default_type(status_code),
            )
        else:
            message = _REASONS.get(status_code, reason_phrase(status_code))
            body = error_envelope(message, default_type(status_code))
        self.set_header("Content-Type", "application/json")
        self.finish(dumps(body))

    def error_headers(self, exc: ApiError) -> None:
        """An error's own headers, spelt as given (x-conduit-*, x-ratelimit-* lowercase,
        as on answers): beside Tornado's headers, which would capitalise them."""
        self._own_headers.update(exc.headers)
        if self.merges_own_headers:
            self._merge_own_headers()

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        if isinstance(kwargs.get("exc_info", (None, None, None))[1], StoreUnavailable):
            error = store_unavailable()  # an outage, not a bug: 503, which clients retry
            kwargs["exc_info"] = (ApiError, error, None)
            status_code = error.status
        super().send_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, tornado.web.HTTPError):
            return  # client errors are answered, not logged as crashes
        if isinstance(value, StoreUnavailable):
            log.warning("request %s: %s", self.request_id, value)  # the outage, in a line
            return
        log.error("request %s failed", self.request_id, exc_info=(typ, value, tb))


@tornado.web.stream_request_body
class BaseHandler(ApiResponses):
    """Reads bodies in chunks so the size limit is enforced before a byte is buffered."""

    max_body_setting = "max_request_bytes"
    _allowed: tuple[str, ...]
    # Whether the body may be handed over before prepare() has run: true while the class
    # keeps this base's data_received, which only buffers (server/application.py uses it).
    body_before_prepare = True
    merges_own_headers = False
    metric_route = "base"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.body_before_prepare = cls.data_received is BaseHandler.data_received
        # The route label of this handler's requests in the metrics (ProxyHandler: its
        # endpoint): "module.Class", bounded by the route table; a class may name its own
        # (to keep its label when it moves to another module).
        if "metric_route" not in cls.__dict__:
            route = cls.__module__.rsplit(".", 1)[-1] + "." + cls.__name__.removesuffix("Handler")
            cls.metric_route = getattr(cls, "endpoint", "") or route

    # Tornado's RequestHandler.__init__, finish and flush, minus what these handlers never
    # use: the per-request template namespace (UI modules), ETag hashing, output transforms
    # and cookies. Anything unusual (a transform such as Jupyter's compression, HEAD, a
    # status without a body, a cookie) takes Tornado's own code. With the direct dispatch
    # in server/application.py this is a measurable share of a trivial request's CPU
    # (bench/ measures it).

    def __init__(
        self,
        application: tornado.web.Application,
        request: tornado.httputil.HTTPServerRequest,
        **kwargs: Any,
    ) -> None:
        tornado_private.lean_init(self, application, request)
        self.clear()
        request.connection.set_close_callback(self.on_connection_close)  # type: ignore[union-attr]
        self.initialize(**kwargs)

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> Future[None]:
        done = tornado_private.lean_finish(self, chunk)
        return super().finish(chunk) if done is None else done

    def put_headers(self, headers: Mapping[str, str]) -> None:
        """Set headers the gateway composes itself (x-ratelimit-*, x-conduit-*; names no
        other code sets), kept in a plain dict beside Tornado's HTTPHeaders: a dozen of
        them through HTTPHeaders are a visible share of a chat request's instructions.
        Both HTTP servers refuse CR or LF in any header when writing it out."""
        self._own_headers.update(headers)

    def flush(self, include_footers: bool = False) -> Future[None]:
        done = tornado_private.lean_flush(self, self._own_headers)
        if done is None:
            self._merge_own_headers()
            return super().flush(include_footers)
        return done

    def initialize(self) -> None:
        self.ctx: Context = self.application.settings["conduit"]
        # From the parsed request head where our server can say, so the overhead figures
        # include routing and setting up the handler.
        connection = self.request.connection
        self.started = (
            connection.started if isinstance(connection, Exchange) else time.perf_counter()
        )
        self._chunks: list[bytes] = []
        self._received = 0
        self._counted = False
        self._done = False
        traces = self.ctx.tracing  # None unless tracing is on: then this is all it costs
        self.trace = (
            None
            if traces is None
            else traces.start_request(
                self.request.method or "", self.request.path, self.request.headers, self.started
            )
        )

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def body_limit(self) -> int:
        limit: int = getattr(self.ctx.settings, self.max_body_setting)
        return limit

    @classmethod
    def allowed_methods(cls) -> tuple[str, ...]:
        """The methods this class implements (cached per class: it is asked every request)."""
        cached: tuple[str, ...] | None = cls.__dict__.get("_allowed")
        if cached is None:
            base = tornado.web.RequestHandler
            cached = tuple(
                m
                for m in ("GET", "POST", "PATCH", "PUT", "DELETE")
                if getattr(cls, m.lower()) is not getattr(base, m.lower())
            )
            cls._allowed = cached
        return cached

    async def prepare(self) -> None:
        if self.trace is not None:
            self.trace.enter()  # this request's task: routing and the store see its span
        allowed = self.allowed_methods()
        if self.request.method not in allowed:  # before auth: a wrong method is not a 401
            raise ApiError(
                405,
                f"Method {self.request.method} is not allowed on {self.request.path}.",
                headers={"Allow": ", ".join(allowed)},
            )
        self.refuse_loops()
        self.ctx.in_flight.request_started()
        self._counted = True
        # A body over the limit is answered 413 once it has been read and discarded (see
        # data_received): answering while the client still sends makes it see a reset,
        # not our error. Only a body beyond the hard cap is refused at once (clients that
        # send Expect: 100-continue get that answer before sending anything).
        hard_cap = 2 * self.body_limit + MIB
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > hard_cap:
            raise ApiError(
                413,
                self.too_large_message(),
                code="request_too_large",
            )
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection | Exchange):
            connection.set_max_body_size(hard_cap)
        await self.authenticate()

    def too_large_message(self, what: str = "Request body") -> str:
        setting = "CONDUIT_" + self.max_body_setting.upper()
        return f"{what} too large: the limit is {self.body_limit} bytes (set by {setting})."

    async def authenticate(self) -> None:
        raise NotImplementedError  # every route must choose; see the subclasses below

    def data_received(self, chunk: bytes) -> None:
        # Chunked uploads declare no length: count, and stop buffering past the limit.
        # Raising here would drop the connection instead of answering.
        self._received += len(chunk)
        if self._received <= self.body_limit:
            self._chunks.append(chunk)
        else:
            self._chunks.clear()

    @property
    def body(self) -> bytes:
        if self._received > self.body_limit:
            raise ApiError(
                413,
                self.too_large_message(),
                code="request_too_large",
            )
        if len(self._chunks) > 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0] if self._chunks else b""

    def on_finish(self) -> None:
        self._release()
        self.request_done(None)

    def request_done(self, entry: Mapping[str, Any] | None) -> None:
        """End the request's span and write its access line, once (api/observe.py)."""
        if not self._done:
            self._done = True
            request_done(self, entry)

    def on_connection_close(self) -> None:
        self._release()
        super().on_connection_close()  # fails a body still awaited, so the handler ends

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.ctx.in_flight.request_ended()
            self.meter()

    def meter(self) -> None:
        """Count the finished request in the metrics (ProxyHandler: from its log entry)."""
        meters.request_finished(
            self.metric_route, "", "", self.get_status(), time.perf_counter() - self.started
        )

    # -- input ----------------------------------------------------------------------------

    def json_body(self) -> dict[str, Any]:
        raw = self.body
        if not raw.strip():
            raise ApiError(400, "The request body is empty; a JSON object is expected.")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly.)",
            ) from exc
        if not isinstance(data, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        if too_deep(raw, data):
            raise ApiError(400, TOO_DEEP, param=too_deep_field(data))
        return data

    def parse(self, model: type[M]) -> M:
        return validate(model, self.json_body())

    def int_arg(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, f"{name} must be an integer.", param=name) from None
        if not low <= value <= high:
            raise ApiError(400, f"{name} must be between {low} and {high}.", param=name)
        return value

    def bool_arg(self, name: str) -> bool | None:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return None
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise ApiError(400, f"{name} must be true or false.", param=name)

    # -- output ---------------------------------------------------------------------------

    def send_json(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(dumps(obj))


class PublicHandler(BaseHandler):
    """Explicitly unauthenticated (health checks)."""

    async def authenticate(self) -> None:
        return None


class ClientHandler(BaseHandler):
    """Routes under /v1: a virtual key is required."""

    key: VirtualKey

    async def authenticate(self) -> None:
        self.key = await self.ctx.keys.authenticate(bearer_token(self))
        if not self.key.allows_ip(self.request.remote_ip or ""):
            raise ApiError(
                403,
                "Requests from this address are not allowed for this key.",
                code="ip_not_allowed",
            )


#: Deepest nesting of objects and arrays in a request body. The body is encoded again
#: after it is read (to the provider, and into the stored Response that echoes it a few
#: levels down), and orjson encodes at most 255 levels: a deeper body would fail there,
#: after the provider was paid, where orjson reads up to 1,024.
MAX_BODY_DEPTH = 240
TOO_DEEP = (
    f"The request body is nested too deeply: at most {MAX_BODY_DEPTH} levels of objects and arrays."
)


def too_deep(raw: str | bytes, data: Any) -> bool:
    """Whether parsed JSON nests deeper than MAX_BODY_DEPTH."""
    if isinstance(raw, str):
        brackets = raw.count("{") + raw.count("[")
    else:
        brackets = raw.count(b"{") + raw.count(b"[")
    # Most bodies: two counts. The others: one encode, orjson's own limit moved up.
    return brackets > MAX_BODY_DEPTH and not _within(data, MAX_BODY_DEPTH)


def too_deep_field(data: dict[str, Any]) -> str | None:
    """The first field of a body too deep (too_deep) that holds the deepest part."""
    return next((k for k, v in data.items() if not _within(v, MAX_BODY_DEPTH - 1)), None)


def _within(value: Any, depth: int) -> bool:
    for _ in range(255 - depth):
        value = [value]  # orjson writes at most 255 levels: these leave ``depth`` of them
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False
    return True


class AdminHandler(BaseHandler):
    """Routes under /admin/v1: the master key. A virtual key gets 401.

    A host application may also admit its own logged-in users: the Jupyter extension puts
    an async ``conduit_admin_user(handler) -> bool`` in the application settings."""

    max_body_setting = "max_admin_request_bytes"

    def parse(self, model: type[M]) -> M:
        """Admin bodies are stored: besides the model's own checks, nothing in them may
        be what a store cannot hold and serve back (deep nesting, integers past 64 bits,
        NUL in keys). Field validators name the field where they can; this catches the
        rest (keys of free-form maps such as pricing or model_limits)."""
        data = self.json_body()
        parsed = validate(model, data)
        problem = unstorable(data, MAX_STORED_DEPTH + 4)
        if problem is not None:
            raise ApiError(
                400, f"The request body cannot be stored: {problem}.", code="invalid_value"
            )
        return parsed

    async def authenticate(self) -> None:
        token = bearer_token(self)
        if self.ctx.is_master_key(token):
            return
        ui = self.settings.get("conduit_ui")  # the web UI's sessions (conduit_tornado/ui/)
        if token is None and ui is not None and await ui.admits(self):
            return  # a signed-in browser; admits() checks its CSRF token on unsafe methods
        host_check = self.settings.get("conduit_admin_user")
        if token is None and host_check is not None and await host_check(self):
            return  # cookie session: check_xsrf_cookie has already run for unsafe methods
        raise invalid_api_key("A valid master key is required for the admin API.")


class NotFoundHandler(PublicHandler):
    """Unknown paths: the OpenAI-style 404 for every method, without touching the body."""

    async def prepare(self) -> None:
        raise ApiError(
            404,
            f"Unknown request URL: {self.request.method} {self.request.path}.",
            code="unknown_url",
        )


def validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problem = first_problem(exc, model)  # in words (core/validation.py)
        param = problem.param
        if problem.unknown_field:
            message = f"Unrecognized request argument supplied: {param}"
        else:
            message = problem.message
        raise ApiError(400, message, param=param, code="invalid_value") from None


MAX_MODEL_NAME = 256  # names are at most 200 characters (schemas.NAME_RE)


def model_name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ApiError(
            400, "You must provide a model parameter.", param="model", code="missing_model"
        )
    if len(value) > MAX_MODEL_NAME:  # no such model; and it would be logged whole
        raise ApiError(
            400,
            f"model is limited to {MAX_MODEL_NAME} characters.",
            param="model",
            code="string_above_max_length",
        )
    return value


def resolve_model(ctx: Context, key: VirtualKey, model: str) -> ModelRoute:
    """The route for a model the key may use: 404 if there is none, 403 if not allowed."""
    route = ctx.catalog.models.get(model)
    if route is None or not route.enabled:
        raise ApiError(
            404,
            f"The model '{model}' does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    if not key.allows_model(model):
        raise ApiError(
            403,
            f"This key is not allowed to use the model {model!r}.",
            code="model_not_allowed",
            param="model",
        )
    return route
