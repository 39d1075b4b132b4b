"""The client API of plain inference: chat and text completions, embeddings, models,
images (generations, edits, variations) and audio (transcription, translation, speech) with
their multipart uploads. Request bodies are the subset of OpenAI's fields the handlers check;
other fields are passed on to the provider."""

from __future__ import annotations

from conduit_tornado.api import inference, media

from .common import (
    AUDIO,
    MODEL,
    SSE,
    STRING,
    TEXT,
    Json,
    Op,
    nullable,
    ref,
)

SCHEMAS: dict[str, Json] = {
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": MODEL,
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role"],
                    "properties": {"role": STRING},
                },
            },
            "n": nullable({"type": "integer", "minimum": 1, "maximum": inference.MAX_N}),
            "stream": nullable({"type": "boolean"}),
            "user": STRING,
        },
        "description": "Other fields of OpenAI's request are passed on to the provider.",
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": STRING,
            "object": {"const": "chat.completion"},
            "created": {"type": "integer"},
            "model": STRING,
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "message"],
                    "properties": {
                        "index": {"type": "integer"},
                        "message": {
                            "type": "object",
                            "required": ["role"],
                            "properties": {"role": STRING, "content": nullable(STRING)},
                        },
                        "finish_reason": nullable(STRING),
                    },
                },
            },
            "usage": ref("Usage"),
        },
    },
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": MODEL,
            "prompt": {
                "anyOf": [
                    STRING,
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "anyOf": [
                                STRING,
                                {"type": "integer"},
                                {"type": "array", "items": {"type": "integer"}},
                            ]
                        },
                    },
                ]
            },
            "n": nullable({"type": "integer", "minimum": 1, "maximum": inference.MAX_N}),
            "stream": nullable({"type": "boolean"}),
        },
    },
    "Completion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": STRING,
            "object": {"const": "text_completion"},
            "created": {"type": "integer"},
            "model": STRING,
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "text"],
                    "properties": {"index": {"type": "integer"}, "text": STRING},
                },
            },
            "usage": ref("Usage"),
        },
    },
    "Usage": {
        "type": "object",
        "properties": {
            "prompt_tokens": {"type": "integer", "minimum": 0},
            "completion_tokens": {"type": "integer", "minimum": 0},
            "total_tokens": {"type": "integer", "minimum": 0},
        },
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": MODEL,
            "input": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "minLength": 1},
                    },
                    {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                    },
                ]
            },
            "encoding_format": {"enum": ["float", "base64"]},
            "dimensions": nullable({"type": "integer", "minimum": 1}),
        },
    },
    "EmbeddingList": {
        "type": "object",
        "required": ["object", "data", "model"],
        "properties": {
            "object": {"const": "list"},
            "model": STRING,
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["object", "embedding", "index"],
                    "properties": {
                        "object": {"const": "embedding"},
                        "index": {"type": "integer"},
                        "embedding": {
                            "anyOf": [
                                {"type": "array", "items": {"type": "number"}},
                                {"type": "string", "contentEncoding": "base64"},
                            ]
                        },
                    },
                },
            },
            "usage": ref("Usage"),
        },
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": STRING,
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": STRING,
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": ref("Model")},
        },
    },
    "ImageRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": MODEL,
            "prompt": {"type": "string", "pattern": r"\S"},
            "n": {"type": "integer", "minimum": 1, "maximum": 10},
            "response_format": {"enum": list(media.IMAGE_FORMATS)},
            "size": STRING,
            "quality": STRING,
        },
    },
    "ImageList": {
        "type": "object",
        "required": ["created", "data"],
        "properties": {
            "created": {"type": "integer"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"url": STRING, "b64_json": STRING, "revised_prompt": STRING},
                },
            },
        },
    },
    "AudioUpload": {
        "type": "object",
        "required": ["file", "model"],
        "properties": {
            "file": {"type": "string", "contentMediaType": "application/octet-stream"},
            "model": MODEL,
            "response_format": {"enum": list(media.TRANSCRIPT_FORMATS)},
            "language": STRING,
            "prompt": STRING,
            "temperature": STRING,
        },
    },
    "Transcript": {
        "type": "object",
        "required": ["text"],
        "properties": {"text": STRING},
    },
    "SpeechRequest": {
        "type": "object",
        "required": ["model", "input", "voice"],
        "properties": {
            "model": MODEL,
            "input": {"type": "string", "minLength": 1, "maxLength": media.MAX_SPEECH_INPUT},
            "voice": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "object"}]},
            "response_format": {"enum": list(media.SPEECH_FORMATS)},
            "speed": {"type": "number", "minimum": 0.25, "maximum": 4.0},
        },
    },
    "SpeechStreamRequest": {
        "allOf": [
            ref("SpeechRequest"),
            {"properties": {"stream_format": {"enum": ["audio", "sse"]}}},
        ]
    },
}

