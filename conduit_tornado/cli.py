"""The `conduit-tornado` command: serve, keys create|list|revoke, admin reset-master-key,
export, import, settings."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx2
from pydantic import ValidationError

from conduit_tornado.core.clock import Clock
from conduit_tornado.core.security import SecretBox
from conduit_tornado.core.settings import DEFAULT_URL, Settings, settings_markdown
from conduit_tornado.core.validation import first_problem
from conduit_tornado.metering.access_log import configure_logging

from . import key_table, transfer
from .admin_client import AdminClient, AdminError
from .api.conversations import backfill_lookups
from .api.root import VERSION
from .api.routes import mount_prefix
from .config_file import ConfigError, load_config
from .gateway import (
    Gateway,
    announce_master_key,
    bind,
    describe_store,
    open_store,
    reset_master_key,
    resolve_master_key,
    resolve_secret_key,
)
from .routing.catalog import Catalog
from .server import workers
from .server.listen import ListenError
from .server.tls import server_context
from .store import StoreUnavailable
from .transfer import TransferError

STORES = ("auto", "local", "memory", "mongodb")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conduit-tornado",
        description=__doc__,
        epilog="Every serve option has a CONDUIT_* variable; `conduit-tornado settings` "
        "lists them all. An option given here wins over its variable.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    serve = sub.add_parser("serve", help="run the gateway", description="Run the gateway.")
    serve.add_argument(
        "--host", help="address to listen on (CONDUIT_HOST; default 127.0.0.1, 0.0.0.0 for all)"
    )
    serve.add_argument(
        "--port", type=int, help="TCP port to listen on (CONDUIT_PORT; default 5000)"
    )
    serve.add_argument(
        "--config",
        type=Path,
        help="YAML or TOML file declaring providers and models (CONDUIT_CONFIG; default none)",
    )
    serve.add_argument(
        "--store",
        choices=STORES,
        help="where keys, usage and logs live (CONDUIT_STORE; default auto: MongoDB when "
        "CONDUIT_MONGODB_URI is set, else a local SQLite file)",
    )
    serve.add_argument(
        "--workers",
        help="worker processes: a number, or auto for one per core (CONDUIT_WORKERS; default 1)",
    )
    serve.add_argument(
        "--tls-cert",
        type=Path,
        help="PEM certificate chain, to serve HTTPS (CONDUIT_TLS_CERT; default none: HTTP)",
    )
    serve.add_argument(
        "--tls-key", type=Path, help="the certificate's PEM private key (CONDUIT_TLS_KEY)"
    )
    # Given by the supervisor to the workers it starts (server/workers.py).
    serve.add_argument("--listen-fds", help=argparse.SUPPRESS)
    serve.add_argument("--worker-channel", type=int, help=argparse.SUPPRESS)

    sub.add_parser("settings", help="print every CONDUIT_* setting as Markdown")

    admin = sub.add_parser("admin", help="administer the store directly (on its machine)")
    asub = admin.add_subparsers(dest="action", required=True, metavar="action")
    reset = asub.add_parser(
        "reset-master-key", help="generate a new admin master key, keep its hash, print it"
    )
    reset.add_argument("--store", choices=STORES, help="which store (CONDUIT_STORE; default auto)")

    export = sub.add_parser("export", help="write keys, providers, models, usage... to a file")
    export.add_argument("file", type=Path, help="JSON lines file to write")
    export.add_argument("--logs", action="store_true", help="include request logs")
    export.add_argument(
        "--store", choices=STORES, help="source store (CONDUIT_STORE; default auto)"
    )
    imp = sub.add_parser("import", help="copy an export file into the store")
    imp.add_argument("file", type=Path, help="a file written by `conduit-tornado export`")
    imp.add_argument("--store", choices=STORES, help="target store (CONDUIT_STORE; default auto)")

    keys = sub.add_parser(
        "keys",
        help="manage virtual keys through a running gateway's admin API",
        description="Manage virtual keys through a running gateway's admin API. "
        "--url and --master-key go before the action: keys --url URL list.",
    )
    keys.add_argument(
        "--url",
        default=os.environ.get("CONDUIT_URL", DEFAULT_URL),
        help=f"the gateway's URL (CONDUIT_URL; default {DEFAULT_URL})",
    )
    keys.add_argument(
        "--master-key",
        # Never shown in help: the default is the secret itself.
        default=os.environ.get("CONDUIT_MASTER_KEY"),
        help="the admin master key (CONDUIT_MASTER_KEY; required)",
    )
    ksub = keys.add_subparsers(dest="action", required=True, metavar="action")
    create = ksub.add_parser(
        "create",
        help="create a key; its secret is printed once",
        description="Create a virtual key; its secret is printed once. Limits left out "
        "are unlimited.",
    )
    create.add_argument("--name", required=True, help="a name for people to recognise it by")
    create.add_argument(
        "--models",
        metavar="LIST",
        help="comma-separated models it may use, names or patterns such as gpt-* "
        "(default: every model)",
    )
    create.add_argument(
        "--ips",
        metavar="LIST",
        help="comma-separated client addresses or CIDRs it may be used from (default: any)",
    )
    create.add_argument("--rpm", type=int, metavar="N", help="most requests per minute")
    create.add_argument("--rpd", type=int, metavar="N", help="most requests per day")
    create.add_argument(
        "--tpm", type=int, metavar="N", help="most tokens (prompt + completion) per minute"
    )
    create.add_argument(
        "--max-parallel",
        type=int,
        metavar="N",
        help="most requests in flight at once (streams included)",
    )
    create.add_argument(
        "--max-budget",
        type=float,
        metavar="USD",
        help="most it may spend, in US dollars, per --budget-duration period",
    )
    create.add_argument(
        "--budget-duration",
        choices=["1d", "7d", "30d", "monthly", "total"],
        metavar="PERIOD",
        help="the period --max-budget covers before it starts again: 1d, 7d, 30d, monthly "
        "(calendar month, UTC) or total (default: never starts again)",
    )
    create.add_argument(
        "--expires-at",
        metavar="WHEN",
        help="when it stops working: ISO 8601 date-time, UTC unless it names a zone "
        "(default: never)",
    )
    create.add_argument("--group", help="a group (team) whose limits and budget it shares too")
    lst = ksub.add_parser(
        "list",
        help="list keys: status, spend, expiry",
        description="List keys with their status (active, disabled or expired), this "
        "period's spend against the budget, and expiry.",
    )
    lst.add_argument("--name", help="only keys of this name")
    lst.add_argument("--group", help="only keys of this group")
    lst.add_argument("--json", action="store_true", help="print the admin API's JSON instead")
    revoke = ksub.add_parser("revoke", help="disable a key (or delete it with --delete)")
    revoke.add_argument("id", help="the key's id (from keys list), not its secret")
    revoke.add_argument(
        "--delete",
        action="store_true",
        help="delete it (its usage and logs stay) instead of disabling it",
    )
    return parser


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


async def _keys(args: argparse.Namespace) -> int:
    if not args.master_key:
        print("error: set CONDUIT_MASTER_KEY or pass --master-key", file=sys.stderr)
        return 2
    async with AdminClient(args.url, args.master_key) as client:
        if args.action == "create":
            fields: dict[str, Any] = {
                "name": args.name,
                "allowed_models": _split(args.models),
                "allowed_ips": _split(args.ips),
                "rpm": args.rpm,
                "rpd": args.rpd,
                "tpm": args.tpm,
                "max_parallel": args.max_parallel,
                "max_budget": args.max_budget,
                "budget_duration": args.budget_duration,
                "expires_at": args.expires_at,
                "group": args.group,
            }
            key = await client.create_key(**{k: v for k, v in fields.items() if v is not None})
            print(json.dumps(key, indent=2))
            print("\nStore the key now: it is not shown again.", file=sys.stderr)
        elif args.action == "list":
            page = await client.list_keys(name=args.name, group=args.group, limit=1000)
            if args.json:
                print(json.dumps(page["data"], indent=2))
            else:
                print(key_table.render(page["data"]))
                if page.get("total", 0) > len(page["data"]):
                    print(f"(the first {len(page['data'])} of {page['total']})", file=sys.stderr)
        elif args.delete:
            await client.delete_key(args.id)
            print(f"deleted {args.id}")
        else:
            await client.update_key(args.id, enabled=False)
            print(f"revoked {args.id} (disabled; --delete removes it)")
    return 0


async def _serve(
    settings: Settings, listen_fds: str | None = None, channel: int | None = None
) -> int:
    """Serve until SIGTERM or SIGINT: alone, or as a worker of a supervisor (which passes
    the listening sockets and its channel's descriptor)."""
    gateway = Gateway(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before start: whoever reads "listening on" may signal at once, and must get a graceful
    # stop (and the generated master key printed right after that line), not a kill.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start(workers.inherited_sockets(listen_fds) if listen_fds else None)
    tune_gc()
    if channel is not None:
        supervisor = workers.WorkerChannel(channel)
        supervisor.watch(stop.set)
        supervisor.ready()
    await stop.wait()
    log = logging.getLogger("conduit")
    log.info("shutting down: finishing in-flight requests")
    await gateway.stop()
    # The last line: the logs, the usage and the store were all written and closed.
    log.info("conduit-tornado stopped" if channel is None else "worker stopped")
    return 0


def tune_gc() -> None:
    """The serving process owns its collector (notebooks and embedding apps keep theirs).

    Nearly everything a request allocates is freed by reference counting, yet with
    Python's default thresholds the cyclic collector runs many times a second under load,
    with occasional full passes over every stored object (bench/MEASUREMENTS.md has the
    cost). Start-up objects are frozen out of its view, and it runs after 50,000 net
    allocations instead of 700."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run_loop(main: Coroutine[Any, Any, int], choice: str) -> int:
    """Run the server on uvloop when asked for or available ("auto"), else asyncio."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise SystemExit(
                    "error: CONDUIT_EVENT_LOOP=uvloop but uvloop is not installed"
                ) from None
        else:
            result: int = uvloop.run(main)
            return result
    return asyncio.run(main)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "settings":
        print(settings_markdown(), end="")
        return 0
    if args.command == "keys":
        try:
            return asyncio.run(_keys(args))
        except AdminError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        except (OSError, httpx2.TransportError) as exc:
            print(f"error: cannot reach {args.url}: {exc}", file=sys.stderr)
            return 1
    names = ("host", "port", "config", "store", "workers", "tls_cert", "tls_key")
    overrides = {k: v for k in names if (v := getattr(args, k, None)) is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problem = first_problem(exc, Settings)
        field = problem.param.split(".", 1)[0] if problem.param else None
        # Named as the user set it: the CONDUIT_ variable (or the flag of the same name).
        where = f"CONDUIT_{field.upper()}" if field else "the settings"
        print(f"error: {where}: {problem.text}", file=sys.stderr)
        return 2
    if args.command in ("admin", "export", "import"):
        try:
            return asyncio.run(_offline(args, settings))
        except (TransferError, ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except StoreUnavailable as exc:
            print(f"error: cannot reach the store: {exc}", file=sys.stderr)
            return 1
    configure_logging(settings)  # text or JSON lines (CONDUIT_LOG_FORMAT), scrubbed
    try:
        if args.worker_channel is None and workers.worker_count(settings.workers) > 1:
            return _supervise(args, settings)
        return run_loop(_serve(settings, args.listen_fds, args.worker_channel), settings.event_loop)
    except ListenError as exc:  # a port in use, a privileged port, a host not of this machine
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # settings that contradict each other (open_store)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:  # exit, and let the supervisor start us again
        print(f"error: cannot reach the store at start-up: {exc}", file=sys.stderr)
        return 1


async def _offline(args: argparse.Namespace, settings: Settings) -> int:
    """The commands that open the store themselves (no gateway needs to run)."""
    if args.command == "import":
        transfer.check(args.file)  # the whole file, before anything is written
    store = open_store(settings)
    await store.start()
    try:
        where = describe_store(store)
        secret = resolve_secret_key(settings, store)
        box = SecretBox(secret) if secret is not None else None
        if args.command == "admin":
            if not store.persistent:
                raise ValueError("the in-process store keeps nothing: choose a persistent one")
            key = await reset_master_key(store)
            print(key)
            print(
                f"\nNew admin master key for the {where}; only its hash is stored. "
                "Running gateways on this store take it up within CONDUIT_CHANGE_POLL seconds.",
                file=sys.stderr,
            )
            if settings.master_key is not None:
                print(
                    "Note: CONDUIT_MASTER_KEY is set here, and a gateway started with it "
                    "uses that key instead.",
                    file=sys.stderr,
                )
        elif args.command == "export":
            with transfer.open_private(args.file) as out:
                counts = await transfer.export(store, box, out, logs=args.logs)
            summary = ", ".join(f"{n} {c}" for c, n in counts.items() if n) or "nothing"
            print(f"exported {summary} from the {where} to {args.file}", file=sys.stderr)
            if counts.get("providers"):
                print(
                    "The file holds provider credentials in clear: keep it private, and "
                    "delete it once imported.",
                    file=sys.stderr,
                )
        else:
            done = await transfer.import_file(args.file, store, box)
            summary = ", ".join(f"{n} {c}" for c, n in done.written.items()) or "nothing"
            print(f"imported {summary} into the {where}", file=sys.stderr)
            if done.skipped:
                skipped = ", ".join(f"{n} {c}" for c, n in done.skipped.items())
                print(f"skipped (already there): {skipped}", file=sys.stderr)
    finally:
        await store.close()
    return 0


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    """``serve`` with more than one worker (server/workers.py): one-time set-up here,
    then the workers, each a fresh process of this command."""
    count = workers.worker_count(settings.workers)
    if os.name != "posix":
        raise ValueError("--workers above 1 needs a POSIX system (descriptors passed down)")
    if settings.store == "memory":
        raise ValueError(
            "the in-process store (CONDUIT_STORE=memory) is per process: workers would not "
            "share keys, limits or usage. Use the local store or MongoDB with --workers"
        )
    server_context(settings)  # incomplete TLS settings: said once, before anything starts
    # Listening first (ListenError): a port in use fails before the store is touched.
    sets = workers.bind_workers(bind, settings.host, settings.port, count)
    try:
        generated, secret, where = asyncio.run(_prepare(settings))
    except BaseException:
        for sock in {s for socks in sets for s in socks}:
            sock.close()
        raise
    port = sets[0][0].getsockname()[1]
    scheme = "https" if settings.tls_cert is not None else "http"
    wildcard = settings.host in ("0.0.0.0", "::", "")  # noqa: S104 (a comparison)
    prefix = mount_prefix(settings).rstrip("/")  # CONDUIT_BASE_PATH: as Gateway.url has it
    url = f"{scheme}://{'127.0.0.1' if wildcard else settings.host}:{port}{prefix}"
    # The config file was applied above, once; workers that applied it too would race to
    # create the same providers.
    env = {k: v for k, v in os.environ.items() if k != "CONDUIT_CONFIG"}
    if secret is not None:  # no lasting secret: one for this run, the same in every worker
        env["CONDUIT_SECRET_KEY"] = secret
    passed = [f"--host={settings.host}"]
    for flag in ("store", "tls_cert", "tls_key"):
        if (value := getattr(args, flag)) is not None:
            passed.append(f"--{flag.replace('_', '-')}={value}")

    def command(fds: list[int], channel: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "conduit_tornado",
            "serve",
            *passed,
            f"--listen-fds={','.join(map(str, fds))}",
            f"--worker-channel={channel}",
        ]

    def ready(pids: list[int]) -> None:
        logging.getLogger("conduit").info(
            "conduit-tornado listening on %s with %d workers, pids %s (store: %s); "
            "web UI at %s/ui/",
            url,
            count,
            " ".join(map(str, pids)),
            where,
            url,
        )
        if generated:
            announce_master_key(generated, True)

    supervisor = workers.Supervisor(
        command, sets, env, settings.shutdown_timeout, affinity=settings.worker_affinity
    )
    status = supervisor.run(ready)
    logging.getLogger("conduit").info("conduit-tornado stopped (exit status %d)", status)
    return status


async def _prepare(settings: Settings) -> tuple[str | None, str | None, str]:
    """What must happen once before the workers start, not in each at once: the store's
    schema, the secret key, the master key (printed once) and the config file. Returns
    (a master key generated now, a secret generated for this run only, the store)."""
    store = open_store(settings)
    await store.start()
    try:
        await backfill_lookups(store)  # once here, rather than by every worker at once
        secret = resolve_secret_key(settings, store)
        ephemeral = None
        if secret is None:
            logging.getLogger("conduit").warning(
                "CONDUIT_SECRET_KEY is not set: provider credentials stored now cannot be "
                "decrypted after a restart. Set it for real use."
            )
            secret = ephemeral = secrets.token_urlsafe(32)
        _, generated = await resolve_master_key(settings, store)
        if settings.config is not None:
            catalog = Catalog(store, SecretBox(secret), Clock())
            await catalog.apply(*load_config(settings.config))
        return generated, ephemeral, describe_store(store)
    finally:
        await store.close()
