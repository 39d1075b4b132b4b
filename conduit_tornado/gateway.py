"""Start-up and shutdown as ordered steps; used by the CLI, notebooks and tests alike."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import sys
from typing import Any

from conduit_tornado.admission.groups import GroupService
from conduit_tornado.admission.keys import KeyService
from conduit_tornado.admission.limits import Limiter
from conduit_tornado.admission.realtime import RealtimeSessions
from conduit_tornado.api.routes import make_app
from conduit_tornado.core.clock import Clock
from conduit_tornado.core.security import SecretBox, hash_key, new_master_key
from conduit_tornado.core.settings import Settings
from conduit_tornado.metering.alerts import Alerts
from conduit_tornado.metering.pricing import MediaPrices, PriceTable
from conduit_tornado.metering.recorder import Recorder
from conduit_tornado.routing.catalog import Catalog
from conduit_tornado.routing.router import Router
from conduit_tornado.routing.upstream import Upstream
from conduit_tornado.server.http import HttpServer

from .config_file import load_config
from .context import Context
from .store import DuplicateError, MemoryStore, MongoStore, Store, log_failure

log = logging.getLogger("conduit")
_MASTER_META = "master_key"


def open_store(settings: Settings) -> Store:
    if settings.mongodb_uri is not None:
        return MongoStore(
            settings.mongodb_uri.get_secret_value(),
            settings.mongodb_database,
            log_retention_days=settings.log_retention_days,
            timeout=settings.mongodb_timeout,
        )
    return MemoryStore(max_logs=settings.memory_log_limit)


async def resolve_master_key(settings: Settings, store: Store) -> tuple[str, str | None]:
    """Return (hash of the master key, the key itself if it was generated just now)."""
    if settings.master_key is not None:
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

    @property
    def url(self) -> str:
        wildcard = self.settings.host in ("0.0.0.0", "::", "")  # noqa: S104 (a comparison)
        return f"http://{'127.0.0.1' if wildcard else self.settings.host}:{self.port}"

    async def build(self) -> Context:
        """Every start-up step but listening; the Jupyter extension stops here."""
        s = self.settings
        store = self._store or open_store(s)
        try:
            await store.start()
        except BaseException:
            if self._store is None:
                await store.close()  # ours: its client's background tasks end with it
            raise
        if not store.persistent:
            log.warning(
                "using the in-process store: keys, usage and logs are NOT persisted. "
                "Set CONDUIT_MONGODB_URI for real use."
            )
        if s.secret_key is None:
            if store.persistent:
                log.warning(
                    "CONDUIT_SECRET_KEY is not set: provider credentials stored now cannot be "
                    "decrypted after a restart. Set it for real use."
                )
            box = SecretBox(secrets.token_urlsafe(32))
        else:
            box = SecretBox(s.secret_key.get_secret_value())
        master_hash, generated = await resolve_master_key(s, store)
        self.generated_master_key = generated
        catalog = Catalog(store, box, self._clock)
        if s.config is not None:
            providers, models = load_config(s.config)
            await catalog.apply(providers, models)
        await catalog.refresh()
        upstream = Upstream()
        recorder = Recorder(store, s, self._clock)
        alerts = Alerts(store, s, self._clock)
        limiter = Limiter(store, self._clock, spend_ttl=s.spend_cache_ttl, on_charges=alerts.check)
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
        )
        self._tasks.append(asyncio.create_task(self._refresh_catalog(catalog)))
        self._tasks.append(asyncio.create_task(recorder.run()))
        self._tasks.append(asyncio.create_task(limiter.run_heartbeat()))
        return self.ctx

    async def _refresh_catalog(self, catalog: Catalog) -> None:
        while True:
            await asyncio.sleep(self.settings.catalog_refresh)
            try:
                await catalog.refresh()
            except Exception as exc:
                log_failure(log, exc, "catalog refresh failed; keeping the previous snapshot")

    async def start(self) -> None:
        ctx = await self.build()
        s = self.settings
        app = make_app(ctx)
        self.server = HttpServer(
            app,
            xheaders=s.trust_proxy_headers,
            max_body_size=max(s.max_request_bytes, s.max_admin_request_bytes),
            idle_timeout=75,
        )
        sockets = bind(s.host, s.port)
        await self.server.start(sockets)
        self.port = sockets[0].getsockname()[1]
        log.info("conduit-tornado listening on %s (store: %s)", self.url, ctx.store.kind)
        if self.generated_master_key:
            announce_master_key(self.generated_master_key, ctx.store.persistent)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), flush, close clients."""
        if self.server is not None:
            self.server.stop_listening()
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
            self.ctx = None


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address of host (tornado.netutil.bind_sockets leaks the
    socket when bind fails, e.g. on a port in use; this closes it)."""
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
