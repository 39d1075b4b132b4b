"""Whose proxy headers are believed: X-Forwarded-For and X-Forwarded-Proto only from peers
in forwarded_allow_ips, walked from the right past trusted proxies; X-Real-Ip never.
On both servers, and through a gateway where allowed_ips depends on it."""

from __future__ import annotations

import json
import logging

import httpx2
import pytest
import tornado.web
from tornado.httputil import HTTPHeaders

from conduit_tornado import AdminClient
from conduit_tornado.core.settings import Settings
from conduit_tornado.server.forwarded import TrustedProxies
from conduit_tornado.server.limits import ServerLimits
from tests.conftest import MASTER_KEY, GatewayFactory
from tests.wire import KINDS, connect, read_response, serve


def _headers(**fields: str) -> HTTPHeaders:
    headers = HTTPHeaders()
    for name, value in fields.items():
        for item in value.split("|"):  # repeated header lines
            headers.add(name.replace("_", "-"), item)
    return headers


@pytest.mark.parametrize(
    ("allow", "peer", "fields", "expected"),
    [
        # Not a trusted peer: its headers are its own claims.
        ("", "10.0.0.1", {"X_Forwarded_For": "1.2.3.4"}, ("10.0.0.1", None)),
        ("10.0.0.2", "10.0.0.1", {"X_Forwarded_Proto": "https"}, ("10.0.0.1", None)),
        # A trusted proxy: the address it appended, whatever the client wrote before it.
        ("10.0.0.1", "10.0.0.1", {"X_Forwarded_For": "6.6.6.6, 1.2.3.4"}, ("1.2.3.4", None)),
        # Through two trusted proxies: skipped from the right.
        (
            "10.0.0.0/8",
            "10.0.0.1",
            {"X_Forwarded_For": "6.6.6.6, 1.2.3.4, 10.9.9.9"},
            ("1.2.3.4", None),
        ),
        # Repeated header lines are one list.
        (
            "10.0.0.0/8",
            "10.0.0.1",
            {"X_Forwarded_For": "6.6.6.6|1.2.3.4, 10.9.9.9"},
            ("1.2.3.4", None),
        ),
        # X-Real-Ip is never preferred.
        (
            "10.0.0.1",
            "10.0.0.1",
            {"X_Forwarded_For": "1.2.3.4", "X_Real_Ip": "203.0.113.7"},
            ("1.2.3.4", None),
        ),
        # Garbage stops the walk at the last address that could be read.
        ("*", "10.0.0.1", {"X_Forwarded_For": "1.2.3.4, junk"}, ("10.0.0.1", None)),
        # Everyone is a proxy: the leftmost address.
        ("*", "10.0.0.1", {"X_Forwarded_For": "1.2.3.4, 5.6.7.8"}, ("1.2.3.4", None)),
        ("::1", "::1", {"X_Forwarded_Proto": "http, https"}, ("::1", "https")),
        (
            "127.0.0.1",
            "::ffff:127.0.0.1",  # an IPv4 peer on a dual-stack socket
            {"X_Forwarded_For": "1.2.3.4", "X_Forwarded_Proto": "gopher"},
            ("1.2.3.4", None),
        ),
    ],
)
def test_client_address_and_scheme(
    allow: str, peer: str, fields: dict[str, str], expected: tuple[str, str | None]
) -> None:
    assert TrustedProxies(allow).resolve(peer, _headers(**fields)) == expected


def test_a_malformed_allow_list_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="not an address"):
        TrustedProxies("10.0.0.1, proxy.internal")


def test_trust_proxy_headers_now_means_loopback_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    limits = ServerLimits.from_settings(Settings(trust_proxy_headers=True))
    trusted = TrustedProxies(limits.forwarded_allow_ips)
    assert trusted.trusts("127.0.0.1") and trusted.trusts("::1")
    assert not trusted.trusts("10.0.0.1")
    assert any("deprecated" in r.getMessage() for r in caplog.records)
    explicit = ServerLimits.from_settings(
        Settings(trust_proxy_headers=True, forwarded_allow_ips="10.0.0.1")
    )
    assert explicit.forwarded_allow_ips == "10.0.0.1"


class Origin(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish({"ip": self.request.remote_ip, "scheme": self.request.protocol})


FORGED = (
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6, 1.2.3.4\r\n"
    b"X-Real-Ip: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Scheme: https\r\n\r\n"
)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("allow", "expected"),
    [
        ("", {"ip": "127.0.0.1", "scheme": "http"}),  # the default: nobody is believed
        ("10.0.0.0/8", {"ip": "127.0.0.1", "scheme": "http"}),  # not this peer
        ("127.0.0.1", {"ip": "1.2.3.4", "scheme": "https"}),
    ],
)
async def test_over_the_wire(kind: str, allow: str, expected: dict[str, str]) -> None:
    limits = ServerLimits(forwarded_allow_ips=allow)
    async with serve(kind, [(r"/", Origin)], limits) as (_, port):
        reader, writer = await connect(port)
        for _ in range(2):  # per request, on one connection
            writer.write(FORGED)
            status, _, body = await read_response(reader)
            assert status == 200 and json.loads(body) == expected
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # no proxy headers: the peer
        assert json.loads((await read_response(reader))[2]) == {
            "ip": "127.0.0.1",
            "scheme": "http",
        }
        writer.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_x_real_ip_cannot_pass_an_ip_allow_list(
    start_gateway: GatewayFactory, kind: str
) -> None:
    gw = await start_gateway(http_server=kind, forwarded_allow_ips="127.0.0.1")
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        key = (await admin.create_key(name="o", allowed_ips=["203.0.113.7"]))["key"]
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        forged = await http.get(
            "/v1/models", headers={**auth, "X-Real-Ip": "203.0.113.7", "X-Forwarded-For": "1.2.3.4"}
        )
        assert forged.status_code == 403
        assert forged.json()["error"]["code"] == "ip_not_allowed"
        relayed = await http.get("/v1/models", headers={**auth, "X-Forwarded-For": "203.0.113.7"})
        assert relayed.status_code == 200
