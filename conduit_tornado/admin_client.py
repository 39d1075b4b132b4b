"""An async client for the admin API, shared by the CLI, the widgets and the tests."""

from __future__ import annotations

import functools
import ssl
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx2


class AdminError(Exception):
    """The admin API answered with an error envelope."""

    def __init__(self, status: int, message: str, code: str | None, param: str | None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def unreachable(url: str, exc: Exception) -> AdminError:
    """A transport failure as one sentence with the URL and what to do (no traceback)."""
    what = "timed out" if isinstance(exc, httpx2.TimeoutException) else type(exc).__name__
    return AdminError(
        0,
        f"This client cannot reach the gateway at {url} ({what}). Is it "
        "running? Start it (conduit-tornado serve, or conduit_tornado.start() in a notebook) or "
        "check the URL.",
        "gateway_unreachable",
        None,
    )


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every client: building one reads the whole CA bundle, long
    enough to stall the event loop that makes a client (a notebook's, a server's)."""
    return httpx2.create_ssl_context()


class AdminClient:
    def __init__(self, url: str, master_key: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx2.AsyncClient(
            base_url=url.rstrip("/") + "/admin/v1",
            headers={"Authorization": f"Bearer {master_key}"},
            timeout=timeout,
            verify=_tls(),
        )

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx2.TransportError as exc:
            raise unreachable(self.url, exc) from None  # one error of ours, not anyio's stack
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            err = (data or {}).get("error") or {} if isinstance(data, dict) else {}
            raise AdminError(
                response.status_code,
                err.get("message") or response.text[:200],
                err.get("code"),
                err.get("param"),
            )
        return data

    # keys
    async def create_key(self, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/keys", json=fields)
        return result

    async def list_keys(self, **filters: Any) -> dict[str, Any]:
        params = {
            k: (str(v).lower() if isinstance(v, bool) else v)
            for k, v in filters.items()
            if v is not None
        }
        result: dict[str, Any] = await self._call("GET", "/keys", params=params)
        return result

    async def get_key(self, key_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/keys/{quote(key_id, safe='')}")
        return result

    async def update_key(self, key_id: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "PATCH", f"/keys/{quote(key_id, safe='')}", json=fields
        )
        return result

    async def rotate_key(self, key_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", f"/keys/{quote(key_id, safe='')}/rotate")
        return result

    async def delete_key(self, key_id: str) -> None:
        await self._call("DELETE", f"/keys/{quote(key_id, safe='')}")

    # providers
    async def create_provider(self, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/providers", json=fields)
        return result

    async def list_providers(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/providers")
        return result

    async def delete_provider(self, ref: str) -> None:
        await self._call("DELETE", f"/providers/{quote(ref, safe='')}")

    # models
    async def create_model(self, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/models", json=fields)
        return result

    async def list_models(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/models")
        return result

    async def delete_model(self, name: str) -> None:
        await self._call("DELETE", f"/models/{quote(name, safe='')}")

    # usage and logs
    async def usage(self, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "GET", "/usage", params={k: v for k, v in params.items() if v is not None}
        )
        return result

    async def logs(self, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "GET", "/logs", params={k: v for k, v in params.items() if v is not None}
        )
        return result
