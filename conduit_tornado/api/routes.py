"""The route table and the Tornado application. Jupyter mounts the same routes."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import tornado.web

from conduit_tornado.context import Context
from conduit_tornado.core.scrub import scrub_uri
from conduit_tornado.server.application import GatewayApplication
from conduit_tornado.ui.handlers import ui_routes
from conduit_tornado.ui.sessions import UiSessions

from . import (
    admin,
    admin_health,
    admin_limits,
    admin_usage,
    classify,
    conversations,
    health,
    inference,
    media,
    messages,
    metrics,
    models,
    openapi,
    realtime,
    responses,
    root,
)
from .base import BaseHandler, NotFoundHandler

if TYPE_CHECKING:
    from conduit_tornado.hub.identity import Hub

Route = tuple[str, type[tornado.web.RequestHandler]]


def routes(prefix: str = "/", *, catch_all: bool = False) -> list[Route]:
    """Every route of the gateway, under ``prefix`` (``/`` standalone, ``/conduit`` in
    Jupyter). ``catch_all`` answers unknown paths under the prefix with our JSON 404, for
    mounts inside an application whose own 404 is an HTML page."""
    p = prefix.rstrip("/")
    table: list[Route] = [
        # Tornado tries patterns in order: the busiest routes come first.
        (p + r"/v1/chat/completions", inference.ChatCompletionsHandler),
        (p + r"/v1/completions", inference.CompletionsHandler),
        (p + r"/v1/embeddings", inference.EmbeddingsHandler),
        (p + r"/v1/responses", responses.ResponsesHandler),
        (p + r"/v1/responses/input_tokens", responses.InputTokensHandler),
        (p + r"/v1/responses/([^/]+)/input_items", responses.InputItemsHandler),
        (p + r"/v1/responses/([^/]+)/cancel", responses.ResponseCancelHandler),
        (p + r"/v1/responses/([^/]+)", responses.ResponseHandler),
        (p + r"/v1/moderations", classify.ModerationsHandler),
        (p + r"/v1/rerank", classify.RerankHandler),
        (p + r"/v1/messages", messages.MessagesHandler),
        (p + r"/v1/messages/count_tokens", messages.CountTokensHandler),
        (p + r"/v1/conversations", conversations.ConversationsHandler),
        (p + r"/v1/conversations/([^/]+)/items", conversations.ConversationItemsHandler),
        (p + r"/v1/conversations/([^/]+)/items/([^/]+)", conversations.ConversationItemHandler),
        (p + r"/v1/conversations/([^/]+)", conversations.ConversationHandler),
        (p + r"/health/live", health.LiveHandler),
        (p + r"/health/ready", health.ReadyHandler),
        (p + r"/openapi\.json", openapi.OpenApiHandler),
        (p + r"/v1/models", models.ModelListHandler),
        (p + r"/v1/models/(.+)", models.ModelHandler),
        (p + r"/v1/images/generations", media.ImagesHandler),
        (p + r"/v1/images/edits", media.ImageEditHandler),
        (p + r"/v1/images/variations", media.ImageVariationHandler),
        (p + r"/v1/audio/transcriptions", media.TranscriptionHandler),
        (p + r"/v1/audio/translations", media.TranslationHandler),
        (p + r"/v1/audio/speech", media.SpeechHandler),
        (p + r"/v1/audio/speech/stream", media.SpeechStreamHandler),
        (p + r"/v1/realtime/client_secrets", realtime.RealtimeClientSecretsHandler),
        (p + r"/v1/realtime/calls", realtime.RealtimeCallsHandler),
        (p + r"/v1/realtime/calls/([^/]+)/hangup", realtime.RealtimeCallHangupHandler),
        (p + r"/v1/realtime/sessions", realtime.RealtimeSessionsHandler),
        (p + r"/v1/realtime/sessions/([^/]+)/ws", realtime.RealtimeSocketHandler),
        (p + r"/v1/realtime", realtime.RealtimeSocketHandler),
        (p + r"/admin/v1/keys", admin.KeysHandler),
        (p + r"/admin/v1/keys/([^/]+)/rotate", admin.KeyRotateHandler),
        (p + r"/admin/v1/keys/([^/]+)/spend", admin_limits.KeySpendHandler),
        (p + r"/admin/v1/keys/([^/]+)", admin.KeyHandler),
        (p + r"/admin/v1/providers", admin.ProvidersHandler),
        (p + r"/admin/v1/providers/(.+)", admin.ProviderHandler),
        (p + r"/admin/v1/models", admin.ModelsAdminHandler),
        (p + r"/admin/v1/models/(.+)", admin.ModelAdminHandler),
        (p + r"/admin/v1/groups", admin_limits.GroupsHandler),
        (p + r"/admin/v1/groups/([^/]+)/spend", admin_limits.GroupSpendHandler),
        (p + r"/admin/v1/groups/([^/]+)", admin_limits.GroupHandler),
        (p + r"/admin/v1/alerts", admin_limits.AlertsHandler),
        (p + r"/admin/v1/logs", admin_usage.LogsHandler),
        (p + r"/admin/v1/usage", admin_usage.UsageHandler),
        (p + r"/admin/v1/metrics", admin_usage.MetricsHandler),
        (p + r"/admin/v1/health/deployments", admin_health.DeploymentHealthHandler),
        (p + r"/metrics", metrics.PrometheusHandler),
        (p + r"/", root.RootHandler),  # a browser to /ui/, an API client to a JSON map
    ]
    table += ui_routes(p)  # the web UI (conduit_tornado/ui/)
    if catch_all:
        table.append((p + r"(?:/.*)?", NotFoundHandler))
    return table


def app_settings(ctx: Context) -> dict[str, Any]:
    """Tornado application settings the gateway needs (also given to Jupyter's app, so
    nothing here may change how Jupyter's own handlers behave)."""
    return {"conduit": ctx, "conduit_ui": UiSessions(ctx)}


access_log = logging.getLogger("tornado.access")


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log line, with credentials in query strings redacted (browsers
    may authenticate the realtime socket with ?token=; the hub's OAuth sends ?code=). The
    gateway's own handlers write theirs to conduit.access instead (api/observe.py): one
    line a request."""
    if isinstance(handler, BaseHandler):
        return
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if not access_log.isEnabledFor(level):
        return
    request = handler.request
    uri = scrub_uri(request.uri or "")
    access_log.log(
        level,
        "%d %s %s (%s) %.2fms",
        status,
        request.method,
        uri,
        request.remote_ip,
        1000.0 * request.request_time(),
    )


def make_metrics_app(ctx: Context) -> tornado.web.Application:
    """The application of CONDUIT_METRICS_PORT's listener: /metrics and nothing else."""
    return GatewayApplication(
        [(r"/metrics", metrics.PrometheusHandler)],
        default_handler_class=NotFoundHandler,
        log_function=log_request,
        conduit=ctx,
        **{metrics.METRICS_LISTENER: True},
    )


def mount_prefix(settings: Any, env: Mapping[str, str] = os.environ) -> str:
    """Where the standalone server serves every route: CONDUIT_BASE_PATH, else as a
    JupyterHub service the prefix the hub's proxy forwards unchanged
    (JUPYTERHUB_SERVICE_PREFIX; single-user servers have one too, but no service name).
    '/' or a path without a trailing slash."""
    path: str = settings.base_path or ""
    if not path and env.get("JUPYTERHUB_SERVICE_NAME"):
        path = env.get("JUPYTERHUB_SERVICE_PREFIX", "")
    return "/" + path.strip("/") if path.strip("/") else "/"


def app_routes(escaped: str = "", *, hub: bool = False) -> list[tuple[str, type[Any]]]:
    """The table as mounted: in hub mode the hub's routes first, and the hub's home page
    takes the bare address (our root, a redirect to /ui/, steps aside: literal patterns are
    dispatched before regexes, so both mounted would hide the hub's)."""
    table = routes(escaped)
    if not hub:
        return table
    from conduit_tornado.hub.handlers import hub_routes

    return hub_routes(escaped.rstrip("/")) + [r for r in table if r[1] is not root.RootHandler]


def make_app(ctx: Context, *, hub: Hub | None = None, **extra: Any) -> tornado.web.Application:
    prefix = mount_prefix(ctx.settings)
    # Patterns are regexes: a prefix such as /a.b must match only itself.
    escaped = re.escape(prefix) if prefix != "/" else prefix
    table = app_routes(escaped, hub=hub is not None)
    settings = app_settings(ctx)
    if hub is not None:
        settings.update(hub.app_settings())
    return GatewayApplication(
        table,
        default_handler_class=NotFoundHandler,
        compress_response=False,  # SSE must not be buffered by a compressor
        log_function=log_request,
        **settings,
        **extra,
    )
