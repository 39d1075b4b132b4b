"""Start-up and shutdown as ordered steps; used by the CLI, notebooks and tests alike."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

from conduit_tornado.admission.groups import GroupService
from conduit_tornado.admission.keys import KeyService
from conduit_tornado.admission.limits import Limiter
from conduit_tornado.admission.realtime import RealtimeSessions
from conduit_tornado.api.conversations import backfill_lookups
from conduit_tornado.api.routes import make_app, make_metrics_app, mount_prefix
from conduit_tornado.core import scrub
from conduit_tornado.core.clock import Clock
from conduit_tornado.core.security import SecretBox, hash_key, new_master_key
from conduit_tornado.core.settings import Settings
from conduit_tornado.core.tracing import open_tracing
from conduit_tornado.hub import hub_for
from conduit_tornado.metering import prometheus
from conduit_tornado.metering.alerts import Alerts
from conduit_tornado.metering.pricing import MediaPrices, PriceTable
from conduit_tornado.metering.recorder import Recorder
from conduit_tornado.routing.catalog import Catalog
from conduit_tornado.routing.router import Router
from conduit_tornado.routing.upstream import Upstream
from conduit_tornado.server.http import HttpServer
from conduit_tornado.server.listen import PORT_SETTING, ListenError
from conduit_tornado.server.tls import server_context

from .background import tasks, wire_feed
from .config_file import load_config
from .context import Context
from .store import DuplicateError, MemoryStore, MongoStore, SQLiteStore, Store, log_failure
from .store.changes import MASTER_KEY, ChangeFeed, note
from .store.metered import metered
from .store.sqlite import FILE_NAME, default_data_dir
from .store.traced import traced
from .store.wrapping import innermost

log = logging.getLogger("conduit")
_MASTER_META = "master_key"
SECRET_FILE = "secret.key"  # noqa: S105 (a file name)


def open_store(settings: Settings) -> Store:
    """The store the settings ask for (CONDUIT_STORE; auto: MongoDB when a URI is set,
    else the local file)."""
    kind = settings.store
    if kind == "auto":
        kind = "mongodb" if settings.mongodb_uri is not None else "local"
    if kind == "mongodb":
        if settings.mongodb_uri is None:
            raise ValueError("CONDUIT_STORE=mongodb needs CONDUIT_MONGODB_URI")
        return MongoStore(
            settings.mongodb_uri.get_secret_value(),
            settings.mongodb_database,
            log_retention_days=settings.log_retention_days,
            timeout=settings.mongodb_timeout,
        )
    if kind == "local":
        return SQLiteStore(
            data_dir(settings) / FILE_NAME,
            log_retention_days=settings.log_retention_days,
            max_logs=settings.local_log_limit,
        )
    return MemoryStore(max_logs=settings.memory_log_limit)


def data_dir(settings: Settings) -> Path:
    return settings.data_dir if settings.data_dir is not None else default_data_dir()


def describe_store(store: Store) -> str:
    """Which store, and where: for the start-up line."""
    store = innermost(store)
    if isinstance(store, SQLiteStore):
        return f"local file {store.path}"
    if isinstance(store, MongoStore):
        return f"MongoDB database {store.database!r}"
    return f"{store.kind} (not persisted)" if not store.persistent else store.kind


def resolve_secret_key(settings: Settings, store: Store) -> str | None:
    """The secret that encrypts provider credentials: CONDUIT_SECRET_KEY, else for the
    local store one generated once and kept in a private file beside it (a copy of the
    database alone does not reveal the credentials). None: no lasting secret."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    if not isinstance(store, SQLiteStore):
        return None
    path = store.path.parent / SECRET_FILE
    if not path.exists():
        # Written whole under another name, then linked into place: two processes starting
        # at once both end up with the one that got there first.
        draft = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text(encoding="ascii").strip()


async def resolve_master_key(settings: Settings, store: Store) -> tuple[str, str | None]:
    """Return (hash of the master key, the key itself if it was generated just now)."""
    if settings.master_key is not None:
        # A chosen master key may be shorter than the key pattern scrub.py redacts.
        scrub.remember([settings.master_key.get_secret_value()])
        return hash_key(settings.master_key.get_secret_value()), None
    if store.persistent:
        stored = await store.get("meta", _MASTER_META)
        if stored is not None:
            return str(stored["hash"]), None
    key = new_master_key()
    try:
        await store.insert("meta", {"_id": _MASTER_META, "hash": hash_key(key)})
    except DuplicateError:  # another instance generated one first: use theirs
        stored = await store.get("meta", _MASTER_META)
        assert stored is not None
        return str(stored["hash"]), None
    return hash_key(key), key


async def reset_master_key(store: Store) -> str:
    """Generate a new master key, keep its hash in the store and return it (the CLI's
    ``admin reset-master-key``). Running gateways sharing the store take it up through the
    change feed (within CONDUIT_CHANGE_POLL seconds)."""
    key = new_master_key()
    if await store.update("meta", _MASTER_META, {"hash": hash_key(key)}) is None:
        try:
            await store.insert("meta", {"_id": _MASTER_META, "hash": hash_key(key)})
        except DuplicateError:  # one was created meanwhile: replace it all the same
            await store.update("meta", _MASTER_META, {"hash": hash_key(key)})
    await note(store, MASTER_KEY)  # running gateways take it up (background.py)
    return key


