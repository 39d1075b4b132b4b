"""POST /v1/images/edits and /v1/images/variations, with the official SDK as client and a
fake OpenAI that refuses what OpenAI refuses (tests/fakes/openai.py)."""

from __future__ import annotations

import base64
from typing import Any

import httpx2
import openai
import pytest

from tests.fakes.openai import png
from tests.proxy_setup import Wired, WiredFactory

pytestmark = pytest.mark.asyncio

SQUARE = png(4, 4)
MASK = png(4, 4, alpha=True)


async def _models(wired: Wired) -> None:
    for name, provider, model in [
        ("gpt-image", "oai", "gpt-image-1"),
        ("azure-image", "az", "gpt-image-1"),
        ("dalle2", "oai", "dall-e-2"),
    ]:
        await wired.admin.create_model(
            name=name, deployments=[{"provider": provider, "model": model}]
        )


async def _logs(wired: Wired, endpoint: str) -> list[dict[str, Any]]:
    ctx = wired.gateway.ctx
    assert ctx is not None
    await ctx.recorder.flush()
    return await ctx.store.find("request_logs", {"endpoint": endpoint})


@pytest.mark.parametrize("model", ["gpt-image", "azure-image"])
async def test_edit_several_images_with_mask(wired: Wired, model: str) -> None:
    await _models(wired)
    before = len(wired.fake.requests)
    async with wired.client() as client:
        raw = await client.images.with_raw_response.edit(
            model=model,
            image=[("a.png", SQUARE, "image/png"), ("b.png", SQUARE, "image/png")],
            mask=("mask.png", MASK, "image/png"),
            prompt="add a hat",
            n=2,
            size="1024x1024",
            quality="low",
        )
    result = raw.parse()
    assert len(result.data) == 2
    assert base64.b64decode(result.data[0].b64_json or "")[:4] == b"\x89PNG"
    assert result.usage is not None and result.usage.input_tokens == 100
    # Per image from the price table: gpt-image-1 1024x1024/low is $0.011.
    assert float(raw.headers["x-conduit-cost-usd"]) == pytest.approx(2 * 0.011)
    assert len(wired.fake.requests) == before + 1  # one upstream call
    sent = wired.fake.requests[-1]
    files = sent.body["_files"]
    assert [(f[0], f[1], f[3]) for f in files] == [
        ("image[]", "a.png", len(SQUARE)),
        ("image[]", "b.png", len(SQUARE)),
        ("mask", "mask.png", len(MASK)),
    ]
    assert sent.body["prompt"] == "add a hat" and sent.body["n"] == "2"
    if model == "azure-image":
        assert sent.path == "/openai/deployments/gpt-image-1/images/edits"
        assert sent.query["api-version"]
    else:
        assert sent.path == "/v1/images/edits" and sent.body["model"] == "gpt-image-1"
    logs = await _logs(wired, "images.edits")
    assert len(logs) == 1 and logs[0]["status"] == 200
    assert logs[0]["media"]["images"] == 2 and logs[0]["media"]["inputs"] == 2
    assert logs[0]["cost"] == pytest.approx(0.022)
    assert logs[0]["prompt_tokens"] == 100 and logs[0]["completion_tokens"] == 400


async def test_edit_single_image_dalle2_and_auto_size(wired: Wired) -> None:
    await _models(wired)
    async with wired.client() as client:
        one = await client.images.with_raw_response.edit(
            model="dalle2", image=("in.png", SQUARE), prompt="x", size="512x512"
        )
        assert one.parse().data[0].url
        assert float(one.headers["x-conduit-cost-usd"]) == pytest.approx(0.018)
        assert wired.fake.requests[-1].body["_files"][0][0] == "image"
        # size auto: priced by the size the provider says it made.
        auto = await client.images.with_raw_response.edit(
            model="gpt-image", image=("in.png", SQUARE), prompt="x", size="auto"
        )
        assert float(auto.headers["x-conduit-cost-usd"]) == pytest.approx(0.042)