_IMAGE_FILE: Json = {"type": "string", "contentMediaType": "application/octet-stream"}
IMAGE_UPLOAD_SCHEMAS: dict[str, Json] = {
    "ImageEditUpload": {
        "type": "object",
        "required": ["model", "prompt", "image"],
        "properties": {
            "model": MODEL,
            "prompt": {"type": "string", "pattern": r"\S"},
            "image": _IMAGE_FILE,
            "image[]": {"type": "array", "items": _IMAGE_FILE, "maxItems": 16},
            "mask": _IMAGE_FILE,
            "n": {"type": "integer", "minimum": 1, "maximum": 10},
            "response_format": {"enum": list(media.IMAGE_FORMATS)},
            "size": STRING,
            "quality": STRING,
            "background": STRING,
            "output_format": STRING,
            "input_fidelity": STRING,
            "user": STRING,
        },
    },
    "ImageVariationUpload": {
        "type": "object",
        "required": ["model", "image"],
        "properties": {
            "model": MODEL,
            "image": _IMAGE_FILE,
            "n": {"type": "integer", "minimum": 1, "maximum": 10},
            "response_format": {"enum": list(media.IMAGE_FORMATS)},
            "size": STRING,
            "user": STRING,
        },
    },
}

PARAMS: dict[str, tuple[str, ...]] = {"models.ModelHandler": ("model",)}

_TRANSCRIPT_TYPES = dict.fromkeys(("text/plain", "text/vtt"), TEXT)
_SPEECH_TYPES = dict.fromkeys(sorted(set(media.SPEECH_FORMATS.values())), AUDIO)

OPS: dict[str, dict[str, Op]] = {
    "inference.ChatCompletionsHandler": {
        "post": Op(
            "Create a chat completion (streamed as server-sent events with stream: true).",
            ref("ChatCompletion"),
            body="ChatCompletionRequest",
            other_types={"text/event-stream": SSE},
        )
    },
    "inference.CompletionsHandler": {
        "post": Op(
            "Create a text completion (legacy); chat-only providers are translated.",
            ref("Completion"),
            body="CompletionRequest",
            other_types={"text/event-stream": SSE},
        )
    },
    "inference.EmbeddingsHandler": {
        "post": Op("Create embeddings.", ref("EmbeddingList"), body="EmbeddingRequest")
    },
    "models.ModelListHandler": {"get": Op("The models this key may use.", ref("ModelList"))},
    "models.ModelHandler": {"get": Op("One model this key may use.", ref("Model"))},
    "media.ImagesHandler": {"post": Op("Generate images.", ref("ImageList"), body="ImageRequest")},
    "media.ImageEditHandler": {
        "post": Op(
            "Edit images (multipart: image or image[], optional mask); priced per image.",
            ref("ImageList"),
            body="ImageEditUpload",
            body_type="multipart/form-data",
        )
    },
    "media.ImageVariationHandler": {
        "post": Op(
            "Variations of one square PNG (multipart); priced per image.",
            ref("ImageList"),
            body="ImageVariationUpload",
            body_type="multipart/form-data",
        )
    },
    "media.TranscriptionHandler": {
        "post": Op(
            "Transcribe audio (multipart upload).",
            ref("Transcript"),
            body="AudioUpload",
            body_type="multipart/form-data",
            other_types=_TRANSCRIPT_TYPES,
        )
    },
    "media.TranslationHandler": {
        "post": Op(
            "Translate audio into English text (multipart upload).",
            ref("Transcript"),
            body="AudioUpload",
            body_type="multipart/form-data",
            other_types=_TRANSCRIPT_TYPES,
        )
    },
    "media.SpeechHandler": {
        "post": Op(
            "Text to speech: audio bytes.", None, body="SpeechRequest", other_types=_SPEECH_TYPES
        )
    },
    "media.SpeechStreamHandler": {
        "post": Op(
            "Text to speech, streamed: raw audio, or server-sent events.",
            None,
            body="SpeechStreamRequest",
            other_types={**_SPEECH_TYPES, "text/event-stream": SSE},
        )
    },
}