class Gateway:
    """One running gateway: context, HTTP server, background tasks."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self._store = store
        self._clock = clock or Clock()
        self.ctx: Context | None = None
        self.server: HttpServer | None = None
        self.port: int | None = None
        self.generated_master_key: str | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.metrics_server: HttpServer | None = None
        self.metrics_port: int | None = None  # CONDUIT_METRICS_PORT's, once listening
        self._watched: prometheus.Watched | None = None

    @property
    def url(self) -> str:
        wildcard = self.settings.host in ("0.0.0.0", "::", "")  # noqa: S104 (a comparison)
        scheme = "https" if self.settings.tls_cert is not None else "http"
        prefix = mount_prefix(self.settings).rstrip("/")  # CONDUIT_BASE_PATH, or the hub's
        host = "127.0.0.1" if wildcard else self.settings.host
        return f"{scheme}://{host}:{self.port}{prefix}"

    async def build(self) -> Context:
        """Every start-up step but listening; the Jupyter extension stops here."""
        s = self.settings
        store = self._store or open_store(s)
        try:
            await store.start()
            await backfill_lookups(store)  # before any request reads conversation items
        except BaseException:
            if self._store is None:
                await store.close()  # ours: its client's background tasks end with it
            raise
        if not store.persistent:
            log.warning(
                "using the in-process store: keys, usage and logs are NOT persisted. "
                "Use the local store (CONDUIT_STORE=local, the default) or MongoDB for real use."
            )
        secret = resolve_secret_key(s, store)
        if secret is None:
            if store.persistent:
                log.warning(
                    "CONDUIT_SECRET_KEY is not set: provider credentials stored now cannot be "
                    "decrypted after a restart. Set it for real use."
                )
            secret = secrets.token_urlsafe(32)
        box = SecretBox(secret)
        store = metered(store)  # every operation from here on is timed (core/meters.py)
        master_hash, generated = await resolve_master_key(s, store)
        self.generated_master_key = generated
        feed = ChangeFeed(store, s.change_poll)
        await feed.start()  # before the first reads: later changes are acted on
        tracer = open_tracing(s)
        if tracer is not None:
            # Operations made for a traced request become its child spans; every service
            # uses the wrapped store (background writes, outside requests, make none).
            store = traced(store)
        catalog = Catalog(store, box, self._clock)
        if s.config is not None:
            providers, models = load_config(s.config)
            await catalog.apply(providers, models)
        await catalog.refresh()
        upstream = Upstream(s)
        recorder = Recorder(store, s, self._clock)
        alerts = Alerts(store, s, self._clock)
        limiter = Limiter(
            store,
            self._clock,
            spend_ttl=s.spend_cache_ttl,
            on_charges=alerts.check,
            instance_ttl=s.instance_ttl,
        )
        await limiter.heartbeat()
        self.ctx = Context(
            settings=s,
            store=store,
            clock=self._clock,
            box=box,
            keys=KeyService(store, self._clock, s.key_cache_ttl),
            catalog=catalog,
            upstream=upstream,
            router=Router(catalog, upstream, s),
            recorder=recorder,
            prices=PriceTable.bundled(),
            media_prices=MediaPrices.bundled(),
            limiter=limiter,
            groups=GroupService(store, self._clock),
            alerts=alerts,
            realtime=RealtimeSessions(store, self._clock, s.realtime_secret_ttl),
            master_key_hash=master_hash,
            tracing=tracer,
        )
        self._tasks.append(asyncio.create_task(self._refresh_catalog(catalog)))
        self._tasks.append(asyncio.create_task(recorder.run()))
        self._tasks.append(asyncio.create_task(limiter.run_heartbeat()))
        wire_feed(feed, self.ctx)
        self._tasks += [asyncio.create_task(work) for work in tasks(self.ctx, feed)]
        self._watched = prometheus.watch(self.ctx.in_flight, recorder, limiter)
        self._tasks.append(asyncio.create_task(prometheus.refresh_forever()))
        return self.ctx

    async def _refresh_catalog(self, catalog: Catalog) -> None:
        while True:
            await asyncio.sleep(self.settings.catalog_refresh)
            try:
                await catalog.refresh()
            except Exception as exc:
                log_failure(log, exc, "catalog refresh failed; keeping the previous snapshot")

    async def start(self, sockets: list[socket.socket] | None = None) -> None:
        """Build and listen: on ``sockets`` when given (a worker's, bound by its
        supervisor), else on CONDUIT_HOST and CONDUIT_PORT."""
        s = self.settings
        worker = sockets is not None
        server_context(s)  # incomplete TLS settings fail here, before anything starts
        # Bound first: a port in use fails before the store is opened or written to (and
        # before a master key is generated that would then never be shown).
        sockets = sockets or bind(s.host, s.port)
        metrics_sockets: list[socket.socket] = []
        try:
            if s.metrics_port is not None:
                # A worker among several (its sockets came from the supervisor) shares the
                # metrics port with its siblings; any of them answers for all (multiprocess).
                metrics_sockets = bind(
                    s.host, s.metrics_port, reuse_port=worker, port_setting="CONDUIT_METRICS_PORT"
                )
            ctx = await self.build()
        except BaseException:
            for sock in sockets + metrics_sockets:
                sock.close()
            raise
        try:
            await self._listen(ctx, sockets, metrics_sockets, worker)
        except BaseException:
            await self.stop()  # what started (the store, the tasks, a listener) ends
            for sock in sockets + metrics_sockets:
                sock.close()
            raise

    async def _listen(
        self,
        ctx: Context,
        sockets: list[socket.socket],
        metrics_sockets: list[socket.socket],
        worker: bool,
    ) -> None:
        s = self.settings
        hub = hub_for(ctx, mount_prefix(s))  # None unless a JupyterHub service
        if hub is not None:
            self._tasks.append(asyncio.create_task(hub.run()))
        app = make_app(ctx, hub=hub)
        # Ours or Tornado's (CONDUIT_HTTP_SERVER), held to the settings' connection limits.
        self.server = HttpServer.for_settings(app, s)
        await self.server.start(sockets)
        self.port = sockets[0].getsockname()[1]
        if metrics_sockets:  # /metrics on a port of its own (CONDUIT_METRICS_PORT)
            self.metrics_server = HttpServer.for_settings(make_metrics_app(ctx), s)
            await self.metrics_server.start(metrics_sockets)
            self.metrics_port = metrics_sockets[0].getsockname()[1]
        if worker:  # "conduit-tornado listening on" is the supervisor's, once all workers are
            where = describe_store(ctx.store)
            log.info("worker %d listening on %s (store: %s)", os.getpid(), self.url, where)
        else:
            log.info(
                "conduit-tornado listening on %s (store: %s); web UI at %s/ui/",
                self.url,
                describe_store(ctx.store),
                self.url,
            )
        if self.generated_master_key:
            announce_master_key(self.generated_master_key, ctx.store.persistent)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), flush, close clients."""
        if self.server is not None:
            self.server.stop_listening()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
            self.metrics_server = None
        if self.ctx is not None:
            await self.ctx.in_flight.drain(self.settings.shutdown_timeout)
        if self.server is not None:
            await self.server.close_all_connections()
            self.server = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            # A cancel can be lost inside a library (Python 3.11's asyncio.wait_for drops
            # one that races a result, and PyMongo waits with it under timeoutMS), and
            # these loops would go on: ask again until the task has ended.
            while not task.done():
                await asyncio.wait([task], timeout=0.1)
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._watched is not None:
            prometheus.unwatch(self._watched)
            self._watched = None
        if self.ctx is not None:
            await self.ctx.in_flight.stop_runs()  # background responses: marked failed
            await self.ctx.in_flight.settle()
            await self.ctx.limiter.close()  # settlements, and capacity this instance held
            await self.ctx.alerts.drain()
            await self.ctx.recorder.flush()
            if self.ctx.recorder.pending:
                log.error(
                    "%d request logs could not be written before exit", self.ctx.recorder.pending
                )
            await self.ctx.upstream.close()
            await self.ctx.store.close()
            if self.ctx.tracing is not None:  # exports what is buffered: off the loop
                await asyncio.to_thread(self.ctx.tracing.shutdown)
            self.ctx = None


