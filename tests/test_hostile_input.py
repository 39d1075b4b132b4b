"""Hostile input gets a 400 naming the parameter: never a 500, nothing stored that later
reads fail on, nothing sent upstream that could add headers of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import pytest_asyncio

from conduit_tornado import Gateway
from tests.conftest import MASTER_KEY
from tests.fakes.tls import make_pki
from tests.proxy_setup import Wired

pytestmark = pytest.mark.asyncio


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def refused(r: httpx2.Response, param: str | None) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["param"] == param, error
    assert error["message"]
    return error


class Calls:
    """Client and admin calls on a wired gateway."""

    def __init__(self, wired: Wired, http: httpx2.AsyncClient) -> None:
        self.wired, self.http = wired, http

    async def client(self, path: str, body: dict[str, Any]) -> httpx2.Response:
        headers = {"Authorization": f"Bearer {self.wired.key}"}
        return await self.http.post(path, json=body, headers=headers)

    async def admin(self, method: str, path: str, body: Any = None) -> httpx2.Response:
        headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        return await self.http.request(method, path, json=body, headers=headers)


@pytest_asyncio.fixture
async def calls(wired: Wired) -> AsyncIterator[Calls]:
    async with httpx2.AsyncClient(base_url=wired.gateway.url, timeout=30) as http:
        yield Calls(wired, http)


@pytest.mark.parametrize("model", ["mock", "claude", "gem", "gpt"])
async def test_chat_content_parts_are_checked(calls: Calls, model: str) -> None:
    for text in (None, 5, ["x"]):
        content = [{"type": "text", "text": "ok"}, {"type": "text", "text": text}]
        r = await calls.client(
            "/v1/chat/completions",
            {"model": model, "messages": [{"role": "user", "content": content}]},
        )
        refused(r, "messages[0].content[1].text")
    cases: list[tuple[Any, str]] = [
        ([5], "messages[0].content[0]"),
        ([{"type": "text"}], "messages[0].content[0].text"),
        (5, "messages[0].content"),
        ({"text": "x"}, "messages[0].content"),
    ]
    for content, param in cases:
        r = await calls.client(
            "/v1/chat/completions",
            {"model": model, "messages": [{"role": "user", "content": content}]},
        )
        refused(r, param)
    assert calls.wired.fake.requests == []


async def test_stream_options_must_be_an_object(calls: Calls) -> None:
    for path, body in (
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
        ("/v1/completions", {"prompt": "x"}),
    ):
        for model in ("mock", "gpt", "claude"):
            r = await calls.client(
                path, {**body, "model": model, "stream": True, "stream_options": "x"}
            )
            refused(r, "stream_options")
    assert calls.wired.fake.requests == []


async def test_media_formats_of_the_wrong_type(calls: Calls) -> None:
    r = await calls.client(
        "/v1/audio/speech",
        {"model": "tts", "input": "hi", "voice": "alloy", "response_format": []},
    )
    refused(r, "response_format")
    r = await calls.client(
        "/v1/images/generations", {"model": "dalle", "prompt": "a cat", "response_format": {}}
    )
    refused(r, "response_format")
    assert calls.wired.fake.requests == []


async def test_stored_json_nesting_is_capped_at_write(calls: Calls) -> None:
    for path, body in (
        ("/admin/v1/keys", {"name": "deep", "metadata": nested(300)}),
        ("/admin/v1/keys", {"name": "deep", "metadata": nested(33)}),
        ("/admin/v1/groups", {"name": "deep", "metadata": nested(300)}),
    ):
        error = refused(await calls.admin("POST", path, body), "metadata")
        # Past what any body may nest (api/base.py MAX_BODY_DEPTH), or past the store's cap.
        assert ("240" if body["metadata"] == nested(300) else "32") in error["message"]
    r = await calls.admin(
        "PATCH", f"/admin/v1/keys/{calls.wired.key_id}", {"metadata": nested(300)}
    )
    refused(r, "metadata")
    # Within the cap: stored, and every read still answers.
    ok = await calls.admin("POST", "/admin/v1/keys", {"name": "ok", "metadata": nested(31)})
    assert ok.status_code == 201, ok.text
    listed = await calls.admin("GET", "/admin/v1/keys")
    assert listed.status_code == 200 and listed.json()["total"] == 2
    one = await calls.admin("GET", f"/admin/v1/keys/{ok.json()['id']}")
    assert one.json()["metadata"] == nested(31)


async def test_realtime_session_settings_nesting_is_capped(calls: Calls) -> None:
    await calls.wired.admin.create_model(
        name="rt", deployments=[{"provider": "mock", "model": "m"}]
    )
    tool = {"type": "function", "name": "f", "parameters": nested(300)}
    r = await calls.client("/v1/realtime/sessions", {"model": "rt", "tools": [tool]})
    refused(r, "tools")
    r = await calls.client("/v1/realtime/sessions", {"model": "rt", "modalities": [[]]})
    refused(r, "modalities")
    r = await calls.client("/v1/realtime/sessions", {"model": "rt", "temperature": 2**63})
    refused(r, "temperature")
    small = {"type": "function", "name": "f", "parameters": nested(5)}
    r = await calls.client("/v1/realtime/sessions", {"model": "rt", "tools": [small]})
    assert r.status_code == 200 and r.json()["tools"] == [small]


async def test_provider_options_are_typed(calls: Calls) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"type": "mock", "options": {"latency_ms": "abc"}}, "latency_ms"),
        ({"type": "mock", "options": {"latency_ms": -1}}, "latency_ms"),
        ({"type": "mock", "options": {"words": 10**9}}, "words"),
        ({"type": "mock", "options": {"dimensions": 10**9}}, "dimensions"),
        ({"type": "mock", "options": {"surprise": 1}}, "surprise"),
        ({"type": "openai", "options": {"api_version": "x"}}, "api_version"),
        (
            {"type": "azure", "base_url": "https://a.example", "options": {"api_version": "a b"}},
            "api_version",
        ),
    ]
    for fields, named in bad:
        r = await calls.admin("POST", "/admin/v1/providers", {"name": "p", **fields})
        assert named in refused(r, "options")["message"]
    r = await calls.admin("PATCH", "/admin/v1/providers/mock", {"options": {"latency_ms": "abc"}})
    refused(r, "options")
    r = await calls.admin("PATCH", "/admin/v1/providers/az", {"type": "mock"})  # api_version
    refused(r, "options")
    ok = await calls.admin("PATCH", "/admin/v1/providers/mock", {"options": {"latency_ms": 1}})
    assert ok.status_code == 200 and ok.json()["options"] == {"latency_ms": 1.0}
    answer = await calls.client(
        "/v1/chat/completions", {"model": "mock", "messages": [{"role": "user", "content": "x"}]}
    )
    assert answer.status_code == 200


async def test_provider_headers_and_urls_are_checked(calls: Calls) -> None:
    bad_headers = [
        {"X-Team": "a\r\nX-Injected: 1"},
        {"X-Team": "line\nbreak"},
        {"X-Team": "é€"},  # not latin-1: could not be sent
        {"X-Team": "nul\x00"},
        {"Bad Name": "x"},
        {"X-Team:": "x"},
        {"Content-Length": "5"},
        {"Host": "elsewhere.example"},
        {"x-a": "1", "X-A": "2"},
    ]
    for headers in bad_headers:
        r = await calls.admin(
            "POST", "/admin/v1/providers", {"name": "h", "type": "openai", "headers": headers}
        )
        refused(r, "headers")
    r = await calls.admin("PATCH", "/admin/v1/providers/oai", {"headers": bad_headers[0]})
    refused(r, "headers")
    r = await calls.admin(
        "POST", "/admin/v1/providers", {"name": "k", "type": "openai", "api_key": "sk\r\nX: 1"}
    )
    refused(r, "api_key")
    for url in (
        "https://api.example\r\nX-Injected: 1",
        "https://api.example\n/v1",
        "https://user:secret@api.example/v1",
        "https://api.example/v1?x=1",
        "ftp://api.example",
        "https://:443/v1",
        "https://api.example:99999",
        "https://api .example",
    ):
        r = await calls.admin(
            "POST", "/admin/v1/providers", {"name": "u", "type": "openai", "base_url": url}
        )
        error = refused(r, "base_url")
        assert "secret" not in error["message"]
    ok = await calls.admin(
        "POST",
        "/admin/v1/providers",
        {
            "name": "fine",
            "type": "openai",
            "base_url": "http://127.0.0.1:8080/v1/",
            "headers": {"X-Team": "caf\u00e9 \t ok", "OpenAI-Organization": "org-1"},
        },
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["base_url"] == "http://127.0.0.1:8080/v1"


async def test_credentials_in_a_stored_base_url_are_never_shown(calls: Calls) -> None:
    # A provider stored before base_url credentials were refused.
    ctx = calls.wired.gateway.ctx
    assert ctx is not None
    doc = await ctx.catalog.get_provider("oai")
    await ctx.store.update(
        "providers", doc["_id"], {"base_url": "https://user:pw@legacy.example:8443/v1"}
    )
    for path in ("/admin/v1/providers", "/admin/v1/providers/oai"):
        r = await calls.admin("GET", path)
        assert r.status_code == 200
        assert "pw" not in r.text and "user:" not in r.text
        assert "https://legacy.example:8443/v1" in r.text


async def test_request_nesting_beyond_what_can_be_forwarded(calls: Calls) -> None:
    # orjson reads up to 1,024 levels but writes only 254: such a body cannot be forwarded.
    for model in ("gpt", "claude", "gem"):
        r = await calls.client(
            "/v1/chat/completions",
            {
                "model": model,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": nested(400)}}
                ],
            },
        )
        assert r.status_code == 400, r.text
        assert "too deeply" in r.json()["error"]["message"]
    assert calls.wired.fake.requests == []


@pytest.mark.parametrize("model", ["claude", "gem"])
async def test_translated_fields_of_the_wrong_shape(calls: Calls, model: str) -> None:
    """Adapters that translate OpenAI's shapes refuse malformed ones instead of failing."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tools": "x"}, "tools"),
        ({"tools": [None]}, "tools[0]"),
        ({"tools": [{"type": "function"}]}, "tools[0].function.name"),
        ({"tools": [{"type": "function", "function": {"name": 5}}]}, "tools[0].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": 5}}]},
            "tools[0].function.parameters",
        ),
        ({"stop": 5}, "stop"),
        ({"stop": [None]}, "stop"),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": None, "tool_calls": [call, None]},
                ]
            },
            "messages[1].tool_calls[1]",
        ),
        (
            {"messages": [{"role": "assistant", "content": None, "tool_calls": "x"}]},
            "messages[0].tool_calls",
        ),
    ]
    if model == "gem":
        cases.append(({"response_format": 5}, "response_format"))
    for extra, param in cases:
        for stream in (False, True):
            body = {"model": model, "messages": [{"role": "user", "content": "x"}], **extra}
            r = await calls.client("/v1/chat/completions", {**body, "stream": stream})
            refused(r, param)
    assert calls.wired.fake.requests == []


