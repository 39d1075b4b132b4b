"""Every setting the gateway reads, declared once with its description.

Values come from ``CONDUIT_*`` environment variables; the CLI may override a few.
``conduit-tornado settings`` prints this table as Markdown (docs/settings.md is generated
from it, and a test keeps the two equal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONDUIT_", extra="ignore", env_ignore_empty=True)

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 in containers).")
    port: int = Field(5000, ge=0, le=65535, description="TCP port to listen on.")
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        1,
        description="Worker processes of `serve`, all on the one port, each with its own "
        "event loop: a number, or auto for one per core this process may run on. Above 1 a "
        "supervisor starts them, restarts one that dies and drains them all on SIGTERM; "
        "the store must be shared (local or MongoDB).",
    )
    worker_affinity: bool = Field(
        False,
        description="With workers above 1 on Linux, hold each worker (all its threads) to "
        "one of the cores this process may run on, in turn: fewer migrations and "
        "cross-core wake-ups. Leave off when other busy processes share those cores, as a "
        "held worker cannot move away from them.",
    )
    tls_cert: Path | None = Field(
        None,
        description="PEM certificate chain to serve HTTPS and WSS directly (with "
        "CONDUIT_TLS_KEY). Unset: plain HTTP, e.g. behind a proxy that terminates TLS.",
    )
    tls_key: Path | None = Field(
        None, description="PEM private key of CONDUIT_TLS_CERT (not passphrase-protected)."
    )
    config: Path | None = Field(
        None, description="Optional YAML or TOML file declaring providers and model mappings."
    )
    store: Literal["auto", "local", "memory", "mongodb"] = Field(
        "auto",
        description="Where keys, providers, usage and logs live. auto: MongoDB when "
        "CONDUIT_MONGODB_URI is set, else local; local: a SQLite file in CONDUIT_DATA_DIR; "
        "memory: in-process, lost at exit (tests, throwaway runs).",
    )
    data_dir: Path | None = Field(
        None,
        description="Directory of the local store (conduit.sqlite3) and of its generated "
        "secret key. Unset: the user's data directory (~/.local/share/conduit-tornado on Linux).",
    )
    local_log_limit: int = Field(
        1_000_000,
        ge=100,
        description="Request logs the local store keeps at most (the newest), within "
        "CONDUIT_LOG_RETENTION_DAYS.",
    )
    mongodb_uri: SecretStr | None = Field(
        None,
        description="MongoDB connection string. Set: MongoDB is the store (see CONDUIT_STORE).",
    )
    mongodb_database: str = Field("conduit", description="MongoDB database name.")
    mongodb_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds a MongoDB operation may take, finding the server included. "
        "Past it, a request that needs the store is answered 503 (store_unavailable) and "
        "background writes are retried later.",
    )
    master_key: SecretStr | None = Field(
        None,
        description="Admin API key. Unset: generated at first start, printed once, and on "
        "a persistent store (local or MongoDB) only its hash is kept.",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Secret that encrypts provider credentials at rest. Set it whenever "
        "MongoDB is used, or stored credentials cannot be read after a restart. Unset with "
        "the local store: one is generated and kept beside it (secret.key, mode 0600).",
    )
    max_request_bytes: int = Field(
        16 * MIB, ge=1024, description="Largest JSON request body accepted (413 beyond)."
    )
    max_audio_bytes: int = Field(
        25 * MIB,
        ge=1024,
        description="Largest multipart upload accepted: audio for transcription, images for "
        "edits and variations (413 beyond).",
    )
    max_admin_request_bytes: int = Field(
        1 * MIB, ge=1024, description="Largest admin API request body accepted (413 beyond)."
    )
    ui_session_hours: float = Field(
        12.0,
        gt=0,
        le=24 * 30,
        description="Hours a web UI sign-in lasts (/ui/); signing out or a new master key "
        "ends it sooner.",
    )
    key_cache_ttl: float = Field(
        10.0,
        ge=0,
        description="Seconds a virtual key lookup is cached per instance. Changes made "
        "through this instance apply at once, through another within CONDUIT_CHANGE_POLL "
        "(the change feed); this expiry is the backstop should a change notice be lost.",
    )
    spend_cache_ttl: float = Field(
        1.0,
        ge=0,
        description="Seconds a key's, group's or end user's current spend is cached per "
        "instance for budget checks. This instance's own charges count at once (as soon as "
        "a response's cost is known, before the batched write); other instances' within "
        "this time. 0 reads the spend from the store on every request.",
    )
    catalog_refresh: float = Field(
        10.0,
        ge=0.5,
        description="Seconds between reloads of providers and model mappings from the store "
        "(a backstop: changes made through another instance arrive within "
        "CONDUIT_CHANGE_POLL through the change feed).",
    )
    change_poll: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Seconds between reads of the change counters: how soon an admin change "
        "made on another instance (a key disabled, a mapping changed) applies here. On a "
        "MongoDB replica set a change stream applies it at once; this stays the fallback.",
    )
    instance_ttl: float = Field(
        300.0,
        ge=60,
        description="Seconds after an instance's last heartbeat when a live instance prunes "
        "what the store keeps for it (settled.<instance>, by.<instance>). An instance cut "
        "off from the store this long forgets writes whose outcome it never learned.",
    )
    health_check_interval: float = Field(
        0.0,
        ge=0,
        description="Seconds between active health checks of each deployment (a cheap "
        "call: the provider's model list). 0: off. A deployment that fails one is tried "
        "after the healthy ones, as a cooled-down one is, until a check passes.",
    )
    trust_proxy_headers: bool = Field(
        False,
        description="Deprecated: use CONDUIT_FORWARDED_ALLOW_IPS. When set (and that is "
        "empty) it now means forwarded_allow_ips = loopback (a proxy on this machine).",
    )
    shutdown_timeout: float = Field(
        20.0, ge=0, description="Seconds to let in-flight requests finish on SIGTERM/SIGINT."
    )
    log_retention_days: int = Field(
        30,
        ge=0,
        description="Days request logs are kept on MongoDB (a TTL index) and in the local "
        "store; 0 keeps them.",
    )
    memory_log_limit: int = Field(
        10_000, ge=100, description="Request logs the in-process store keeps (the newest)."
    )
    log_flush_interval: float = Field(
        1.0, gt=0, description="Seconds between batched writes of request logs and usage."
    )
    log_batch_size: int = Field(
        100,
        ge=1,
        description="Most request logs written in one batch (the event loop runs requests "
        "between batches, so smaller batches mean shorter pauses).",
    )
    log_queue_max: int = Field(
        50_000,
        ge=100,
        description="Request logs held in memory awaiting a write; beyond it new logs are "
        "dropped and counted (conduit_logs_dropped_total).",
    )
    request_timeout: float = Field(
        600.0, gt=0, description="Default total seconds for one upstream call."
    )
    connect_timeout: float = Field(10.0, gt=0, description="Default upstream connect timeout.")
    max_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Retries of a request after failed upstream attempts (429, 5xx, timeouts, "
        "connection errors), counted per request in upstream calls: every deployment and "
        "fallback gets one try, and a request makes at most max(k x deployments, k + "
        "max_retries) calls, k its fan-out. 401/403 are not retried on the same deployment.",
    )
    retry_backoff: float = Field(
        0.25, ge=0, description="Base seconds of the exponential backoff (full jitter)."
    )
    max_retry_wait: float = Field(
        8.0, ge=0, description="Longest single wait before a retry, Retry-After included."
    )
    cooldown_failures: int = Field(
        3, ge=1, description="Consecutive failures after which a deployment is cooled down."
    )
    cooldown_seconds: float = Field(
        30.0, ge=0, description="Seconds a failing deployment is skipped (tried last)."
    )
    sse_keepalive: float = Field(
        15.0, gt=0, description="Seconds of stream silence after which a keepalive comment is sent."
    )
    budget_alert_thresholds: list[float] = Field(
        [0.8, 1.0], description="Fractions of a budget at which one alert is emitted per period."
    )
    budget_webhook_url: str | None = Field(
        None, description="URL that receives budget alerts as JSON POSTs."
    )
    budget_webhook_secret: SecretStr | None = Field(
        None,
        description="Signs webhook bodies: header x-conduit-signature = t=<unix>,v1=<hex "
        "HMAC-SHA256 of '<t>.<body>'>.",
    )
    budget_webhook_retries: int = Field(
        4, ge=0, description="Retries of a failed webhook delivery."
    )
    budget_webhook_backoff: float = Field(
        1.0, ge=0, description="Seconds before the first webhook retry (doubling after)."
    )
    tpm_default_reserve: int = Field(
        256,
        ge=0,
        description="Completion tokens reserved against tpm when a request sets no max_tokens "
        "(reconciled with real usage afterwards).",
    )
    realtime_max_message_bytes: int = Field(
        16 * MIB,
        ge=1024,
        description="Largest realtime WebSocket message, either way (input_audio_buffer.append "
        "frames carry base64 audio).",
    )
    realtime_idle_timeout: float = Field(
        300.0, gt=0, description="Seconds without a message either way before a session is closed."
    )
    realtime_secret_ttl: float = Field(
        60.0,
        gt=0,
        description="Seconds a realtime session's client secret stays valid (single use).",
    )
    websocket_ping_interval: float = Field(
        20.0, gt=0, description="Seconds between WebSocket pings to clients."
    )
    # Prometheus metrics at /metrics (api/metrics.py).
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token a scrape of /metrics must send (Authorization: Bearer "
        "<token>). Unset: /metrics is open, like the health checks.",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve /metrics on this port only (a listener on the same host serving "
        "nothing else); the main port then answers 404 there. Unset: on the main port.",
    )
    # The HTTP front (server/): limits every connection is held to.
    http_server: Literal["conduit", "tornado"] = Field(
        "conduit",
        description="HTTP/1.1 server: 'conduit' (httptools, the default) or 'tornado' "
        "(Tornado's own HTTPServer, a fallback serving the same application).",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Open client connections per process; beyond it a new connection is "
        "answered 503 (too_many_connections) and closed. Lowered at start to fit the "
        "open-file limit (ulimit -n), keeping a quarter of it for everything else.",
    )
    forwarded_allow_ips: str = Field(
        "",
        description="Comma-separated proxy addresses or CIDRs (or '*') whose X-Forwarded-For "
        "and X-Forwarded-Proto are believed. X-Forwarded-For is read from the right, past "
        "these proxies; X-Real-Ip is never read. Empty: proxy headers are ignored.",
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a new connection may wait before sending a request, and a "
        "request's head may take from its first byte (408 beyond).",
    )
    body_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a request body may stall (no bytes arriving) before it is "
        "answered 408 and the connection closed.",
    )
    write_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a response may wait for a client that takes none of it before "
        "the connection is dropped (CONDUIT_HTTP_SERVER=conduit only).",
    )
    keepalive_timeout: float = Field(
        30.0, gt=0, description="Seconds an idle keep-alive connection is kept open."
    )
    # Calls to providers (routing/upstream.py): one client configuration for all of them.
    ca_bundle: Path | None = Field(
        None,
        description="PEM file of CA certificates trusted for provider TLS (calls, realtime "
        "and budget webhooks) in addition to the system's store. Unset: the system's alone. "
        "Proxies come from HTTPS_PROXY / HTTP_PROXY / NO_PROXY.",
    )
    max_upstream_bytes: int = Field(
        64 * MIB,
        ge=1024,
        description="Largest provider answer accepted, after decompression, whole or "
        "streamed (502 upstream_too_large beyond, not retried).",
    )
    upstream_pool_size: int = Field(
        64, ge=1, description="Idle keep-alive connections kept per provider host."
    )
    upstream_pool_idle: float = Field(
        60.0, gt=0, description="Seconds an idle provider connection is kept before closing."
    )
    # Work one request may cause (api/, routing/).
    max_fanout: int = Field(
        16,
        ge=1,
        description="Most upstream calls one request may fan out into (prompts x n on "
        "providers without n); beyond it the request is refused with 400.",
    )
    max_embedding_inputs: int = Field(
        2048, ge=1, description="Most inputs in one embeddings request (400 beyond)."
    )
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto",
        description="Event loop for `serve`: uvloop when installed (the `fast` extra) and "
        "'auto', else asyncio's. Notebooks and Jupyter always use their own loop.",
    )
    log_level: str = Field("INFO", description="Python logging level.")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines as text, or as one JSON object each (for log collectors).",
    )
    access_log: bool = Field(
        True,
        description="One line per request on the conduit.access logger (level INFO): "
        "request id, trace id, key id and prefix, model, provider, status, latency, "
        "overhead, tokens and cost. Never the key.",
    )
    otel_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector URL (e.g. http://collector:4318): traces are sent "
        "to its /v1/traces. Unset: tracing is on only if the standard "
        "OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set. "
        "Needs the `otel` extra.",
    )
    otel_service_name: str = Field(
        "conduit-tornado",
        description="service.name of the spans (OTEL_SERVICE_NAME is used when this is not set).",
    )
    otel_capture_content: bool = Field(
        False,
        description="Put prompts and whole answers in spans (gen_ai.input.messages, "
        "gen_ai.output.messages). Off: spans carry no request or answer text.",
    )
    # Serving under a URL prefix, and JupyterHub as the identity layer (conduit_tornado/hub/).
    base_path: str | None = Field(
        None,
        pattern=r"^(/[A-Za-z0-9._~-]+)*/?$",
        description="URL prefix every route (API, admin, web UI) is served under, e.g. "
        "/services/conduit. Unset: JUPYTERHUB_SERVICE_PREFIX when the gateway runs as a "
        "JupyterHub service (the hub's proxy keeps the prefix), else none.",
    )
    jupyterhub: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Admit JupyterHub users (Hub OAuth for the web UI; hub admins are gateway "
        "admins, other users see their own key) and give each a virtual key. auto: on when "
        "run as a hub service (JUPYTERHUB_SERVICE_NAME and JUPYTERHUB_API_TOKEN set).",
    )
    jupyterhub_sync_interval: float = Field(
        60.0,
        ge=1,
        description="Seconds between reads of the hub's user list; the key of a user deleted "
        "from the hub is revoked at the next read.",
    )


#: The gateway the `conduit-tornado keys` commands call unless CONDUIT_URL or --url says.
DEFAULT_URL = "http://127.0.0.1:5000"
#: Variables read by the commands that call a running gateway, not by the gateway itself.
CLIENT_VARIABLES = {
    "CONDUIT_URL": (
        DEFAULT_URL,
        "The gateway `conduit-tornado keys` calls (its --url): scheme, host, port and any "
        "CONDUIT_BASE_PATH.",
    ),
    "CONDUIT_MASTER_KEY": (
        None,
        "The admin master key `conduit-tornado keys` sends (its --master-key): the "
        "variable the gateway itself reads its master key from, above.",
    ),
}


def settings_markdown() -> str:
    """The settings table, for docs/settings.md and `conduit-tornado settings`."""
    lines = [
        "# Settings",
        "",
        "Generated by `conduit-tornado settings` from `conduit_tornado/core/settings.py`.",
        "",
        "| variable | default | description |",
        "|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else f"`{default}`"
        lines.append(f"| `CONDUIT_{name.upper()}` | {shown} | {field.description} |")
    lines += ["", "## Read by `conduit-tornado keys`", "", *lines[4:6]]
    for name, (value, description) in CLIENT_VARIABLES.items():
        shown = "unset" if value is None else f"`{value}`"
        lines.append(f"| `{name}` | {shown} | {description} |")
    return "\n".join(lines) + "\n"
