"""What tracing costs: the gateway with tracing off, on, and on with 10% sampling.

    .venv/bin/python bench/tracing.py [--rounds 4] [--duration 3] [--base DIR]

Uses bench/run.py's stack (our fast upstream and gateway processes on the memory store,
the gateway pinned to core 0, upstream, load driver and an OTLP sink to core 1) and runs
chat and stream (20 chunks) at 32 connections through each variant, interleaved, with
the key that has every limit on. Reports the gateway process's CPU per request (the
export thread included) and requests/s, medians over the rounds. ``--base DIR`` adds a
gateway run from another checkout (e.g. the commit before tracing existed), to show that
tracing switched off costs nothing measurable.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # bench/run.py, beside this file

SINK = textwrap.dedent(
    """
    import asyncio, sys
    import tornado.web

    class Traces(tornado.web.RequestHandler):
        def check_xsrf_cookie(self):
            pass

        def post(self):
            self.set_header("Content-Type", "application/x-protobuf")
            self.finish(b"")

    async def main():
        app = tornado.web.Application([(r"/v1/traces", Traces)])
        app.listen(int(sys.argv[1]), "127.0.0.1")
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--base", type=Path, help="another checkout to run as a variant")
    args = parser.parse_args()
    sink_port = bench.free_port()
    sink = subprocess.Popen(
        [sys.executable, "-c", SINK, str(sink_port)], preexec_fn=bench.pinned(1)
    )
    extra: list[subprocess.Popen[bytes]] = []
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        with bench.Stack("auto", None) as stack:
            env = {k: v for k, v in stack._env.items() if not k.startswith("OTEL_")}
            on = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"}
            sampled = {
                **on,
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0.1",
            }
            variants: dict[str, Any] = {}
            if args.base is not None:
                base = args.base.resolve()
                paths = f"{base / 'jupyter_ext'}{os.pathsep}{base}"
                variants["base checkout"] = {**env, "PYTHONPATH": paths}
            variants.update({"tracing off": env, "tracing on": on, "on, 10% sampled": sampled})
            gateways = {}
            for name, variant_env in variants.items():
                proc, url, limited, _ = stack._gateway(variant_env, bench.free_port())
                extra.append(proc)
                gateways[name] = (proc, url + "/v1/chat/completions", limited)
                bench.load(gateways[name][1], bench.CHAT, limited, 4, 2)  # warm up
            for _ in range(args.rounds):
                for scenario, body in (("chat", bench.CHAT), ("stream", bench.STREAM)):
                    for name, (proc, url, key) in gateways.items():
                        cpu0 = bench.cpu_seconds(proc.pid)
                        run = bench.load(url, body, key, 32, args.duration)
                        cpu = (bench.cpu_seconds(proc.pid) - cpu0) * 1000 / max(1, run.requests)
                        results.setdefault((scenario, name), []).append((cpu, run.rps))
                        if run.errors:
                            print(f"{scenario} {name}: {run.errors} errors", file=sys.stderr)
    finally:
        for proc in extra:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        sink.terminate()
        sink.wait(timeout=10)
    print("| scenario, 32 connections | variant | gateway CPU ms/req (median; all) | req/s |")
    print("|---|---|---|---:|")
    for (scenario, name), runs in results.items():
        cpus = [c for c, _ in runs]
        every = " ".join(f"{c:.3f}" for c in cpus)
        rps = statistics.median(r for _, r in runs)
        print(f"| {scenario} | {name} | {statistics.median(cpus):.3f} ({every}) | {rps:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