async def test_stored_values_every_store_can_hold(gateway: Gateway) -> None:
    """What MongoDB cannot encode (integers past 64 bits, NUL in keys) is a 400 on every
    store, not a 500 on one of them."""
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    async with httpx2.AsyncClient(base_url=gateway.url, headers=headers) as http:
        for path, extra in (("/admin/v1/keys", {"name": "k"}), ("/admin/v1/groups", {"name": "g"})):
            for metadata in ({"n": 2**63}, {"n": [2**64 - 1]}, {"a\x00b": 1}):
                r = await http.post(path, json={**extra, "metadata": metadata})
                refused(r, "metadata")
            r = await http.post(path, json={**extra, "rpm": 2**63})
            refused(r, "rpm")
            fine = {"big": 2**63 - 1, "small": -(2**63), "text": "nul \x00 in a value"}
            r = await http.post(path, json={**extra, "metadata": fine})
            assert r.status_code == 201, r.text
            assert r.json()["metadata"] == fine
        listed = await http.get("/admin/v1/keys")
        assert listed.status_code == 200 and listed.json()["total"] == 1


async def test_any_admin_body_must_fit_every_store(gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    async with httpx2.AsyncClient(base_url=gateway.url, headers=headers) as http:
        r = await http.post("/admin/v1/providers", json={"name": "m", "type": "mock"})
        assert r.status_code == 201
        deployment = {"provider": "m", "model": "m", "pricing": {"per_image": {"a\x00": 1}}}
        r = await http.post("/admin/v1/models", json={"name": "x", "deployments": [deployment]})
        assert "NUL" in refused(r, None)["message"]
        r = await http.post("/admin/v1/keys", json={"name": "k", "model_limits": {"m\x00": {}}})
        refused(r, None)
        listed = await http.get("/admin/v1/models")
        assert listed.status_code == 200 and listed.json()["total"] == 0


async def test_names_that_are_logged_are_bounded(calls: Calls) -> None:
    """The model and user of every request go into its log entry (refusals included) and
    the user keys a limit bucket: megabytes of either would be held and written."""
    hi = [{"role": "user", "content": "x"}]
    r = await calls.client("/v1/chat/completions", {"model": "m" * 100_000, "messages": hi})
    refused(r, "model")
    body = {"model": "mock", "messages": hi, "user": "u" * 257}
    refused(await calls.client("/v1/chat/completions", body), "user")
    refused(await calls.client("/v1/embeddings", {**body, "input": "x"}), "user")
    ok = await calls.client("/v1/chat/completions", {**body, "user": "u" * 256})
    assert ok.status_code == 200
    ctx = calls.wired.gateway.ctx
    assert ctx is not None
    await ctx.recorder.flush()
    logged = await ctx.store.find("request_logs", {})
    assert logged and max(len(str(e.get("user") or "")) + len(e["model"]) for e in logged) < 300


async def test_client_certificate_options_are_checked_on_write(
    calls: Calls, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path)
    cert_text, key_text = pki.client_cert.read_text(), pki.client_key.read_text()
    base = {"name": "mtls", "type": "openai", "base_url": "https://models.internal/v1"}
    for options in (
        {"client_cert": cert_text},  # half a pair
        {"client_cert": key_text, "client_key": key_text},  # a key is no certificate
        {"client_cert": str(tmp_path / "absent.pem"), "client_key": key_text},
    ):
        r = await calls.admin("POST", "/admin/v1/providers", {**base, "options": options})
        error = refused(r, "options")
        assert "BEGIN" not in error["message"]  # key material is never echoed
    r = await calls.admin(
        "POST",
        "/admin/v1/providers",
        {**base, "options": {"client_cert": cert_text, "client_key": key_text}},
    )
    assert r.status_code == 201, r.text
    for shown in (r.text, (await calls.admin("GET", "/admin/v1/providers/mtls")).text):
        assert "PRIVATE KEY" not in shown and '"client_key":"(set)"' in shown
    # At rest, the key is sealed with the other credentials, and the gateway still has it.
    ctx = calls.wired.gateway.ctx
    assert ctx is not None
    stored = await ctx.store.find_one("providers", {"name": "mtls"})
    assert stored is not None and "PRIVATE KEY" not in str(stored)
    assert ctx.catalog.providers["mtls"].options["client_key"].strip() == key_text.strip()
    r = await calls.admin("PATCH", "/admin/v1/providers/mtls", {"api_key": "sk-new"})
    assert r.status_code == 200, r.text
    assert ctx.catalog.providers["mtls"].options["client_key"].strip() == key_text.strip()
    r = await calls.admin(
        "PATCH", "/admin/v1/providers/mtls", {"options": {"client_key": key_text}}
    )
    refused(r, "options")


WRONG: list[Any] = [None, 5, -1, "x", "", [], {}, [[]], [None], [5], [{}], True, 1e300, {"a": None}]


@pytest.mark.parametrize("model", ["mock", "claude", "gem", "gpt"])
async def test_no_wrong_type_anywhere_is_a_server_error(calls: Calls, model: str) -> None:
    """Every top-level field of a chat request, given values of every wrong type: the
    gateway answers each with a 4xx (or relays the provider's refusal), never a 500."""
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    valid = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "n": 1,
        "tools": [tool],
        "tool_choice": "auto",
        "stop": ["x"],
        "temperature": 1,
        "user": "u",
        "response_format": {"type": "text"},
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 5,
    }
    seen = set()
    for field in valid:
        for value in WRONG:
            for stream in (False, True):
                body = {**valid, "model": model, field: value, "stream": stream}
                r = await calls.client("/v1/chat/completions", body)
                assert r.status_code < 500 or r.status_code in (502, 503), (field, value, r.text)
                seen.add(r.status_code)
    assert 400 in seen and 200 in seen  # both kinds of answer happened
