"""Every error is OpenAI's envelope with a JSON content type and a request id."""

from __future__ import annotations

import logging
from typing import Any

import httpx2
import pytest

from conduit_tornado.store import MemoryStore
from tests.conftest import MASTER_KEY, GatewayFactory

pytestmark = pytest.mark.asyncio


def _envelope(r: httpx2.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-request-id"]
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert "Traceback" not in r.text
    return err


async def test_unknown_paths_and_methods(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway()
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        for method in ("GET", "POST", "DELETE", "PATCH"):
            _envelope(await http.request(method, "/v1/nowhere"), 404)
        _envelope(await http.get("/nowhere"), 404)  # "/" answers: api/root.py
        err = _envelope(await http.delete("/v1/models"), 405)
        assert "DELETE" in err["message"]
        _envelope(await http.request("PUT", "/health/live"), 405)
        _envelope(await http.request("BREW", "/v1/models"), 405)


async def test_request_ids_are_echoed_or_generated(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway()
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        given = await http.get("/health/live", headers={"x-request-id": "trace-123"})
        assert given.headers["x-request-id"] == "trace-123"
        hostile = await http.get("/health/live", headers={"x-request-id": "a b\tc" + "x" * 300})
        assert hostile.headers["x-request-id"].startswith("req_")
        a, b = await http.get("/nope"), await http.get("/nope")
        assert a.headers["x-request-id"] != b.headers["x-request-id"]


async def test_body_over_limit_is_413(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(max_admin_request_bytes=4096)
    async with httpx2.AsyncClient(
        base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as http:
        declared = await http.post("/admin/v1/keys", content=b"x" * 5000)
        err = _envelope(declared, 413)
        assert err["code"] == "request_too_large"

        async def chunks() -> Any:  # chunked: no Content-Length to check up front
            for _ in range(10):
                yield b"y" * 1000

        streamed = await http.post("/admin/v1/keys", content=chunks())
        _envelope(streamed, 413)
        ok = await http.post("/admin/v1/keys", json={"name": "fits"})
        assert ok.status_code == 201


class BrokenStore(MemoryStore):
    """A store whose queries fail, to make the handler raise an unexpected exception."""

    async def find(self, collection: str, *args: Any, **kwargs: Any) -> Any:
        if collection == "keys":
            raise RuntimeError("database exploded at /secret/internal/path")
        return await super().find(collection, *args, **kwargs)


async def test_unexpected_exception_is_500_without_details(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await start_gateway(store=BrokenStore())
    caplog.set_level(logging.ERROR, logger="conduit.http")
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        r = await http.get("/admin/v1/keys", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    err = _envelope(r, 500)
    assert err["type"] == "server_error"
    assert "exploded" not in r.text and "/secret" not in r.text
    assert r.headers["x-request-id"] in err["message"]
    assert any("exploded" in (rec.exc_text or "") or rec.exc_info for rec in caplog.records)
