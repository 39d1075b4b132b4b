"""WebRTC realtime calls: POST /v1/realtime/calls relays the SDP offer, the gateway meters
the call on the provider's sideband, and a client may attach its own sideband with
/v1/realtime?call_id= (the official SDK as client, a fake OpenAI realtime on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from conduit_tornado import Gateway
from tests.conftest import GatewayFactory, settled
from tests.fakes.realtime import ANSWER, FakeRealtime
from tests.realtime_setup import RT, setup_realtime

pytestmark = pytest.mark.asyncio

OFFER = (
    "v=0\r\no=- 123 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
)
# The fake's usage (40 text + 60 audio in, 10 text + 40 audio out) at gpt-realtime's
# bundled prices ($4 / $32 in, $16 / $64 out per million).
COST = (40 * 4 + 60 * 32 + 10 * 16 + 40 * 64) / 1e6


@pytest_asyncio.fixture
async def calls(start_gateway: GatewayFactory, fake_realtime: FakeRealtime) -> AsyncIterator[RT]:
    env, admin = await setup_realtime(start_gateway, fake_realtime)
    await admin.create_provider(name="mock", type="mock")
    await admin.create_model(name="rt-mock", deployments=[{"provider": "mock", "model": "m"}])
    yield env
    await admin.aclose()


def _client(env: RT, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=env.gw.url + "/v1", api_key=key, max_retries=0)


async def _call_logs(gw: Gateway, call_id: str, count: int) -> list[dict[str, Any]]:
    """The request logs of a call's responses, once there are ``count`` of them."""
    assert gw.ctx is not None
    for _ in range(200):
        await gw.ctx.recorder.flush()
        logs = await gw.ctx.store.find("request_logs", {"call_id": call_id})
        if len(logs) >= count:
            return logs
        await asyncio.sleep(0.025)
    raise AssertionError(f"{call_id}: {count} responses were not charged")


async def _wait(check: Any) -> None:
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError("timed out")


async def _create(env: RT, key: str, **kwargs: Any) -> tuple[str, str]:
    async with _client(env, key) as client:
        raw = await client.realtime.calls.with_raw_response.create(sdp=OFFER, **kwargs)
    assert raw.status_code == 201
    assert raw.headers["content-type"].startswith("application/sdp")
    location = raw.headers["location"]
    assert location.startswith("/v1/realtime/calls/rtc_")
    return raw.content.decode(), location.rsplit("/", 1)[1]


async def test_a_call_is_relayed_and_metered_on_the_sideband(calls: RT) -> None:
    answer, call_id = await _create(
        calls, calls.key, session={"type": "realtime", "model": "rt", "instructions": "Be a fox."}
    )
    assert answer == ANSWER
    (upstream,) = calls.fake.calls.values()
    assert upstream.sdp == OFFER
    assert upstream.session["model"] == "gpt-realtime"  # the deployment's, not the virtual
    assert upstream.session["type"] == "realtime"
    assert upstream.session["instructions"] == "Be a fox."
    assert upstream.headers["authorization"] == "Bearer sk-fake-upstream-key"
    assert upstream.id != call_id  # the provider's id stays inside the gateway
    # The gateway's own sideband is open before the answer is returned.
    assert [c.query for c in calls.fake.conns] == [{"call_id": upstream.id}]

    assert calls.fake.respond(upstream.id) == 1  # the model answers over the media path
    (entry,) = await _call_logs(calls.gw, call_id, 1)
    assert entry["key_id"] == calls.key_id and entry["endpoint"] == "realtime"
    assert entry["model"] == "rt" and entry["prompt_tokens"] == 100
    assert entry["cost"] == pytest.approx(COST)
    await settled(calls.gw)
    spent = await calls.admin.get_key(calls.key_id)
    assert spent["spend"] == pytest.approx(COST)

    # The client's own sideband through the gateway: events both ways, charged once.
    async with (
        _client(calls, calls.key) as client,
        client.realtime.connect(call_id=call_id) as conn,
    ):
        assert (await conn.recv()).type == "session.created"
        await conn.send({"type": "response.create"})
        async for event in conn:
            if event.type == "response.done":
                break
    assert calls.fake.conns[-1].query == {"call_id": upstream.id}
    logs = await _call_logs(calls.gw, call_id, 2)
    await asyncio.sleep(0.1)  # a second charge of the same response would land by now
    await calls.gw.ctx.recorder.flush()  # type: ignore[union-attr]
    assert len(await calls.gw.ctx.store.find("request_logs", {"call_id": call_id})) == 2  # type: ignore[union-attr]
    assert len(logs) == 2

    # The client hangs up through the gateway; the provider ends the sideband.
    async with _client(calls, calls.key) as client:
        await client.realtime.calls.hangup(call_id)
    assert upstream.hung_up

    async def ended() -> bool:
        doc = await calls.gw.ctx.store.get("realtime_calls", call_id)  # type: ignore[union-attr]
        return doc is not None and doc["status"] == "ended"

    await _wait(ended)
    doc = await calls.gw.ctx.store.get("realtime_calls", call_id)  # type: ignore[union-attr]
    assert doc["responses"] == 2 and doc["cost"] == pytest.approx(2 * COST)


