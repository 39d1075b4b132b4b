"""Check a request body against a provider SDK's own request types.

The fakes must not accept what the real provider refuses, and they were written from the
same understanding as the adapters: so each fake checks what it receives against the
definitions the provider ships (the ``anthropic`` and ``openai`` SDKs' ``TypedDict``
params; ``google-genai``'s pydantic models for Gemini's REST shapes). The providers refuse
unknown fields ("Extra inputs are not permitted"), missing required ones and wrong types;
so does this check.

The SDKs declare their TypedDicts with ``total=False`` and mark required keys with
``Required[...]`` inside string annotations, so ``__required_keys__`` is empty on them: the
walker reads the resolved annotations with their extras instead.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

import pydantic
import typing_extensions
from anthropic.types import message_create_params
from google.genai import types as g
from openai.types import (
    completion_create_params,
    embedding_create_params,
    image_generate_params,
)
from openai.types.audio import speech_create_params
from openai.types.chat import completion_create_params as chat_create_params

_REQUIRED = {typing.Required, typing_extensions.Required}
_NOT_REQUIRED = {typing.NotRequired, typing_extensions.NotRequired}
_LISTS = {list, Iterable, Sequence, typing.Iterable, typing.Sequence, typing.List}  # noqa: UP006
_MAPS = {dict, Mapping, typing.Dict, typing.Mapping}  # noqa: UP006


def _is_typed_dict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__annotations__")


@cache
def _fields(tp: type) -> tuple[dict[str, Any], frozenset[str]]:
    """(annotation by key, required keys) of an SDK TypedDict."""
    hints = typing_extensions.get_type_hints(tp, include_extras=True)
    fields: dict[str, Any] = {}
    required: set[str] = set()
    # Totality is per class: a total subclass (the SDKs' *Streaming params) does not make
    # the fields of its total=False base required.
    # (A TypedDict's __annotations__ also lists its bases' keys, and its bases are only in
    # __orig_bases__: its own keys are the rest.)
    owner_total: dict[str, bool] = {}

    def own(klass: Any) -> None:
        bases = [b for b in getattr(klass, "__orig_bases__", ()) if _is_typed_dict(b)]
        for base in bases:
            own(base)
        inherited = {n for base in bases for n in base.__annotations__}
        for name in klass.__annotations__:
            if name not in inherited:
                owner_total[name] = getattr(klass, "__total__", True)

    own(tp)
    for name, hint in hints.items():
        total = owner_total.get(name, True)
        origin = typing.get_origin(hint)
        while origin is typing.Annotated or origin is typing_extensions.Annotated:
            hint = typing.get_args(hint)[0]
            origin = typing.get_origin(hint)
        if origin in _REQUIRED:
            required.add(name)
            hint = typing.get_args(hint)[0]
        elif origin in _NOT_REQUIRED:
            hint = typing.get_args(hint)[0]
        elif total:
            required.add(name)
        fields[name] = hint
    return fields, frozenset(required)


def problems(value: Any, tp: Any, path: str = "body") -> list[str]:
    """What is wrong with ``value`` as a ``tp``, as the provider would word it (empty: fine)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return []
    if origin is typing.Annotated or origin is typing_extensions.Annotated:
        return problems(value, args[0], path)
    if origin in _REQUIRED or origin in _NOT_REQUIRED:
        return problems(value, args[0], path)
    if tp is None or tp is type(None):
        return [] if value is None else [f"{path}: Input should be None"]
    if origin is typing.Union or origin is types.UnionType:
        best: list[str] | None = None
        best_shallow = True
        for member in args:
            if isinstance(member, type) and issubclass(member, pydantic.BaseModel):
                continue  # a response model the SDK also accepts as input: not wire JSON
            found = problems(value, member, path)
            if not found:
                return []
            # A member of another kind altogether (a string where a list came) explains
            # less than one that matched the outer shape and failed deeper in.
            shallow = all(p.startswith(f"{path}: ") for p in found)
            if (
                best is None
                or (not shallow and best_shallow)
                or (shallow == best_shallow and len(found) < len(best))
            ):
                best, best_shallow = found, shallow
        return best or [f"{path}: Input does not match any accepted type"]
    if origin is typing.Literal or origin is typing_extensions.Literal:
        return [] if value in args else [f"{path}: Input should be one of {list(args)!r}"]
    if origin in _LISTS or tp in _LISTS:
        if not isinstance(value, list):
            return [f"{path}: Input should be a valid list"]
        item = args[0] if args else Any
        return [p for i, v in enumerate(value) for p in problems(v, item, f"{path}.{i}")]
    if origin in _MAPS or tp in _MAPS:
        if not isinstance(value, dict):
            return [f"{path}: Input should be a valid dictionary"]
        if len(args) == 2:
            return [p for k, v in value.items() for p in problems(v, args[1], f"{path}.{k}")]
        return []
    if _is_typed_dict(tp):
        if not isinstance(value, dict):
            return [f"{path}: Input should be a valid dictionary"]
        fields, required = _fields(tp)
        found = [f"{path}.{k}: Field required" for k in sorted(required - value.keys())]
        for key, item in value.items():
            if key not in fields:
                found.append(f"{path}.{key}: Extra inputs are not permitted")
            else:
                found.extend(problems(item, fields[key], f"{path}.{key}"))
        return found
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        try:
            tp.model_validate(value)
        except pydantic.ValidationError as exc:
            return [f"{path}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return []
    if tp is bool:
        return [] if isinstance(value, bool) else [f"{path}: Input should be a valid boolean"]
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{path}: Input should be a valid integer"]
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{path}: Input should be a valid number"]
    if tp is str:
        return [] if isinstance(value, str) else [f"{path}: Input should be a valid string"]
    if tp is bytes:
        return [] if isinstance(value, str | bytes) else [f"{path}: Input should be bytes"]
    if isinstance(tp, typing.TypeVar | typing.ForwardRef):
        return []
    if isinstance(tp, type):
        return [] if isinstance(value, tp) else [f"{path}: Input should be {tp.__name__}"]
    return []  # a construct the SDKs do not use for request bodies


def anthropic_messages(body: dict[str, Any]) -> list[str]:
    if body.get("stream"):
        return problems(body, message_create_params.MessageCreateParamsStreaming)
    return problems(body, message_create_params.MessageCreateParamsNonStreaming)


def openai_chat(body: dict[str, Any]) -> list[str]:
    if body.get("stream"):
        return problems(body, chat_create_params.CompletionCreateParamsStreaming)
    return problems(body, chat_create_params.CompletionCreateParamsNonStreaming)


def openai_completion(body: dict[str, Any]) -> list[str]:
    if body.get("stream"):
        return problems(body, completion_create_params.CompletionCreateParamsStreaming)
    return problems(body, completion_create_params.CompletionCreateParamsNonStreaming)


def openai_embedding(body: dict[str, Any]) -> list[str]:
    return problems(body, embedding_create_params.EmbeddingCreateParams)


def openai_image(body: dict[str, Any]) -> list[str]:
    if body.get("stream"):
        return problems(body, image_generate_params.ImageGenerateParamsStreaming)
    return problems(body, image_generate_params.ImageGenerateParamsNonStreaming)


def openai_speech(body: dict[str, Any]) -> list[str]:
    return problems(body, speech_create_params.SpeechCreateParams)


def gemini_generate(body: dict[str, Any]) -> list[str]:
    """Gemini's generateContent body, field by field, as google-genai models it (REST JSON
    is camelCase; the SDK's models take camelCase aliases and forbid unknown fields)."""
    shapes: dict[str, Any] = {
        "contents": list[g.Content],
        "systemInstruction": g.Content,
        "tools": list[g.Tool],
        "toolConfig": g.ToolConfig,
        "safetySettings": list[g.SafetySetting],
        "generationConfig": g.GenerationConfig,
        "cachedContent": str,
        "labels": dict[str, str],
    }
    found: list[str] = []
    for key, value in body.items():
        if key not in shapes:
            found.append(f'Invalid JSON payload received. Unknown name "{key}"')
        else:
            found.extend(problems(value, shapes[key], key))
    if "contents" not in body:
        found.append("contents: Field required")
    return found


def _warm() -> None:
    """google-genai builds its models on first use (defer_build): build them now, at import,
    so a fake's first request does not stall the event loop the gateway shares in tests."""
    for model in (g.Content, g.Tool, g.ToolConfig, g.SafetySetting, g.GenerationConfig):
        model.model_rebuild(force=True)
    gemini_generate({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    anthropic_messages({"model": "m", "max_tokens": 1, "messages": []})
    openai_chat({"model": "m", "messages": []})
    openai_completion({"model": "m", "prompt": "x"})
    openai_embedding({"model": "m", "input": "x"})
    openai_image({"model": "m", "prompt": "x"})
    openai_speech({"model": "m", "input": "x", "voice": "alloy"})


_warm()