# The SDK marks create_variation deprecated (OpenAI retired dall-e-2); the route stays for
# providers that still serve it.
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
async def test_variation(wired: Wired) -> None:
    await _models(wired)
    async with wired.client() as client:
        raw = await client.images.with_raw_response.create_variation(
            model="dalle2", image=("otter.png", SQUARE, "image/png"), n=3, size="256x256"
        )
        assert len(raw.parse().data) == 3
        assert float(raw.headers["x-conduit-cost-usd"]) == pytest.approx(3 * 0.016)
        sent = wired.fake.requests[-1]
        assert sent.path == "/v1/images/variations" and sent.body["model"] == "dall-e-2"
        b64 = await client.images.create_variation(
            model="mock", image=("otter.png", SQUARE), response_format="b64_json"
        )
        assert base64.b64decode(b64.data[0].b64_json or "")[:4] == b"\x89PNG"


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
async def test_provider_refusals_are_relayed_and_not_charged(wired: Wired) -> None:
    """What OpenAI refuses (non-PNG or non-square variation, mask without alpha) comes back
    as OpenAI's 400 naming the param; nothing is charged."""
    await _models(wired)
    async with wired.client() as client:
        with pytest.raises(openai.BadRequestError) as jpeg:
            await client.images.create_variation(
                model="dalle2", image=("x.jpg", b"\xff\xd8\xff\xe0 not a png", "image/jpeg")
            )
        assert jpeg.value.body["param"] == "image"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as oblong:
            await client.images.create_variation(model="dalle2", image=("x.png", png(4, 2)))
        assert "square" in oblong.value.message
        with pytest.raises(openai.BadRequestError) as mask:
            await client.images.edit(
                model="gpt-image", image=("a.png", SQUARE), mask=("m.png", png(4, 4)), prompt="x"
            )
        assert mask.value.body["param"] == "mask"  # type: ignore[index]
    logs = await _logs(wired, "images.variations") + await _logs(wired, "images.edits")
    assert len(logs) == 3
    assert all(log["status"] == 400 and not log.get("cost") for log in logs)


async def test_gateway_refusals_before_any_upstream_call(wired_with: WiredFactory) -> None:
    w = await wired_with(max_audio_bytes=64 * 1024)
    await _models(w)
    auth = {"Authorization": f"Bearer {w.key}"}
    before = len(w.fake.requests)
    async with httpx2.AsyncClient(base_url=w.gateway.url, headers=auth) as http:
        image = {"image": ("a.png", SQUARE, "image/png")}
        cases: list[tuple[dict[str, Any], dict[str, Any], str | None]] = [
            ({"model": "gpt-image", "prompt": "x"}, {}, "image"),  # no image
            ({"model": "gpt-image"}, image, "prompt"),
            ({"model": "gpt-image", "prompt": "x", "n": "11"}, image, "n"),
            ({"model": "gpt-image", "prompt": "x", "n": "two"}, image, "n"),
            (
                {"model": "gpt-image", "prompt": "x", "response_format": "gif"},
                image,
                "response_format",
            ),
            ({"model": "gpt-image", "prompt": "x", "stream": "true"}, image, "stream"),
            ({"model": "gpt-image", "prompt": "x"}, {"image": ("a.png", b"", "image/png")}, None),
            ({"model": "claude", "prompt": "x"}, image, "model"),  # a chat-only provider
        ]
        for data, files, param in cases:
            r = await http.post("/v1/images/edits", data=data, files=files or {"x": ("", b"")})
            assert r.status_code == 400, (data, r.text)
            assert r.json()["error"]["param"] == (param or r.json()["error"]["param"])
        many = [("image[]", (f"{i}.png", SQUARE, "image/png")) for i in range(17)]
        r = await http.post(
            "/v1/images/edits", data={"model": "gpt-image", "prompt": "x"}, files=many
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "image"
        two = [("image", ("a.png", SQUARE)), ("image", ("b.png", SQUARE))]
        r = await http.post("/v1/images/variations", data={"model": "dalle2"}, files=two)
        assert r.status_code == 400 and r.json()["error"]["param"] == "image"
        big = await http.post(
            "/v1/images/edits",
            data={"model": "gpt-image", "prompt": "x"},
            files={"image": ("a.png", b"\x89PNG" + b"\x00" * (80 * 1024))},
        )
        assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
        broken = await http.post(
            "/v1/images/edits",
            content=b"--xyz\r\nno header here\r\n\r\ndata\r\n--xyz--\r\n",
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        )
        assert broken.status_code == 400
        assert broken.json()["error"]["code"] == "invalid_multipart"
        json_body = await http.post("/v1/images/edits", json={"model": "gpt-image"})
        assert json_body.status_code == 400
    assert len(w.fake.requests) == before  # none reached the provider
    logs = await _logs(w, "images.edits")
    assert logs and all(not log.get("cost") for log in logs)
