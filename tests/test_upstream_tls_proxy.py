"""Provider calls honour the environment's proxies (HTTP_PROXY, HTTPS_PROXY, NO_PROXY),
trust CONDUIT_CA_BUNDLE on top of the system's store, and present a provider's client
certificate (options.client_cert / options.client_key), against loopback TLS servers and
a loopback forward proxy."""

from __future__ import annotations

from pathlib import Path

import pytest

from conduit_tornado.core.settings import Settings
from conduit_tornado.routing.clients import (
    ClientConfigError,
    client_identity,
    env_proxy,
    load_ca_bundle,
)
from conduit_tornado.routing.upstream import ProviderError, Timeouts, Upstream
from tests.fakes.proxy import LoopbackProxy
from tests.fakes.raw import fixed, serving
from tests.fakes.tls import Pki, make_pki

T = Timeouts(connect=5.0, first_byte=None, total=10.0)
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


@pytest.mark.asyncio
async def test_http_proxy_carries_plain_http_calls(no_proxy_env: pytest.MonkeyPatch) -> None:
    proxy = await LoopbackProxy().start()
    no_proxy_env.setenv("HTTP_PROXY", proxy.url)
    try:
        async with serving(fixed()) as (server, upstream):
            answer = await upstream.request_json("p", "POST", server.url + "/v1/x", T, json={})
            assert answer == {"ok": True}
            assert proxy.seen == [f"POST {server.url}/v1/x HTTP/1.1"]
            assert len(server.requests) == 1
    finally:
        await proxy.stop()


@pytest.mark.asyncio
async def test_no_proxy_sends_listed_hosts_direct(no_proxy_env: pytest.MonkeyPatch) -> None:
    proxy = await LoopbackProxy().start()
    no_proxy_env.setenv("HTTP_PROXY", proxy.url)
    no_proxy_env.setenv("NO_PROXY", "127.0.0.1")
    try:
        async with serving(fixed()) as (server, upstream):
            await upstream.request_json("p", "POST", server.url, T, json={})
            assert proxy.seen == [] and len(server.requests) == 1
    finally:
        await proxy.stop()


@pytest.mark.asyncio
async def test_https_proxy_tunnels_tls_calls(no_proxy_env: pytest.MonkeyPatch, pki: Pki) -> None:
    proxy = await LoopbackProxy().start()
    no_proxy_env.setenv("HTTPS_PROXY", proxy.url)
    try:
        async with serving(fixed(), pki.server_context(), ca_bundle=pki.ca) as (server, up):
            url = f"https://localhost:{server.port}/v1"
            assert await up.request_json("p", "POST", url, T, json={}) == {"ok": True}
            assert proxy.seen == [f"CONNECT localhost:{server.port} HTTP/1.1"]
    finally:
        await proxy.stop()


@pytest.mark.asyncio
async def test_the_ca_bundle_decides_whether_a_private_ca_is_trusted(
    no_proxy_env: pytest.MonkeyPatch, pki: Pki
) -> None:
    async with serving(fixed(), pki.server_context()) as (server, untrusting):
        url = f"https://localhost:{server.port}/v1"
        with pytest.raises(ProviderError) as caught:
            await untrusting.request_json("p", "POST", url, T, json={})
        assert caught.value.kind == "connect"  # nobody vouches for this certificate
        assert server.requests == []
        trusting = Upstream(Settings(ca_bundle=pki.ca))
        try:
            assert await trusting.request_json("p", "POST", url, T, json={}) == {"ok": True}
        finally:
            await trusting.close()


@pytest.mark.parametrize("as_text", [False, True])
@pytest.mark.asyncio
async def test_a_providers_client_certificate_is_presented(
    no_proxy_env: pytest.MonkeyPatch, pki: Pki, as_text: bool
) -> None:
    context = pki.server_context(require_client_cert=True)
    async with serving(fixed(), context, ca_bundle=pki.ca) as (server, upstream):
        url = f"https://localhost:{server.port}/v1"
        with pytest.raises(ProviderError):
            await upstream.request_json("anonymous", "POST", url, T, json={})
        assert server.requests == []
        cert, key = (
            (pki.client_cert.read_text(), pki.client_key.read_text())
            if as_text
            else (str(pki.client_cert), str(pki.client_key))
        )
        upstream.configure("mtls", {"client_cert": cert, "client_key": key})
        assert await upstream.request_json("mtls", "POST", url, T, json={}) == {"ok": True}
        assert len(server.requests) == 1


@pytest.mark.asyncio
async def test_a_broken_client_certificate_fails_that_providers_calls_only(pki: Pki) -> None:
    async with serving(fixed()) as (server, upstream):
        upstream.configure("broken", {"client_cert": str(pki.client_cert)})
        with pytest.raises(ProviderError) as caught:
            await upstream.request_json("broken", "POST", server.url, T, json={})
        assert caught.value.kind == "config" and "client_key" in caught.value.message
        assert await upstream.request_json("fine", "POST", server.url, T, json={})
        assert len(server.requests) == 1


def test_client_certificate_options_are_checked(pki: Pki, tmp_path: Path) -> None:
    cert, key = str(pki.client_cert), str(pki.client_key)
    assert client_identity({}) is None
    assert client_identity({"client_cert": cert, "client_key": key}) is not None
    cases: list[tuple[dict[str, object], str]] = [
        ({"client_cert": cert}, "client_key"),
        ({"client_key": key}, "client_cert"),
        ({"client_cert": str(tmp_path / "missing.pem"), "client_key": key}, "client_cert"),
        ({"client_cert": key, "client_key": key}, "client_cert"),  # a key is no certificate
        ({"client_cert": cert, "client_key": cert}, "client_key"),
        ({"client_cert": 42, "client_key": key}, "client_cert"),
        ({"client_cert": "", "client_key": key}, "client_cert"),
    ]
    for options, param in cases:
        with pytest.raises(ClientConfigError) as caught:
            client_identity(options)
        assert caught.value.param == param, options
        assert "BEGIN" not in str(caught.value)  # never echoes key material


def test_a_ca_bundle_without_certificates_is_refused_at_startup(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ClientConfigError):
        Upstream(Settings(ca_bundle=empty))
    with pytest.raises(ClientConfigError):
        load_ca_bundle(tmp_path / "absent.pem")


def test_websocket_proxy_follows_the_environment(no_proxy_env: pytest.MonkeyPatch) -> None:
    no_proxy_env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    no_proxy_env.setenv("NO_PROXY", "localhost")
    assert env_proxy("wss://api.openai.com/v1/realtime") == "http://proxy.internal:3128"
    assert env_proxy("ws://api.openai.com/v1/realtime") is None  # no HTTP_PROXY
    assert env_proxy("wss://localhost:8443/v1/realtime") is None
