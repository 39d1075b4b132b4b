"""The Responses WebSocket mode against the same turn streamed over HTTP (SSE): CPU of
this one process (gateway and client together) and wall time per turn, mock provider,
memory store, store false, sequential turns. Rough: the client's own cost is included
(httpx's is larger than websockets'), so read the two rows against each other.

    .venv/bin/python bench/responses_socket.py [turns]
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

import httpx2
from websockets.asyncio.client import connect

from conduit_tornado import AdminClient, Gateway
from conduit_tornado.core.settings import Settings
from conduit_tornado.store import MemoryStore

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def main() -> None:
    gw = Gateway(Settings(host="127.0.0.1", port=0, master_key="m" * 40), store=MemoryStore())
    await gw.start()
    admin = AdminClient(gw.url, "m" * 40)
    await admin.create_provider(name="mock", type="mock")
    await admin.create_model(name="mock", deployments=[{"provider": "mock", "model": "m"}])
    key = (await admin.create_key(name="b"))["key"]
    body = {"model": "mock", "input": "hello", "store": False}
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(base_url=gw.url, headers=auth) as http:

        async def sse() -> None:
            async with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as r:
                async for _ in r.aiter_bytes():
                    pass

        for _ in range(30):
            await sse()
        for rnd in range(2):
            c0, t0 = cpu(), time.perf_counter()
            for _ in range(N):
                await sse()
            c1, t1 = cpu(), time.perf_counter()
            async with connect(
                gw.url.replace("http", "ws") + "/v1/responses", additional_headers=auth
            ) as ws:

                async def turn() -> None:
                    await ws.send(json.dumps({"type": "response.create", **body}))
                    while json.loads(await ws.recv())["type"] != "response.completed":
                        pass

                for _ in range(30):
                    await turn()
                c2, t2 = cpu(), time.perf_counter()
                for _ in range(N):
                    await turn()
                c3, t3 = cpu(), time.perf_counter()
            print(
                f"round {rnd}: SSE {1000 * (c1 - c0) / N:.3f} ms CPU, {1000 * (t1 - t0) / N:.3f} ms wall; "
                f"WS {1000 * (c3 - c2) / N:.3f} ms CPU, {1000 * (t3 - t2) / N:.3f} ms wall"
            )
    await admin.aclose()
    await gw.stop()


asyncio.run(main())
