"""The optional config file (YAML or TOML) declaring providers and model mappings.

Strings may reference the environment as ``${NAME}`` so secrets stay out of the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from conduit_tornado.core.schemas import ModelCreate, ProviderCreate
from conduit_tornado.core.validation import Problem, first_problem, readable_path

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    pass


def _expand(value: Any, source: str, loc: tuple[int | str, ...] = ()) -> Any:
    """``value`` with every ``${NAME}`` replaced from the environment; an unset one is an
    error naming the file, the entry and the variable."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in os.environ:
                raise ConfigError(
                    f"{source}: {readable_path(loc)}: the environment variable {name} is not "
                    f"set (the file refers to it as ${{{name}}})"
                )
            return os.environ[name]

        return _ENV.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, source, (*loc, i)) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _expand(v, source, (*loc, str(k))) for k, v in value.items()}
    return value


def load_config(path: Path) -> tuple[list[ProviderCreate], list[ModelCreate]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}"
        ) from exc
    return parse_config(raw or {}, str(path))


def parse_config(
    raw: Any, source: str = "config"
) -> tuple[list[ProviderCreate], list[ModelCreate]]:
    """Validate a config structure (from a file, or a dict given to ``start``)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    # jupyterhub: read by conduit_tornado/hub/policy.py when the gateway is a hub service.
    unknown = set(raw) - {"providers", "models", "jupyterhub"}
    if unknown:
        raise ConfigError(
            f"{source}: unknown sections {sorted(unknown)}; expected providers, models, jupyterhub"
        )
    raw = _expand(raw, source)
    providers = _entries(raw, "providers", ProviderCreate, source)
    models = _entries(raw, "models", ModelCreate, source)
    return providers, models


E = TypeVar("E", bound=BaseModel)


def _entries(raw: dict[str, Any], section: str, model: type[E], source: str) -> list[E]:
    """One section's entries, each checked on its own, so a problem names its entry:
    "providers.yaml: models[1].deployments: must list at least one deployment"."""
    items = raw.get(section) or []
    if not isinstance(items, list):
        raise ConfigError(f"{source}: {section} must be a list of entries")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(model.model_validate(item))
        except ValidationError as exc:
            problem = first_problem(exc, model)
            text = (
                "is not a field this section takes (a misspelling?)"
                if problem.unknown_field
                else problem.text
            )
            where = ".".join(p for p in (section, str(i), problem.param) if p)
            named = item.get("name") if isinstance(item, dict) else None
            also = f" (the entry named {named!r})" if isinstance(named, str) else ""
            message = Problem(where, text, problem.unknown_field).message
            raise ConfigError(f"{source}: {message}{also}") from None
    return out