def bind(
    host: str, port: int, reuse_port: bool = False, *, port_setting: str = PORT_SETTING
) -> list[socket.socket]:
    """Listening sockets for every address of host (tornado.netutil.bind_sockets leaks the
    socket when bind fails, e.g. on a port in use; this closes it). ``reuse_port``: others
    may bind the same port with it too (SO_REUSEPORT; server/workers.py). Failures raise
    ListenError, whose message names the setting to change (``port_setting`` for the
    port)."""
    try:
        return _bind(host, port, reuse_port)
    except OSError as exc:
        raise ListenError(exc, host, port, port_setting) from exc


def _bind(host: str, port: int, reuse_port: bool) -> list[socket.socket]:
    bound: list[socket.socket] = []
    infos = socket.getaddrinfo(
        host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    for family, kind, proto, _, address in dict.fromkeys(infos):
        if bound and port == 0:
            address = (address[0], bound[0].getsockname()[1], *address[2:])  # one port for all
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setblocking(False)
            sock.bind(address)
            sock.listen(1024)
        except OSError:
            sock.close()
            for other in bound:
                other.close()
            raise
        bound.append(sock)
    return bound


def announce_master_key(key: str, persistent: bool) -> None:
    """Print a generated master key once, to the terminal only (never to the log)."""
    where = (
        "Only its hash is stored; it will not be shown again."
        if persistent
        else ("The in-process store forgets it at exit; set CONDUIT_MASTER_KEY to keep one.")
    )
    print(
        f"\n  Generated admin master key (shown once):\n\n    {key}\n\n  {where}\n",
        file=sys.stderr,
        flush=True,
    )