async def test_an_exhausted_budget_hangs_the_call_up(calls: RT) -> None:
    created = await calls.admin.create_key(name="small", max_budget=COST * 1.5)
    _, call_id = await _create(calls, created["key"], session={"type": "realtime", "model": "rt"})
    (upstream,) = calls.fake.calls.values()
    calls.fake.respond(upstream.id)
    await _call_logs(calls.gw, call_id, 1)
    assert not upstream.hung_up  # under the budget: the call goes on
    calls.fake.respond(upstream.id)
    await _call_logs(calls.gw, call_id, 2)

    async def hung_up() -> bool:
        return upstream.hung_up

    await _wait(hung_up)

    async def ended() -> bool:
        doc = await calls.gw.ctx.store.get("realtime_calls", call_id)  # type: ignore[union-attr]
        return doc is not None and doc.get("ended_by") == "budget"

    await _wait(ended)
    # Its key is over budget now: a new call is refused before the provider hears of it.
    with pytest.raises(openai.RateLimitError):
        await _create(calls, created["key"], session={"type": "realtime", "model": "rt"})
    assert len(calls.fake.calls) == 1


async def test_a_client_secret_makes_one_call(calls: RT) -> None:
    async with _client(calls, calls.key) as client:
        minted = await client.realtime.client_secrets.create(
            session={"type": "realtime", "model": "rt", "instructions": "Be an owl."}
        )
    # The SDK sends a bare application/sdp body when no session is given.
    answer, call_id = await _create(calls, minted.value)
    assert answer == ANSWER
    (upstream,) = calls.fake.calls.values()
    assert upstream.session["instructions"] == "Be an owl."
    assert upstream.session["model"] == "gpt-realtime"
    calls.fake.respond(upstream.id)
    (entry,) = await _call_logs(calls.gw, call_id, 1)
    assert entry["key_id"] == calls.key_id  # charged to the key that minted the secret
    with pytest.raises(openai.AuthenticationError):  # single use
        await _create(calls, minted.value)
    async with _client(calls, calls.key) as client:
        other = await client.realtime.client_secrets.create(
            session={"type": "realtime", "model": "rt"}
        )
    with pytest.raises(openai.PermissionDeniedError):  # bound to its model
        await _create(calls, other.value, session={"type": "realtime", "model": "rt-azure"})
    answer, _ = await _create(calls, other.value)  # not spent by the refusal
    assert answer == ANSWER


async def test_the_mock_provider_answers_calls(calls: RT) -> None:
    answer, call_id = await _create(
        calls, calls.key, session={"type": "realtime", "model": "rt-mock"}
    )
    assert answer.startswith("v=0")
    async with (
        _client(calls, calls.key) as client,
        client.realtime.connect(call_id=call_id) as conn,
    ):
        assert (await conn.recv()).type == "session.created"


async def test_bad_offers_and_strangers_are_refused(calls: RT) -> None:
    auth = {"Authorization": f"Bearer {calls.key}"}
    session = '{"type": "realtime", "model": "rt"}'
    async with httpx2.AsyncClient(base_url=calls.gw.url, headers=auth) as http:
        for content, ctype, param in [
            (b"hello", "application/sdp", "sdp"),  # not SDP
            (OFFER.encode(), "application/sdp", "session.model"),  # a key needs a session
            (b'{"sdp": "v=0"}', "application/json", "sdp"),
        ]:
            r = await http.post(
                "/v1/realtime/calls", content=content, headers={"Content-Type": ctype}
            )
            assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        for files, param in [
            ({"sdp": (None, "not sdp"), "session": (None, session)}, "sdp"),
            ({"sdp": (None, OFFER), "session": (None, "{nope")}, "session"),
            ({"sdp": (None, OFFER), "session": (None, '{"type": "transcription"}')}, None),
            ({"session": (None, session)}, "sdp"),
            (
                {
                    "sdp": (None, OFFER),
                    "session": (None, '{"type": "realtime", "model": "rt-azure"}'),
                },
                "model",
            ),
        ]:
            r = await http.post("/v1/realtime/calls", files=files)
            assert r.status_code == 400, r.text
            if param:
                assert r.json()["error"]["param"] == param, r.text
        r = await http.post("/v1/realtime/calls", files={"sdp": (None, OFFER)})
        assert r.status_code == 400
        assert (await http.post("/v1/realtime/calls/rtc_nope/hangup")).status_code == 404
    assert calls.fake.calls == {}  # none reached the provider
    # Another key cannot attach to, or hang up, this key's call.
    _, call_id = await _create(calls, calls.key, session={"type": "realtime", "model": "rt"})
    stranger = (await calls.admin.create_key(name="stranger"))["key"]
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            f"ws://127.0.0.1:{calls.gw.port}/v1/realtime?call_id={call_id}",
            additional_headers={"Authorization": f"Bearer {stranger}"},
        ):
            pass
    assert refused.value.response.status_code == 404
    async with _client(calls, stranger) as client:
        with pytest.raises(openai.NotFoundError):
            await client.realtime.calls.hangup(call_id)
    (upstream,) = calls.fake.calls.values()
    assert not upstream.hung_up
