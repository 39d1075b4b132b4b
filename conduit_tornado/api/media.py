"""Images and audio: /v1/images/generations, /v1/audio/transcriptions, /translations,
/v1/audio/speech and /v1/audio/speech/stream."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import orjson

from conduit_tornado.core.errors import ApiError
from conduit_tornado.metering.audio_duration import duration_seconds
from conduit_tornado.routing.providers.base import ByteStream, Json, Upload, Usage, estimate_tokens
from conduit_tornado.routing.router import Outcome, Target
from conduit_tornado.routing.upstream import Timeouts
from conduit_tornado.server.multipart import MultipartError, MultipartParser, Part, boundary_of

from .base import dumps
from .proxy import ProxyHandler

IMAGE_FORMATS = ("url", "b64_json")
TRANSCRIPT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
TEXT_TYPES = {
    "text": "text/plain; charset=utf-8",
    "srt": "text/plain; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}
SPEECH_FORMATS = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
MAX_SPEECH_INPUT = 4096
ASSUMED_BITRATE = 128_000  # bits/s, for a duration estimate when the header says nothing


def _pricing(target: Target) -> dict[str, Any] | None:
    return target.deployment.get("pricing") or target.route.pricing


class ImagesHandler(ProxyHandler):
    endpoint = "images.generations"

    async def post(self) -> None:
        body = self.json_body()
        route = self.resolve(body)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ApiError(
                400, "prompt must be a non-empty string.", param="prompt", code="invalid_value"
            )
        n = body.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
            raise ApiError(
                400, "n must be an integer from 1 to 10.", param="n", code="invalid_value"
            )
        fmt = body.get("response_format", "url")
        if not isinstance(fmt, str) or fmt not in IMAGE_FORMATS:
            raise ApiError(
                400, "response_format must be 'url' or 'b64_json'.", param="response_format"
            )
        await self.admit(body, prompt_tokens=estimate_tokens(prompt), completion_reserve=False)

        async def call(target: Target, t: Timeouts) -> Json:
            return await target.adapter.images(body, target.model, t)

        result, self.outcome = await self.ctx.router.run(route, call)
        target = self.outcome.target
        images = len(result.get("data") or [])
        size = str(body.get("size") or "1024x1024")
        quality = str(body.get("quality") or ("standard" if "dall-e" in target.model else "medium"))
        each = self.ctx.media_prices.image(target.model, size, quality, _pricing(target))
        usage = Usage.from_openai(_token_usage(result.get("usage"))) or Usage(
            estimate_tokens(prompt), 0, estimated=True
        )
        cost = self.account(
            usage,
            self.outcome,
            cost=None if each is None else round(each * images, 10),
            media={"images": images, "size": size, "quality": quality},
        )
        self.answer_headers(self.outcome, cost)
        self.send_json(result)


def _token_usage(usage: Any) -> Json | None:
    """gpt-image-1 reports input/output tokens; map them to the shape Usage reads."""
    if not isinstance(usage, dict):
        return None
    return {
        "prompt_tokens": usage.get("input_tokens", 0),
        "completion_tokens": usage.get("output_tokens", 0),
    }


class UploadHandler(ProxyHandler):
    """A multipart upload, parsed as it arrives; files are spooled, never held whole.
    The whole body is capped by CONDUIT_MAX_AUDIO_BYTES (413 beyond)."""

    max_body_setting = "max_audio_bytes"
    file_fields = frozenset({"file"})

    def initialize(self) -> None:
        super().initialize()
        self.parser: MultipartParser | None = None
        self.upload_error: str | None = None

    async def prepare(self) -> None:
        await super().prepare()
        try:
            self.parser = MultipartParser(
                boundary_of(self.request.headers.get("Content-Type", "")),
                file_fields=self.file_fields,
            )
        except MultipartError as exc:  # refused before a byte of the body is read
            raise ApiError(400, f"Invalid upload: {exc}.", code="invalid_multipart") from None

    def data_received(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self.parser is None or self.upload_error or self._received > self.body_limit:
            return
        try:
            self.parser.feed(chunk)
        except MultipartError as exc:
            self.upload_error = str(exc)
            self.parser.discard()

    def on_finish(self) -> None:
        if self.parser is not None:
            self.parser.discard()
        super().on_finish()

    def _parts(self) -> dict[str, Part]:
        if self._received > self.body_limit:
            raise ApiError(
                413,
                self.too_large_message("The upload is"),
                code="request_too_large",
            )
        if self.upload_error is not None:
            raise ApiError(400, f"Invalid upload: {self.upload_error}.", code="invalid_multipart")
        assert self.parser is not None
        try:
            return self.parser.close()
        except MultipartError as exc:
            raise ApiError(400, f"Invalid upload: {exc}.", code="invalid_multipart") from None

    def text_fields(self) -> list[tuple[str, str]]:
        parts = self.parser.parts if self.parser else []
        return [(p.name, p.text) for p in parts if p.file is None]


class TranscriptionHandler(UploadHandler):
    endpoint = "audio.transcriptions"
    kind = "transcriptions"

    async def post(self) -> None:
        parts = self._parts()
        fields = self.text_fields()
        values = dict(fields)
        route = self.resolve({"model": values.get("model"), "user": values.get("user")})
        file = parts.get("file")
        if file is None or file.file is None or not file.filename or file.size == 0:
            raise ApiError(
                400, "Upload an audio file in the 'file' field.", param="file", code="invalid_value"
            )
        fmt = values.get("response_format", "json")
        if fmt not in TRANSCRIPT_FORMATS:
            raise ApiError(
                400,
                f"response_format must be one of {', '.join(TRANSCRIPT_FORMATS)}.",
                param="response_format",
            )
        await self.admit({}, prompt_tokens=0, completion_reserve=False)
        upload = Upload(
            file.file, file.filename, file.content_type or "application/octet-stream", file.size
        )

        async def call(target: Target, t: Timeouts) -> tuple[bytes, str]:
            return await target.adapter.transcribe(self.kind, fields, upload, target.model, t)

        (content, content_type), self.outcome = await self.ctx.router.run(route, call)
        seconds, estimated = self._duration(content, fmt, file)
        target = self.outcome.target
        per_minute = self.ctx.media_prices.per_minute(target.model, _pricing(target))
        cost = self.account(
            Usage(estimated=estimated),
            self.outcome,
            cost=None if per_minute is None else round(per_minute * seconds / 60, 10),
            media={"audio_seconds": round(seconds, 3), "bytes": file.size},
        )
        self.answer_headers(self.outcome, cost)
        self.set_header(
            "Content-Type", TEXT_TYPES.get(fmt, content_type) if fmt in TEXT_TYPES else content_type
        )
        self.finish(content)

    def _duration(self, content: bytes, fmt: str, file: Part) -> tuple[float, bool]:
        """Seconds of audio: from the provider if it says, else the file header, else a
        size-based estimate (marked estimated)."""
        if fmt in ("json", "verbose_json"):
            with contextlib.suppress(orjson.JSONDecodeError):
                data = orjson.loads(content)
                usage = data.get("usage") if isinstance(data, dict) else None
                if isinstance(usage, dict) and usage.get("type") == "duration":
                    return float(usage["seconds"]), False
                if isinstance(data, dict) and isinstance(data.get("duration"), int | float):
                    return float(data["duration"]), False
        assert file.file is not None
        seconds = duration_seconds(file.file, file.size)
        if seconds is not None:
            return seconds, False
        return file.size * 8 / ASSUMED_BITRATE, True


class TranslationHandler(TranscriptionHandler):
    endpoint = "audio.translations"
    kind = "translations"


class SpeechHandler(ProxyHandler):
    """Audio bytes relayed chunk by chunk as the provider sends them."""

    endpoint = "audio.speech"
    always_stream = False

    def validate(self, body: Json) -> str:
        text = body.get("input")
        if not isinstance(text, str) or not text:
            raise ApiError(
                400, "input must be a non-empty string.", param="input", code="invalid_value"
            )
        if len(text) > MAX_SPEECH_INPUT:
            raise ApiError(
                400,
                f"input is limited to {MAX_SPEECH_INPUT} characters.",
                param="input",
                code="string_above_max_length",
            )
        if not isinstance(body.get("voice"), str | dict) or not body.get("voice"):
            raise ApiError(400, "voice is required.", param="voice", code="invalid_value")
        fmt = body.get("response_format", "mp3")
        if not isinstance(fmt, str) or fmt not in SPEECH_FORMATS:
            raise ApiError(
                400,
                f"response_format must be one of {', '.join(SPEECH_FORMATS)}.",
                param="response_format",
            )
        speed = body.get("speed", 1.0)
        if (
            not isinstance(speed, int | float)
            or isinstance(speed, bool)
            or not 0.25 <= speed <= 4.0
        ):
            raise ApiError(
                400, "speed must be between 0.25 and 4.0.", param="speed", code="invalid_value"
            )
        return text

    def wants_sse(self, body: Json) -> bool:
        return False

    async def post(self) -> None:
        body = self.json_body()
        route = self.resolve(body)
        text = self.validate(body)
        sse = self.wants_sse(body)
        upstream_body = (
            {k: v for k, v in body.items() if k != "stream_format"} if self.always_stream else body
        )
        await self.admit(body, prompt_tokens=estimate_tokens(text), completion_reserve=False)

        async def call(target: Target, t: Timeouts) -> ByteStream:
            return await target.adapter.speech(upstream_body, target.model, t)

        stream, self.outcome = await self.ctx.router.run(route, call)
        target = self.outcome.target
        per_1k = self.ctx.media_prices.per_1k_chars(target.model, _pricing(target))
        cost = None if per_1k is None else round(per_1k * len(text) / 1000, 10)
        fmt = str(body.get("response_format", "mp3"))
        self.routing_headers(self.outcome)
        if sse:
            self.set_header("Content-Type", "text/event-stream; charset=utf-8")
            self.set_header("Cache-Control", "no-cache")
        else:
            self.set_header("Content-Type", SPEECH_FORMATS.get(fmt, stream.content_type))
        await self.relay_bytes(stream, self.outcome, text, cost, sse)

    async def relay_bytes(
        self, stream: ByteStream, outcome: Outcome, text: str, cost: float | None, sse: bool
    ) -> None:
        sent = 0

        async def pump() -> None:
            nonlocal sent
            async for chunk in stream:
                if not chunk:
                    continue
                sent += len(chunk)
                if sse:
                    event = {
                        "type": "speech.audio.delta",
                        "audio": base64.b64encode(chunk).decode(),
                    }
                    self.write(b"data: " + dumps(event) + b"\n\n")
                else:
                    self.write(chunk)
                await self.flush()
            if sse:
                tokens = estimate_tokens(text)
                done = {
                    "type": "speech.audio.done",
                    "usage": {"input_tokens": tokens, "output_tokens": 0, "total_tokens": tokens},
                }
                self.write(b"data: " + dumps(done) + b"\n\n")

        def error_event(error: ApiError) -> bytes:
            return b"data: " + dumps({"type": "error", **error.envelope()}) + b"\n\n"

        try:
            await self.run_relay(pump(), error_event if sse else None)
        finally:
            await stream.aclose()
        self.account(
            Usage(estimate_tokens(text), 0, estimated=True),
            outcome,
            cost=cost,
            media={"characters": len(text), "audio_bytes": sent},
        )
        if self._client_gone:
            self.done()
        else:
            self.finish()


class SpeechStreamHandler(SpeechHandler):
    """Always streamed: raw audio chunks, or SSE (speech.audio.delta, speech.audio.done)
    with ``stream_format: "sse"`` or ``Accept: text/event-stream``."""

    endpoint = "audio.speech.stream"
    always_stream = True

    def wants_sse(self, body: Json) -> bool:
        fmt = body.get("stream_format")
        if fmt not in (None, "audio", "sse"):
            raise ApiError(400, "stream_format must be 'audio' or 'sse'.", param="stream_format")
        return fmt == "sse" or (
            fmt is None and "text/event-stream" in self.request.headers.get("Accept", "")
        )


MAX_EDIT_IMAGES = 16  # OpenAI's limit for the GPT image models


class ImageEditHandler(UploadHandler):
    """POST /v1/images/edits: one image (``image``) or several (``image[]``), an optional
    ``mask``, and the form fields, relayed as OpenAI's multipart; priced per image."""

    endpoint = "images.edits"
    kind = "edits"
    file_fields = frozenset({"image", "image[]", "mask", "markup"})
    needs_prompt = True
    max_images = MAX_EDIT_IMAGES

    async def post(self) -> None:
        self._parts()
        assert self.parser is not None
        fields = self.text_fields()
        values = dict(fields)
        route = self.resolve({"model": values.get("model"), "user": values.get("user")})
        files = [p for p in self.parser.parts if p.file is not None]
        images = [p for p in files if p.name in ("image", "image[]")]
        if not images:
            raise ApiError(
                400, "Upload an image in the 'image' field.", param="image", code="invalid_value"
            )
        if len(images) > self.max_images:
            raise ApiError(
                400,
                f"At most {self.max_images} image(s) can be sent.",
                param="image",
                code="invalid_value",
            )
        for part in files:
            if part.size == 0:
                raise ApiError(
                    400, f"The {part.name!r} file is empty.", param=part.name, code="invalid_value"
                )
        prompt = values.get("prompt", "")
        if self.needs_prompt and not prompt.strip():
            raise ApiError(
                400, "prompt must be a non-empty string.", param="prompt", code="invalid_value"
            )
        _form_int(values, "n", 1, 10)  # the provider makes them; refused early if wrong
        fmt = values.get("response_format", "url")
        if fmt not in IMAGE_FORMATS:
            raise ApiError(
                400, "response_format must be 'url' or 'b64_json'.", param="response_format"
            )
        if values.get("stream", "false").lower() not in ("false", "0", ""):
            raise ApiError(
                400,
                "Streamed image edits are not supported by this gateway; omit stream.",
                param="stream",
                code="unsupported_value",
            )
        await self.admit(
            {}, prompt_tokens=estimate_tokens(prompt) if prompt else 0, completion_reserve=False
        )
        uploads = [
            Upload(
                p.file,
                p.filename or p.name.rstrip("[]") + ".png",
                p.content_type or "application/octet-stream",
                p.size,
                p.name,
            )
            for p in files
            if p.file is not None
        ]

        async def call(target: Target, t: Timeouts) -> Json:
            return await target.adapter.image_edit(self.kind, fields, uploads, target.model, t)

        result, self.outcome = await self.ctx.router.run(route, call)
        target = self.outcome.target
        made = len(result.get("data") or [])
        asked = values.get("size") or "1024x1024"
        # "auto" is priced by what the provider says it made, when it says.
        size = str(result.get("size") or asked) if asked == "auto" else asked
        quality = values.get("quality") or ("standard" if "dall-e" in target.model else "medium")
        if quality == "auto":
            quality = str(result.get("quality") or "medium")
        each = self.ctx.media_prices.image(target.model, size, quality, _pricing(target))
        usage = Usage.from_openai(_token_usage(result.get("usage"))) or Usage(
            estimate_tokens(prompt) if prompt else 0, 0, estimated=True
        )
        cost = self.account(
            usage,
            self.outcome,
            cost=None if each is None else round(each * made, 10),
            media={
                "images": made,
                "size": size,
                "quality": quality,
                "inputs": len(images),
                "bytes": sum(p.size for p in files),
            },
        )
        self.answer_headers(self.outcome, cost)
        self.send_json(result)


class ImageVariationHandler(ImageEditHandler):
    """POST /v1/images/variations (dall-e-2's): one square PNG in ``image``, no prompt."""

    endpoint = "images.variations"
    kind = "variations"
    file_fields = frozenset({"image"})
    needs_prompt = False
    max_images = 1


def _form_int(values: dict[str, str], name: str, low: int, high: int) -> None:
    raw = values.get(name)
    if raw is None or raw == "":
        return
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(
            400,
            f"{name} must be an integer from {low} to {high}.",
            param=name,
            code="invalid_value",
        )
