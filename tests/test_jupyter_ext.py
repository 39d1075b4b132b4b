"""The gateway mounted in Jupyter Server by the extension (pytest-jupyter).

These tests are synchronous and drive pytest-jupyter's own loop, the one the server runs
on (an async test would wait on pytest-asyncio's loop while the server's sat idle)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

from tests.conftest import MASTER_KEY
from tests.fakes.providers import API_KEY, FakeProviders

T = TypeVar("T")


@pytest.fixture
def jp_server_config(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("CONDUIT_MASTER_KEY", MASTER_KEY)
    return {"ServerApp": {"jpserver_extensions": {"conduit_jupyter": True}}}


@pytest.fixture
def run(jp_asyncio_loop: asyncio.AbstractEventLoop, jp_serverapp: Any) -> Any:
    def runner(coro: Coroutine[Any, Any, T]) -> T:
        return jp_asyncio_loop.run_until_complete(coro)

    # What ServerApp.start_ioloop does once the loop runs (pytest-jupyter stops short of it):
    # start extensions, which builds the gateway's context on Jupyter's loop.
    runner(jp_serverapp.extension_manager.start_all_extensions())
    return runner


def call(jp_fetch: Any, *path: str, **kwargs: Any) -> HTTPResponse:
    """jp_fetch, but returning error responses instead of raising."""

    async def go() -> HTTPResponse:
        try:
            response: HTTPResponse = await jp_fetch(*path, **kwargs)
            return response
        except HTTPClientError as exc:
            if exc.response is None:
                raise
            return exc.response

    return go()  # type: ignore[return-value]


def provision(run: Any, jp_fetch: Any, provider: dict[str, Any], model: dict[str, Any]) -> str:
    """Create a provider, a model and a key through the mounted admin API; return the key."""
    for path, body in (("providers", provider), ("models", model), ("keys", {"name": "k"})):
        r = run(
            call(
                jp_fetch,
                "conduit",
                "admin",
                "v1",
                path,
                method="POST",
                body=json.dumps(body),
                headers=bearer(MASTER_KEY),
            )
        )
        assert r.code == 201, (path, r.body)
    key: str = json.loads(r.body)["key"]
    return key


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_virtual_keys_and_the_admin_api_through_jupyter(run: Any, jp_fetch: Any) -> None:
    created = run(
        call(
            jp_fetch,
            "conduit",
            "admin",
            "v1",
            "keys",
            method="POST",
            body=json.dumps({"name": "nb"}),
            headers=bearer(MASTER_KEY),
        )
    )
    assert created.code == 201  # a Bearer POST needs no XSRF token
    key = json.loads(created.body)["key"]
    models = run(call(jp_fetch, "conduit", "v1", "models", headers=bearer(key)))
    assert models.code == 200 and json.loads(models.body) == {"object": "list", "data": []}
    assert models.headers["Content-Type"].startswith("application/json")

    # jp_fetch sends Jupyter's own token: it is neither required nor a virtual key.
    jupyter_token = run(call(jp_fetch, "conduit", "v1", "models"))
    assert (
        jupyter_token.code == 401
        and json.loads(jupyter_token.body)["error"]["code"] == "invalid_api_key"
    )
    # A virtual key never opens the admin API, and Jupyter's token does not either.
    assert run(call(jp_fetch, "conduit", "admin", "v1", "keys", headers=bearer(key))).code == 401
    assert run(call(jp_fetch, "conduit", "admin", "v1", "keys")).code == 401


def test_errors_are_openai_json_not_jupyter_html(run: Any, jp_fetch: Any) -> None:
    for path, method, status in (
        (("conduit", "v1", "nowhere"), "GET", 404),
        (("conduit", "v1", "models"), "DELETE", 405),
        (("conduit",), "GET", 404),
    ):
        r = run(call(jp_fetch, *path, method=method, headers=bearer(MASTER_KEY)))
        assert r.code == status, path
        assert r.headers["Content-Type"].startswith("application/json")
        assert set(json.loads(r.body)["error"]) == {"message", "type", "param", "code"}


def test_cookie_sessions_are_admins_with_xsrf(
    run: Any, jp_fetch: Any, jp_serverapp: Any, jp_base_url: str
) -> None:
    # Log in as a browser would: the token sets Jupyter's login cookie.
    url = f"http://127.0.0.1:{jp_serverapp.port}{jp_base_url}"
    client = AsyncHTTPClient()
    token = jp_serverapp.identity_provider.token
    login = run(client.fetch(f"{url}api/status?token={token}", raise_error=False))
    cookies = "; ".join(c.split(";")[0] for c in login.headers.get_list("Set-Cookie"))
    page = run(client.fetch(f"{url}lab?token={token}", raise_error=False, follow_redirects=False))
    xsrf = next(
        (
            c.split(";")[0].split("=", 1)[1]
            for c in page.headers.get_list("Set-Cookie")
            if c.startswith("_xsrf=")
        ),
        None,
    )
    assert "username-" in cookies and xsrf
    cookie = f"{cookies}; _xsrf={xsrf}"

    def admin(method: str, body: str | None = None, **headers: str) -> HTTPResponse:
        request = HTTPRequest(
            f"{url}conduit/admin/v1/keys",
            method=method,
            body=body,
            headers={"Cookie": cookie, **headers},
        )
        return run(client.fetch(request, raise_error=False))  # type: ignore[no-any-return]

    assert admin("GET").code == 200  # the logged-in Jupyter user may read
    refused = admin("POST", json.dumps({"name": "forged"}))
    assert refused.code == 403 and refused.headers["Content-Type"].startswith("application/json")
    ok = admin("POST", json.dumps({"name": "from-lab"}), **{"X-XSRFToken": xsrf})
    assert ok.code == 201 and json.loads(ok.body)["name"] == "from-lab"
    no_cookie = run(client.fetch(HTTPRequest(f"{url}conduit/admin/v1/keys"), raise_error=False))
    assert no_cookie.code == 401


def test_sse_streams_through_jupyter(
    run: Any, jp_fetch: Any, jp_serverapp: Any, jp_base_url: str
) -> None:
    fake = FakeProviders()
    run(fake.start())
    try:
        key = provision(
            run,
            jp_fetch,
            {"name": "oai", "type": "openai", "base_url": fake.url + "/v1", "api_key": API_KEY},
            {"name": "gpt", "deployments": [{"provider": "oai", "model": "gpt-4o"}]},
        )
        fake.then(chunk_delay=0.05)  # events spaced out: each must arrive on its own
        chunks: list[bytes] = []
        request = HTTPRequest(
            f"http://127.0.0.1:{jp_serverapp.port}{jp_base_url}conduit/v1/chat/completions",
            method="POST",
            body=json.dumps(
                {"model": "gpt", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
            ),
            headers=bearer(key),
            streaming_callback=chunks.append,
        )
        response = run(AsyncHTTPClient().fetch(request))
        assert response.headers["Content-Type"].startswith("text/event-stream")
        # The gateway's own headers reach clients through Jupyter's server as well.
        assert response.headers["x-conduit-provider"] == "oai"
        text = b"".join(chunks).decode()
        assert text.rstrip().endswith("data: [DONE]") and "Hello" in text
        assert len(chunks) >= 5  # delivered event by event, not buffered whole
    finally:
        run(fake.stop())


def test_realtime_websocket_through_jupyter(
    run: Any, jp_fetch: Any, jp_serverapp: Any, jp_base_url: str
) -> None:
    from websockets.asyncio.client import connect

    key = provision(
        run,
        jp_fetch,
        {"name": "m", "type": "mock"},
        {"name": "rt", "deployments": [{"provider": "m", "model": "mock-rt"}]},
    )

    async def session() -> list[str]:
        url = f"ws://127.0.0.1:{jp_serverapp.port}{jp_base_url}conduit/v1/realtime?model=rt"
        async with connect(url, additional_headers=bearer(key)) as ws:
            kinds = [json.loads(await ws.recv())["type"]]
            await ws.send(json.dumps({"type": "response.create"}))
            while kinds[-1] != "response.done":
                kinds.append(json.loads(await ws.recv())["type"])
            return kinds

    kinds = run(session())
    assert kinds[0] == "session.created" and kinds[-1] == "response.done"
    assert "response.output_audio.delta" in kinds
