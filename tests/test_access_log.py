"""Access logs: one conduit.access line per request, JSON under CONDUIT_LOG_FORMAT=json,
naming the key by id and prefix only; and no secret in any log record or span, with a
virtual key and a provider key put everywhere a client or a provider could put them."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

import httpx2
import pytest

from conduit_tornado import AdminClient
from conduit_tornado.core.scrub import remember, scrub
from conduit_tornado.core.security import new_master_key, new_virtual_key, visible_prefix
from conduit_tornado.metering.access_log import JsonFormatter, TextFormatter
from tests.conftest import MASTER_KEY
from tests.fakes.base import PROMPT_TOKENS
from tests.fakes.otlp import OtlpReceiver
from tests.fakes.providers import API_KEY, FakeProviders
from tests.proxy_setup import WiredFactory, wire
from tests.served import Served

pytestmark = pytest.mark.asyncio


async def test_json_access_lines_parse_and_carry_the_fields(
    fake: FakeProviders, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    env = {
        "CONDUIT_STORE": "memory",
        "CONDUIT_LOG_FORMAT": "json",
        "CONDUIT_OTEL_ENDPOINT": receiver.url,
    }
    served = await Served.start(tmp_path, env=env)
    url = served.url
    try:
        trace_id = secrets.token_hex(16)
        async with AdminClient(url, MASTER_KEY) as admin:
            w = await wire(served, fake, admin)  # type: ignore[arg-type]
            prefix = (await admin.get_key(w.key_id))["prefix"]
            async with httpx2.AsyncClient(base_url=url) as http:
                ok = await http.post(
                    "/v1/chat/completions",
                    json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]},
                    headers={
                        "Authorization": f"Bearer {w.key}",
                        "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
                    },
                )
                refused = await http.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert ok.status_code == 200 and refused.status_code == 401
    finally:
        await served.stop()
    records = [json.loads(line) for line in served.lines if line.strip()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    access = [r for r in records if r["logger"] == "conduit.access"]
    (line,) = [r for r in access if r.get("request_id") == ok.headers["x-request-id"]]
    assert line["trace_id"] == trace_id
    assert line["key_id"] == w.key_id and line["key_prefix"] == prefix
    assert w.key.startswith(prefix) and w.key not in json.dumps(records)
    assert line["model"] == "gpt" and line["provider"] == "oai" and line["deployment"] == "gpt-4o"
    assert line["status"] == 200 and line["method"] == "POST"
    assert line["route"] == "chat.completions" and line["path"] == "/v1/chat/completions"
    assert line["prompt_tokens"] == PROMPT_TOKENS and line["completion_tokens"] > 0
    assert line["cost"] > 0 and line["latency_ms"] > 0 and line["overhead_ms"] >= 0
    (no_key,) = [r for r in access if r.get("request_id") == refused.headers["x-request-id"]]
    assert no_key["status"] == 401 and no_key["key_id"] is None
    assert no_key["route"] == "/v1/models"
    # One line a request: the admin calls of wire() and these two, nothing twice.
    ids = [r["request_id"] for r in access]
    assert len(ids) == len(set(ids))


async def test_text_access_line_and_switching_it_off(
    wired_with: WiredFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="conduit.access")
    on = await wired_with()
    async with httpx2.AsyncClient(base_url=on.gateway.url) as http:
        r = await http.get("/v1/models?limit=5", headers={"Authorization": f"Bearer {on.key}"})
    (record,) = [
        x for x in caplog.records if x.name == "conduit.access" and x.getMessage().startswith("GET")
    ]
    assert record.getMessage().startswith("GET /v1/models?limit=5 200 ")
    text = TextFormatter().format(record)
    assert f"request_id={r.headers['x-request-id']}" in text and f"key_id={on.key_id}" in text
    # The documented 12-character prefix is shown; the key itself never is.
    prefix = (await on.admin.get_key(on.key_id))["prefix"]
    assert len(prefix) == 12 and f"key_prefix={prefix}" in text.split() and on.key not in text
    caplog.clear()
    off = await wired_with(access_log=False)
    async with httpx2.AsyncClient(base_url=off.gateway.url) as http:
        await http.get("/v1/models", headers={"Authorization": f"Bearer {off.key}"})
    assert not [x for x in caplog.records if x.name == "conduit.access"]


async def test_no_secret_in_any_log_record_or_span(
    wired_with: WiredFactory,
    fake: FakeProviders,
    receiver: OtlpReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    w = await wired_with(otel_endpoint=receiver.url, retry_backoff=0.01, max_retries=1)
    # A provider key of no recognisable shape: only the gateway's memory of the keys it
    # holds can scrub it (the fakes' own key looks like OpenAI's, sk-...).
    odd = "plain" + secrets.token_hex(12)
    await w.admin.create_provider(name="odd", type="openai", base_url=fake.url + "/v1", api_key=odd)
    await w.admin.create_model(name="odd", deployments=[{"provider": "odd", "model": "gpt-4o"}])
    virtual = w.key
    responses: list[httpx2.Response] = []
    async with httpx2.AsyncClient(base_url=w.gateway.url, timeout=30) as http:

        async def send(path: str, **kwargs: Any) -> None:
            responses.append(await http.post(path, **kwargs))

        chat = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
        for secret in (virtual, API_KEY, odd):
            # Header (Authorization and x-api-key), query string, body.
            await send(
                "/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {secret}"}
            )
            await send(
                "/v1/messages",
                json={"model": "claude", "max_tokens": 5, **chat},
                headers={"x-api-key": secret, "anthropic-version": "2023-06-01"},
            )
            for name in ("key", "api_key", "api-key"):
                await send(
                    f"/v1/chat/completions?{name}={secret}",
                    json=chat,
                    headers={"Authorization": f"Bearer {virtual}"},
                )
            await send(
                "/v1/chat/completions",
                json={**chat, "api_key": secret, "user": secret},
                headers={"Authorization": f"Bearer {virtual}"},
            )
            await send(
                "/v1/chat/completions",
                content=json.dumps({**chat, "api_key": secret})[:-1],  # broken JSON
                headers={"Authorization": f"Bearer {virtual}"},
            )
        # Providers echoing the key they were sent, in a client error (relayed to the
        # client), a server error (retried) and a refusal of the credentials.
        for model, key in (("gpt", API_KEY), ("odd", odd)):
            echo = {"error": {"message": f"Incorrect API key provided: {key}.", "param": None}}
            for status in (400, 500, 401):
                fake.then(status=status, body=echo).then(status=status, body=echo)
                await send(
                    "/v1/chat/completions",
                    json={**chat, "model": model},
                    headers={"Authorization": f"Bearer {virtual}"},
                )
        assert any(r.status_code == 200 for r in responses)
        assert {r.status_code for r in responses} >= {200, 400, 401, 502}
        assert any("Incorrect API key provided: [redacted]" in r.text for r in responses)
    await w.gateway.stop()
    assert receiver.spans
    haystacks = [receiver.everything(), *(r.text for r in responses)]
    json_lines, text_lines = JsonFormatter(), TextFormatter()
    # The test's own HTTP client logs the URLs it was given: not the gateway's records.
    for record in (r for r in caplog.records if not r.name.startswith("httpx")):
        haystacks += [
            record.getMessage(),
            repr(record.__dict__),
            json_lines.format(record),
            text_lines.format(record),
        ]
    access = [r for r in caplog.records if r.name == "conduit.access"]
    assert len(access) >= len(responses)
    for secret in (virtual, API_KEY, odd):
        leaks = [h for h in haystacks if secret in h]
        assert not leaks, leaks[:3]


async def test_scrubbing_text_and_urls() -> None:
    held = "held-" + secrets.token_hex(8)
    remember([held, "short"])
    assert scrub(f"upstream said: bad key {held}!") == "upstream said: bad key [redacted]!"
    assert scrub("short and sweet") == "short and sweet"  # too short to scrub by value
    assert scrub("Bearer condt_abcdefghijklmnop") == "Bearer [redacted]"
    assert scrub('{"api_key": "s3cr3t-value", "model": "gpt"}') == (
        '{"api_key": "[redacted]", "model": "gpt"}'
    )
    gemini = "https://generativelanguage.googleapis.com/v1beta/models/x:generateContent"
    assert scrub(f"{gemini}?alt=sse&key=AIzaSyD-abcdefghijklmnopqrstuvwxyz") == (
        f"{gemini}?alt=sse&key=[redacted]"
    )
    assert scrub("https://user:pass@h.test/v1?api_key=abcd1234&x=1") == (
        "https://[redacted]@h.test/v1?api_key=[redacted]&x=1"
    )
    assert scrub("the monkey=banana keyboard: qwerty") == "the monkey=banana keyboard: qwerty"
    # Whole keys (virtual and master), and a key cut short, are redacted; the visible
    # prefix the logs, admin API and UI show is not.
    for key in (new_virtual_key(), new_master_key()):
        shown = visible_prefix(key)
        assert scrub(f"key_prefix={shown} status=200") == f"key_prefix={shown} status=200"
        assert scrub(f"got {key}!") == "got [redacted]!"
        assert scrub(f"got {key[:24]}") == "got [redacted]"
