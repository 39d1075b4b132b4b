"""The web UI's sessions, with plain HTTP clients: nothing without a session, CSRF on every
state-changing call, cookie flags, only the master key signs in, sessions end on sign-out,
on expiry and with a new master key, and failed sign-ins are slowed down."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import httpx2
import pytest

from conduit_tornado import Gateway
from conduit_tornado.core.security import hash_key
from conduit_tornado.store import MemoryStore, MongoStore, Store
from conduit_tornado.ui.sessions import COLLECTION, COOKIE, CSRF_HEADER, LoginThrottle
from tests.conftest import MASTER_KEY, FakeClock, GatewayFactory, free_port


def _cookie(response: httpx2.Response) -> str:
    header = response.headers.get("set-cookie", "")
    match = re.match(rf"{COOKIE}=([^;]+)", header)
    assert match, header
    return match.group(1)


async def _login(client: httpx2.AsyncClient, key: str = MASTER_KEY) -> httpx2.Response:
    response = await client.post("/ui/api/login", json={"key": key})
    client.cookies.clear()  # each test sends the cookie it means to, in a header
    return response


def _with(session_id: str, **more: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={session_id}", **more}


@pytest.mark.asyncio
async def test_pages_load_without_a_session_but_nothing_else(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway()
    async with httpx2.AsyncClient(base_url=gw.url) as client:
        page = await client.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert (
            (await client.get("/ui/js/app.js"))
            .headers["content-type"]
            .startswith("text/javascript")
        )
        again = await client.get("/ui/", headers={"If-None-Match": page.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert (await client.get("/ui/../pyproject.toml")).status_code == 404
        assert (await client.get("/ui/nothing-here.js")).status_code == 404
        for path in ("/ui/api/health", "/admin/v1/keys"):
            assert (await client.get(path)).status_code == 401, path
        assert (await client.post("/ui/api/logout", json={})).status_code == 401
        # The page's first question is answered without a session (no failed request on
        # every visit to the sign-in page), and answers nothing more than "not signed in".
        anonymous = await client.get("/ui/api/session")
        assert anonymous.status_code == 200
        assert anonymous.json() == {
            "object": "ui.session",
            "via": None,
            "csrf": None,
            "csrf_header": CSRF_HEADER,
            "expires_at": None,
            "hub": False,
        }
        # Credentials that are given and wrong are still refused.
        for token in ("condt_not_the_master_key", MASTER_KEY + "x"):
            wrong = await client.get(
                "/ui/api/session", headers={"Authorization": f"Bearer {token}"}
            )
            assert wrong.status_code == 401


@pytest.mark.asyncio
async def test_only_the_master_key_signs_in(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway()
    async with httpx2.AsyncClient(
        base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as admin:
        created = (await admin.post("/admin/v1/keys", json={"name": "app"})).json()
    async with httpx2.AsyncClient(base_url=gw.url) as client:
        refused = await _login(client, created["key"])
        assert refused.status_code == 401
        assert refused.json()["error"]["param"] == "key"
        assert "set-cookie" not in refused.headers
        assert (await _login(client, "")).status_code == 400


@pytest.mark.asyncio
async def test_cookie_flags_and_csrf(start_gateway: GatewayFactory) -> None:
    store = MemoryStore()
    gw = await start_gateway(store=store)
    async with httpx2.AsyncClient(base_url=gw.url) as client:
        signed_in = await _login(client)
        assert signed_in.status_code == 200
        header = signed_in.headers["set-cookie"]
        assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/;" in header
        assert "Secure" not in header  # plain http on loopback: a Secure cookie would be lost
        assert "expires=" in header.lower()
        session_id = _cookie(signed_in)
        csrf = signed_in.json()["csrf"]

        # The store keeps the hash, never the id itself.
        doc = await store.get(COLLECTION, hash_key(session_id))
        assert doc is not None and session_id not in repr(doc)

        cookies = _with(session_id)
        assert (await client.get("/admin/v1/keys", headers=cookies)).status_code == 200
        session = (await client.get("/ui/api/session", headers=cookies)).json()
        assert session["via"] == "session" and session["csrf"] == csrf
        assert session["hub"] is False  # a plain gateway: the page never asks a hub
        body = {"name": "from-the-browser"}
        missing = await client.post("/admin/v1/keys", json=body, headers=cookies)
        wrong = await client.post(
            "/admin/v1/keys", json=body, headers={**cookies, CSRF_HEADER: "0" * 64}
        )
        assert missing.status_code == wrong.status_code == 401
        made = await client.post(
            "/admin/v1/keys", json=body, headers={**cookies, CSRF_HEADER: csrf}
        )
        assert made.status_code == 201
        # A DELETE is state-changing too.
        key_path = f"/admin/v1/keys/{made.json()['id']}"
        assert (await client.delete(key_path, headers=cookies)).status_code == 401
        deleted = await client.delete(key_path, headers={**cookies, CSRF_HEADER: csrf})
        assert deleted.status_code == 200

        # Signing out ends the session everywhere: the store forgets it.
        out = await client.post("/ui/api/logout", json={}, headers={**cookies, CSRF_HEADER: csrf})
        assert out.status_code == 200 and out.json()["signed_out"] is True
        assert await store.get(COLLECTION, hash_key(session_id)) is None
        assert (await client.get("/admin/v1/keys", headers=cookies)).status_code == 401


@pytest.mark.asyncio
async def test_secure_cookie_behind_a_tls_proxy(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(trust_proxy_headers=True)
    async with httpx2.AsyncClient(base_url=gw.url) as client:
        response = await client.post(
            "/ui/api/login", json={"key": MASTER_KEY}, headers={"X-Forwarded-Proto": "https"}
        )
    assert response.status_code == 200
    assert "Secure" in response.headers["set-cookie"]


@pytest.mark.asyncio
async def test_sessions_expire(start_gateway: GatewayFactory) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    gw = await start_gateway(clock=clock, ui_session_hours=2)
    async with httpx2.AsyncClient(base_url=gw.url) as client:
        cookies = _with(_cookie(await _login(client)))
        clock.advance(2 * 3600 - 60)
        assert (await client.get("/ui/api/session", headers=cookies)).status_code == 200
        clock.advance(120)
        assert (await client.get("/admin/v1/keys", headers=cookies)).status_code == 401
        ended = await client.get("/ui/api/session", headers=cookies)
        assert ended.status_code == 200 and ended.json()["via"] is None


@pytest.mark.asyncio
async def test_a_new_master_key_ends_every_session(
    start_gateway: GatewayFactory, mongo_uri: str
) -> None:
    database = "t_ui_" + uuid.uuid4().hex[:12]
    first = await start_gateway(store=MongoStore(mongo_uri, database))
    async with httpx2.AsyncClient(base_url=first.url) as client:
        cookies = _with(_cookie(await _login(client)))
    # Another instance on the same store accepts the session (sessions live in the store)...
    same: Gateway = await start_gateway(store=MongoStore(mongo_uri, database))
    async with httpx2.AsyncClient(base_url=same.url) as client:
        assert (await client.get("/admin/v1/keys", headers=cookies)).status_code == 200
    # ...and one started with another master key does not.
    rotated = await start_gateway(
        store=MongoStore(mongo_uri, database), master_key="condt_master_rotated_" + "z" * 24
    )
    async with httpx2.AsyncClient(base_url=rotated.url) as client:
        assert (await client.get("/admin/v1/keys", headers=cookies)).status_code == 401


@pytest.mark.asyncio
async def test_failed_sign_ins_are_slowed_down(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway()
    async with httpx2.AsyncClient(base_url=gw.url) as client:
        statuses = [(await _login(client, "condt_master_guess")).status_code for _ in range(4)]
        assert statuses == [401, 401, 401, 401]
        locked = await _login(client)  # even the right key waits out the lock
        assert locked.status_code == 429
        assert int(locked.headers["Retry-After"]) >= 1
        assert "set-cookie" not in locked.headers


def test_throttle_memory_is_bounded_and_backs_off() -> None:
    throttle = LoginThrottle(free=1, max_wait=8, max_addresses=3)
    throttle.failed("a", now=0)
    assert throttle.wait("a", now=0) == 0  # the first failure is free
    throttle.failed("a", now=0)
    throttle.failed("a", now=0)
    assert throttle.wait("a", now=0) == 4
    for _ in range(10):
        throttle.failed("a", now=0)
    assert throttle.wait("a", now=0) == 8  # capped
    for address in ("b", "c", "d"):
        throttle.failed(address, now=0)
    assert len(throttle) == 3 and throttle.wait("a", now=0) == 0  # the oldest was forgotten
    throttle.succeeded("d")
    assert len(throttle) == 2


@pytest.mark.asyncio
async def test_provider_connection_test(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway()
    closed = free_port()  # held, never listening: connections are refused
    async with httpx2.AsyncClient(
        base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as admin:
        for body in (
            {"name": "fine", "type": "mock"},
            {"name": "down", "type": "openai", "base_url": f"http://127.0.0.1:{closed}/v1"},
        ):
            assert (await admin.post("/admin/v1/providers", json=body)).status_code == 201
        fine = await admin.post("/ui/api/providers/fine/test", json={"model": "m"})
        down = await admin.post("/ui/api/providers/down/test", json={"model": "gpt-4o-mini"})
        unmapped = await admin.post("/ui/api/providers/down/test", json={})
        missing = await admin.post("/ui/api/providers/nope/test", json={})
    assert fine.status_code == 200 and fine.json()["ok"] is True
    assert down.status_code == 200 and down.json()["ok"] is False
    assert down.json()["kind"] == "connect"
    assert unmapped.status_code == 400 and unmapped.json()["error"]["param"] == "model"
    assert missing.status_code == 404
    async with httpx2.AsyncClient(base_url=gw.url) as anonymous:
        assert (await anonymous.post("/ui/api/providers/fine/test", json={})).status_code == 401


@pytest.mark.asyncio
async def test_sessions_on_every_store(start_gateway: GatewayFactory, store: Store) -> None:
    """Each store keeps, finds and sweeps sessions: a sign-in removes expired ones."""
    clock = FakeClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    gw = await start_gateway(store=store, clock=clock, ui_session_hours=1)
    async with httpx2.AsyncClient(base_url=gw.url) as client:
        first = _cookie(await _login(client))
        assert (await client.get("/ui/api/session", headers=_with(first))).status_code == 200
        clock.advance(2 * 3600)
        assert await store.get(COLLECTION, hash_key(first)) is not None  # expired, still kept
        second = _cookie(await _login(client))
        assert await store.get(COLLECTION, hash_key(first)) is None  # swept at sign-in
        assert (await client.get("/ui/api/session", headers=_with(second))).status_code == 200
        assert (await client.get("/admin/v1/keys", headers=_with(first))).status_code == 401
        assert (await client.get("/ui/api/session", headers=_with(first))).json()["via"] is None


@pytest.mark.asyncio
async def test_health_shows_deployments_in_cooldown(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(cooldown_failures=1, cooldown_seconds=60, max_retries=0)
    closed = free_port()
    async with httpx2.AsyncClient(
        base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as admin:
        down = {"name": "down", "type": "openai", "base_url": f"http://127.0.0.1:{closed}/v1"}
        await admin.post("/admin/v1/providers", json=down)
        await admin.post(
            "/admin/v1/models",
            json={"name": "m", "deployments": [{"provider": "down", "model": "gpt-4o-mini"}]},
        )
        secret = (await admin.post("/admin/v1/keys", json={"name": "k"})).json()["key"]
        before = (await admin.get("/ui/api/health")).json()
        failed = await admin.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {secret}"},
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
        after = (await admin.get("/ui/api/health")).json()
    assert failed.status_code >= 500
    assert before["store"]["ok"] is True
    assert before["deployments"][0]["cooldown_seconds"] == 0
    [deployment] = after["deployments"]
    assert deployment["provider"] == "down" and deployment["failures"] >= 1
    assert 0 < deployment["cooldown_seconds"] <= 60
