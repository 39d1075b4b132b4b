"""The optional config file (YAML or TOML) declaring providers and model mappings.

Strings may reference the environment as ``${NAME}`` so secrets stay out of the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from conduit_tornado.core.schemas import ModelCreate, ProviderCreate

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    pass


def _expand(value: Any) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(1) not in os.environ:
                raise ConfigError(f"environment variable {m.group(1)} is not set")
            return os.environ[m.group(1)]

        return _ENV.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
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
    raw = _expand(raw)
    try:
        providers = [ProviderCreate.model_validate(p) for p in raw.get("providers") or []]
        models = [ModelCreate.model_validate(m) for m in raw.get("models") or []]
    except ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return providers, models
