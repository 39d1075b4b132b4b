"""A stand-in for a user's single-user server, spawned by the hub in tests/test_jupyterhub.py
(a real Jupyter server would take seconds to start and prove nothing more here).

It does what a notebook on the hub does first, with nothing but the environment the
spawner gave it: ``OpenAI()`` lists the models and the user's own key and usage are read
(conduit_jupyter.hub.UserClient, no master key). It writes what it saw to
``$CONDUIT_TEST_OUT/<user>.json``, then answers HTTP on the port the hub chose until stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from urllib.parse import urlsplit

from conduit_jupyter.hub import UserClient


async def check() -> dict[str, object]:
    seen: dict[str, object] = {
        "OPENAI_BASE_URL": os.environ.get("OPENAI_BASE_URL"),
        "key_prefix": (os.environ.get("OPENAI_API_KEY") or "")[:10],
    }
    import openai  # after the server is up: a slow import

    async with openai.AsyncOpenAI() as client:  # configured by the environment alone
        seen["models"] = [m.id async for m in client.models.list()]
    user = UserClient()
    try:
        me = await user.me()
        seen["me"] = {"user": me["user"], "key": me["key"]["name"], "admin": me["admin"]}
    finally:
        await user.aclose()
    return seen


async def main() -> None:
    user = os.environ["JUPYTERHUB_USER"]
    out = Path(os.environ["CONDUIT_TEST_OUT"]) / f"{user}.json"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    # Up first (the hub waits for it), then what a first notebook does.
    url = urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
    server = await asyncio.start_server(answer, url.hostname, url.port)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # the spawner stops it with SIGINT first
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        seen = await check()
    except Exception as exc:  # reported to the test, which fails with it
        seen = {"error": f"{type(exc).__name__}: {exc}"}
    draft = out.with_suffix(".part")
    draft.write_text(json.dumps(seen), encoding="utf-8")
    draft.replace(out)  # whole or not at all: the test polls for it
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
