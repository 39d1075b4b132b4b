"""Validation problems in words for people: what the admin API, the web UI (which puts a
message under the field its ``param`` names) and the config file loader say about bad
input. Pydantic's own wording ("Value error, ...", "List should have at least 1 item
after validation, not 0", links to errors.pydantic.dev) is written for developers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

# What the items of a list field are called, for "must list at least one <item>".
_ITEMS = {
    "deployments": ("deployment", "deployments"),
    "allowed_models": ("model", "models"),
    "allowed_ips": ("address or network", "addresses or networks"),
    "fallbacks": ("model", "models"),
    "capabilities": ("capability", "capabilities"),
    "models": ("model", "models"),
    "providers": ("provider", "providers"),
}
_KINDS = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "missing": "is required",
    "none_required": "must be null",
    "finite_number": "must be a finite number",
    "url_parsing": "must be a URL",
    "url_type": "must be a URL",
    "json_invalid": "must be valid JSON",
}
_TIMES = ("datetime", "date", "time")


@dataclass(frozen=True, slots=True)
class Problem:
    """The first problem of some input: where (``param``, dotted as the API names fields:
    ``deployments.0.model``; None for the input as a whole), and what, in words."""

    param: str | None
    text: str  # without the field's name: "must be a whole number"
    unknown_field: bool  # a field the model does not have (a typo, most likely)

    @property
    def where(self) -> str | None:
        """The field as people read it: ``deployments[0].model``."""
        return None if self.param is None else readable_path(self.param.split("."))

    @property
    def message(self) -> str:
        """ "<field>: <text>", or the text alone for the input as a whole."""
        where = self.where
        if where is None:
            return _sentence(self.text)
        field = where.rsplit(".", 1)[-1]
        if self.text.startswith(field + " "):  # names its field already
            return where[: len(where) - len(field)] + self.text
        return f"{where}: {self.text}"


def readable_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def first_problem(exc: ValidationError, model: type[BaseModel] | None = None) -> Problem:
    """The first of ``exc``'s errors, in words. A check of the whole model (a
    model_validator) whose message starts with one of ``model``'s field names is put on
    that field (the web UI shows it there)."""
    error = exc.errors()[0]
    loc = error["loc"]
    param = ".".join(str(p) for p in loc) or None
    text = describe(error)
    if param is None and model is not None:
        first = text.split(" ", 1)[0]
        if first in model.model_fields:
            param = first
    return Problem(param, text, error["type"] == "extra_forbidden")


def describe(error: ErrorDetails) -> str:
    """One pydantic error as a phrase about its field ("must be at least 1")."""
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    loc = error["loc"]
    field = str(loc[-1]) if loc and isinstance(loc[-1], str) else ""
    if kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        return str(cause) if cause is not None else _strip_prefix(error["msg"])
    if kind in _KINDS:
        return _KINDS[kind]
    if kind == "extra_forbidden":
        return "is not a field this takes"
    if kind == "literal_error" or kind == "enum":
        return f"must be one of {ctx.get('expected', '')}".rstrip()
    if kind == "too_short":
        return _at_least(field, int(ctx.get("min_length", 1)))
    if kind == "too_long":
        n = int(ctx.get("max_length", 0))
        one, many = _ITEMS.get(field, ("item", "items"))
        return f"must list at most {n} {one if n == 1 else many}"
    if kind == "string_too_short":
        n = int(ctx.get("min_length", 1))
        return "must not be empty" if n == 1 else f"must be at least {n} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx.get('pattern')}"
    bounds = {
        "greater_than": "must be greater than",
        "greater_than_equal": "must be at least",
        "less_than": "must be less than",
        "less_than_equal": "must be at most",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()), "")
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return f"{bounds[kind]} {limit}"
    if any(kind.startswith(t) for t in _TIMES):
        return "must be an ISO 8601 date-time, such as 2030-01-31T00:00:00Z"
    return _strip_prefix(error["msg"])


def _at_least(field: str, n: int) -> str:
    one, many = _ITEMS.get(field, ("item", "items"))
    return f"must list at least one {one}" if n == 1 else f"must list at least {n} {many}"


def _strip_prefix(msg: str) -> str:
    """Pydantic's message as a phrase: "Input should be ..." -> "should be ..."."""
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    if msg.startswith("Input "):
        return msg[len("Input ") :]
    return msg[:1].lower() + msg[1:]


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
