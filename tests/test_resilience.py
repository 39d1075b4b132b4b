"""Retries, fallbacks, cooldown, provider errors, timeouts and broken streams."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx2
import openai
import pytest

from conduit_tornado import AdminClient
from tests.conftest import MASTER_KEY, GatewayFactory
from tests.fakes.providers import API_KEY, FakeProviders
from tests.proxy_setup import Wired, WiredFactory

pytestmark = pytest.mark.asyncio
HI = [{"role": "user", "content": "Say hello"}]
E500 = {"status": 500, "body": {"error": {"message": "boom", "type": "server_error"}}}


async def _post(wired: Wired, body: dict[str, object]) -> httpx2.Response:
    async with httpx2.AsyncClient(base_url=wired.gateway.url, timeout=30) as http:
        return await http.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {wired.key}"}
        )


async def test_retry_after_a_server_error(wired: Wired) -> None:
    wired.fake.then(**E500)
    r = await _post(wired, {"model": "gpt", "messages": HI})
    assert r.status_code == 200 and r.headers["x-conduit-attempts"] == "2"
    assert len(wired.fake.requests) == 2


async def test_retries_are_bounded_and_429_keeps_retry_after(wired: Wired) -> None:
    for _ in range(3):
        wired.fake.then(
            status=429, headers={"Retry-After": "0.01"}, body={"error": {"message": "slow down"}}
        )
    r = await _post(wired, {"model": "gpt", "messages": HI})
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "upstream_rate_limited" and r.headers["Retry-After"] == "1"
    assert len(wired.fake.requests) == 3  # 1 + max_retries(2)


@pytest.mark.parametrize(
    ("directive", "status", "code"),
    [
        (
            {
                "status": 400,
                "body": {"error": {"message": "bad temperature", "param": "temperature"}},
            },
            400,
            None,
        ),
        # A model the provider does not know is the deployment's mistake (502), and the
        # same deployment is not asked again (tests/test_upstream_errors.py).
        (
            {"status": 404, "body": {"error": {"message": "no such model"}}},
            502,
            "upstream_model_not_found",
        ),
        ({"status": 422, "body": {"error": {"message": "unprocessable"}}}, 400, None),
    ],
)
async def test_client_errors_are_not_retried(
    wired: Wired, directive: dict[str, object], status: int, code: str | None
) -> None:
    wired.fake.then(**directive)
    r = await _post(wired, {"model": "gpt", "messages": HI})
    assert r.status_code == status and len(wired.fake.requests) == 1
    assert r.json()["error"]["code"] == code


async def test_upstream_auth_failure_is_a_gateway_error(
    start_gateway: GatewayFactory, fake: FakeProviders
) -> None:
    gw = await start_gateway(max_retries=0)
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        await admin.create_provider(
            name="bad", type="openai", base_url=fake.url + "/v1", api_key="sk-wrong-secret"
        )
        await admin.create_model(name="m", deployments=[{"provider": "bad", "model": "gpt-4o"}])
        key = (await admin.create_key(name="k"))["key"]
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        r = await http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": HI},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert r.status_code == 502  # never the client's 401: its key was fine
    assert r.json()["error"]["code"] == "upstream_auth_error"
    assert "sk-wrong-secret" not in r.text and fake.url not in r.text and "127.0.0.1" not in r.text


async def test_unreachable_provider(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(max_retries=1, retry_backoff=0.01)
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        await admin.create_provider(
            name="down", type="openai", base_url="http://127.0.0.1:9/v1", api_key="x"
        )
        await admin.create_model(name="m", deployments=[{"provider": "down", "model": "gpt-4o"}])
        key = (await admin.create_key(name="k"))["key"]
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="m", messages=HI)  # type: ignore[arg-type]
    assert info.value.status_code == 502
    assert "127.0.0.1:9" not in str(info.value.body)


async def test_fallback_model_and_cooldown(wired: Wired) -> None:
    await wired.admin.create_provider(
        name="flaky", type="openai", base_url=wired.fake.url + "/v1", api_key=API_KEY
    )
    await wired.admin.create_model(
        name="primary",
        deployments=[{"provider": "flaky", "model": "gpt-4o-flaky"}],
        fallbacks=["claude"],
    )
    for _ in range(3):
        wired.fake.then(**E500, for_model="gpt-4o-flaky")
    r = await _post(wired, {"model": "primary", "messages": HI})
    assert r.status_code == 200
    assert r.json()["model"] == "primary"  # the client's name, even when a fallback answered
    assert r.headers["x-conduit-provider"] == "ant" and r.headers["x-conduit-attempts"] == "2"
    # Two more failures cool the flaky deployment down (3 in a row)...
    for _ in range(2):
        assert (await _post(wired, {"model": "primary", "messages": HI})).status_code == 200
    gw = wired.gateway.ctx
    assert gw is not None
    health = gw.router.health("flaky", "gpt-4o-flaky")
    assert health.failures == 3 and health.cooled_until > 0
    # ...so the next request goes to the fallback first, without touching it.
    before = len(wired.fake.requests)
    r = await _post(wired, {"model": "primary", "messages": HI})
    assert r.headers["x-conduit-provider"] == "ant"
    assert [s.path for s in wired.fake.requests[before:]] == ["/v1/messages"]


async def test_weighted_deployments_and_failover_within_a_model(wired: Wired) -> None:
    await wired.admin.create_model(
        name="pair",
        strategy="round_robin",
        deployments=[
            {"provider": "oai", "model": "gpt-4o"},
            {"provider": "ant", "model": "claude-sonnet-4-5"},
        ],
    )
    seen = set()
    for _ in range(4):
        r = await _post(wired, {"model": "pair", "messages": HI})
        seen.add(r.headers["x-conduit-provider"])
    assert seen == {"oai", "ant"}
    await wired.admin.create_model(
        name="prio",
        deployments=[
            {"provider": "oai", "model": "gpt-4o", "priority": 0},
            {"provider": "ant", "model": "claude-sonnet-4-5", "priority": 1},
        ],
    )
    for _ in range(3):
        assert (await _post(wired, {"model": "prio", "messages": HI})).headers[
            "x-conduit-provider"
        ] == "oai"
    wired.fake.then(**E500)
    r = await _post(wired, {"model": "prio", "messages": HI})
    assert r.headers["x-conduit-provider"] == "ant"  # lower priority takes over at once


async def test_plans_follow_admin_changes_at_once(wired: Wired) -> None:
    # The router keeps each model's targets per catalog snapshot: an edit must show.
    await wired.admin.create_model(
        name="moving", deployments=[{"provider": "oai", "model": "gpt-4o"}]
    )
    assert (await _post(wired, {"model": "moving", "messages": HI})).headers[
        "x-conduit-provider"
    ] == "oai"
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    async with httpx2.AsyncClient(base_url=wired.gateway.url, headers=admin) as http:
        r = await http.patch(
            "/admin/v1/models/moving",
            json={"deployments": [{"provider": "ant", "model": "claude-sonnet-4-5"}]},
        )
        assert r.status_code == 200, r.text
        assert (await _post(wired, {"model": "moving", "messages": HI})).headers[
            "x-conduit-provider"
        ] == "ant"
        assert (await http.patch("/admin/v1/providers/ant", json={"enabled": False})).is_success
    r = await _post(wired, {"model": "moving", "messages": HI})
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_deployment_available"


async def test_slow_first_byte_times_out_and_fails_over(wired: Wired) -> None:
    await wired.admin.create_model(
        name="slow",
        deployments=[
            {"provider": "oai", "model": "gpt-4o", "first_byte_timeout": 0.2},
            {"provider": "ant", "model": "claude-sonnet-4-5", "priority": 1},
        ],
    )
    wired.fake.then(delay=1.0)
    r = await _post(wired, {"model": "slow", "messages": HI})
    assert r.status_code == 200 and r.headers["x-conduit-provider"] == "ant"
    wired.fake.then(delay=1.0)
    r = await _post(wired, {"model": "slow", "messages": HI, "stream": True})
    assert r.status_code == 200 and r.headers["x-conduit-provider"] == "ant"


async def test_total_timeout_is_504(wired_with: WiredFactory, fake: FakeProviders) -> None:
    w = await wired_with(max_retries=0)
    await w.admin.create_model(
        name="t", deployments=[{"provider": "oai", "model": "gpt-4o", "timeout": 0.2}]
    )
    fake.then(delay=1.0)
    r = await _post(w, {"model": "t", "messages": HI})
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"


async def test_no_retry_after_the_first_streamed_byte(wired: Wired) -> None:
    wired.fake.then(drop_after=3)
    async with wired.client() as client:
        stream = await client.chat.completions.create(model="gpt", messages=HI, stream=True)  # type: ignore[arg-type]
        got: list[str] = []

        async def drain() -> None:
            async for chunk in stream:
                got.extend(c.delta.content or "" for c in chunk.choices)

        with pytest.raises(openai.APIError):
            await drain()
    assert "".join(got) == "Hello from"  # what arrived before the break, then an error event
    assert len(wired.fake.requests) == 1


async def test_malformed_stream_event(wired: Wired) -> None:
    wired.fake.then(malformed=True)
    r = await _post(wired, {"model": "gpt", "messages": HI, "stream": True})
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    error = json.loads(events[-1])
    assert error["error"]["code"] == "upstream_error" and "[DONE]" not in events


async def test_events_before_a_failure_in_the_same_read_still_go_out(wired: Wired) -> None:
    # The relay takes every event of a network read at once; a bad one among them must
    # not swallow those before it.
    wired.fake.then(malformed=True, burst=True)
    r = await _post(wired, {"model": "gpt", "messages": HI, "stream": True})
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    first = json.loads(events[0])
    assert first["choices"][0]["delta"].get("role") == "assistant"
    assert json.loads(events[-1])["error"]["code"] == "upstream_error"
    assert len(events) == 2  # the first event, then the error; nothing after the bad one


async def test_client_disconnect_cancels_upstream_and_still_bills(wired: Wired) -> None:
    wired.fake.then(chunk_delay=0.2)
    async with wired.stream({"model": "gpt", "messages": HI, "stream": True}) as r:
        async for line in r.aiter_lines():
            if "Hello" in line:
                break  # leave after the first words
    for _ in range(100):
        if wired.fake.disconnected:
            break
        await asyncio.sleep(0.05)
    assert wired.fake.disconnected == 1  # the gateway stopped reading and hung up upstream
    ctx = wired.gateway.ctx
    assert ctx is not None
    await ctx.recorder.flush()
    logs = await ctx.store.find("request_logs", {})
    assert len(logs) == 1
    assert logs[0]["status"] == 499 and logs[0]["error_code"] == "client_disconnected"
    assert (
        logs[0]["estimated"] is True and logs[0]["completion_tokens"] >= 1 and logs[0]["cost"] > 0
    )


async def test_keepalive_comments_during_silence(
    wired_with: WiredFactory, fake: FakeProviders
) -> None:
    w = await wired_with(sse_keepalive=0.05)
    fake.then(chunk_delay=0.25)
    r = await _post(w, {"model": "gpt", "messages": HI, "stream": True})
    assert ": keepalive" in r.text and r.text.rstrip().endswith("data: [DONE]")


async def test_shutdown_lets_in_flight_requests_finish(
    wired_with: WiredFactory, fake: FakeProviders
) -> None:
    w = await wired_with()
    gw = w.gateway
    fake.then(delay=0.5)
    pending = asyncio.ensure_future(_post(w, {"model": "gpt", "messages": HI}))
    for _ in range(500):  # until the request is at the provider, i.e. in flight
        if fake.requests:
            break
        await asyncio.sleep(0.01)
    ctx = gw.ctx
    assert ctx is not None and ctx.in_flight.requests == 1
    store = ctx.store
    await gw.stop()
    r = await pending
    assert r.status_code == 200
    assert len(await store.find("request_logs", {})) == 1  # flushed on the way out


async def test_lowest_latency_prefers_the_faster_deployment(wired: Wired) -> None:
    await wired.admin.create_model(
        name="lat",
        strategy="lowest_latency",
        deployments=[
            {"provider": "oai", "model": "gpt-4o"},
            {"provider": "ant", "model": "claude-sonnet-4-5"},
        ],
    )
    for _ in range(6):
        wired.fake.then(delay=0.15, for_model="claude-sonnet-4-5")
    providers = [
        (await _post(wired, {"model": "lat", "messages": HI})).headers["x-conduit-provider"]
        for _ in range(6)
    ]
    # Each is measured once (unmeasured ones go first), then the fast one wins every time.
    assert set(providers[:2]) == {"oai", "ant"}
    assert providers[2:] == ["oai"] * 4


async def test_least_busy_avoids_the_deployment_with_requests_in_flight(wired: Wired) -> None:
    await wired.admin.create_model(
        name="busy",
        strategy="least_busy",
        deployments=[
            {"provider": "oai", "model": "gpt-4o"},
            {"provider": "ant", "model": "claude-sonnet-4-5"},
        ],
    )
    wired.fake.then(delay=0.6, for_model="gpt-4o").then(delay=0.6, for_model="claude-sonnet-4-5")
    slow = asyncio.ensure_future(_post(wired, {"model": "busy", "messages": HI}))
    for _ in range(500):  # until the slow one is in flight at the fake
        if wired.fake.requests:
            break
        await asyncio.sleep(0.01)
    first = wired.fake.requests[-1].body["model"]
    quick = await _post(wired, {"model": "busy", "messages": HI})
    other = {"gpt-4o": "ant", "claude-sonnet-4-5": "oai"}[first]
    assert quick.headers["x-conduit-provider"] == other
    assert (await slow).status_code == 200


async def test_connect_timeout_per_deployment(
    wired_with: WiredFactory, fake: FakeProviders
) -> None:
    # A listener whose one-slot backlog is taken: connecting to it hangs, never refuses.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    blocker = socket.create_connection(listener.getsockname())
    # The global connect timeout outlasts the whole request: only the deployment's own
    # connect_timeout leaves time to fail over (otherwise this is a 504).
    w = await wired_with(connect_timeout=30, request_timeout=3)
    try:
        host, port = listener.getsockname()
        await w.admin.create_provider(
            name="stuck", type="openai", base_url=f"http://{host}:{port}/v1", api_key="x"
        )
        await w.admin.create_model(
            name="ct",
            deployments=[
                {"provider": "stuck", "model": "m", "connect_timeout": 0.2},
                {"provider": "oai", "model": "gpt-4o", "priority": 1},
            ],
        )
        r = await _post(w, {"model": "ct", "messages": HI})
        assert r.status_code == 200 and r.headers["x-conduit-provider"] == "oai"
    finally:
        blocker.close()
        listener.close()
