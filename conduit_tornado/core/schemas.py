"""Admin API request bodies. Unknown fields are rejected so typos never pass silently."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

BudgetDuration = Literal["1d", "7d", "30d", "monthly", "total"]
ProviderType = Literal["openai", "azure", "anthropic", "gemini", "ollama", "mock"]
Strategy = Literal["weighted", "round_robin", "least_busy", "lowest_latency"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$")
Name = Annotated[str, Field(min_length=1, max_length=200)]
PositiveInt = Annotated[int, Field(ge=1)]
Usd = Annotated[float, Field(ge=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _check_networks(values: list[str]) -> list[str]:
    out = []
    for raw in values:
        try:
            out.append(str(ipaddress.ip_network(raw.strip(), strict=False)))
        except ValueError as exc:
            raise ValueError(f"{raw!r} is not an IP address or CIDR network") from exc
    return out


def _check_patterns(values: list[str]) -> list[str]:
    for v in values:
        if not v or len(v) > 200:
            raise ValueError("model patterns must be 1 to 200 characters")
    return values


class RateLimits(Strict):
    rpm: PositiveInt | None = None
    rpd: PositiveInt | None = None
    tpm: PositiveInt | None = None


class ModelLimits(RateLimits):
    """Limits on one key's use of one model (on top of the key's own)."""


class UserLimits(RateLimits):
    """Limits applied separately to each end user (the OpenAI ``user`` field) of a key."""

    max_budget: Usd | None = None
    budget_duration: BudgetDuration | None = None


class KeyFields(Strict):
    """Fields shared by key creation and update (all optional on update)."""

    name: Name | None = None
    enabled: bool | None = None
    expires_at: datetime | None = None
    allowed_models: list[str] | None = None
    allowed_ips: list[str] | None = None
    rpm: PositiveInt | None = None
    rpd: PositiveInt | None = None
    tpm: PositiveInt | None = None
    max_parallel: PositiveInt | None = None
    max_realtime_sessions: PositiveInt | None = None
    max_budget: Usd | None = None
    budget_duration: BudgetDuration | None = None
    group: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    metadata: dict[str, Any] | None = None
    model_limits: dict[str, ModelLimits] | None = None
    user_limits: UserLimits | None = None

    @field_validator("expires_at")
    @classmethod
    def _expiry(cls, v: datetime | None) -> datetime | None:
        return _utc(v)

    @field_validator("allowed_ips")
    @classmethod
    def _ips(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _check_networks(v)

    @field_validator("allowed_models")
    @classmethod
    def _models(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _check_patterns(v)


class KeyCreate(KeyFields):
    name: Name


class KeyUpdate(KeyFields):
    """PATCH body: only the fields present change; null clears an optional limit."""


class GroupFields(Strict):
    """A team: keys name it in ``group`` and share its limits and budget."""

    rpm: PositiveInt | None = None
    rpd: PositiveInt | None = None
    tpm: PositiveInt | None = None
    max_parallel: PositiveInt | None = None
    max_budget: Usd | None = None
    budget_duration: BudgetDuration | None = None
    metadata: dict[str, Any] | None = None


class GroupCreate(GroupFields):
    name: Annotated[str, Field(min_length=1, max_length=200)]


class GroupUpdate(GroupFields):
    pass


class SpendUpdate(Strict):
    """Set the current period's spend (0 resets it) or add to it (negative to refund)."""

    spend: Usd | None = None
    add: float | None = None

    @model_validator(mode="after")
    def _one(self) -> SpendUpdate:
        if (self.spend is None) == (self.add is None):
            raise ValueError("give exactly one of spend or add")
        return self


class ProviderFields(Strict):
    name: str | None = None
    type: ProviderType | None = None
    base_url: str | None = None
    api_key: SecretStr | None = None
    headers: dict[str, str] | None = None
    options: dict[str, Any] | None = None
    enabled: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not NAME_RE.match(v):
            raise ValueError("names use letters, digits and . _ : / @ - (at most 200)")
        return v

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("base_url must be an http(s) URL")
        return v.rstrip("/")


class ProviderCreate(ProviderFields):
    name: str
    type: ProviderType

    @model_validator(mode="after")
    def _needs_url(self) -> ProviderCreate:
        if self.type not in ("mock", "openai", "anthropic", "gemini") and not self.base_url:
            raise ValueError(f"base_url is required for {self.type} providers")
        return self


class ProviderUpdate(ProviderFields):
    pass


class Pricing(Strict):
    """USD per million tokens; overrides the bundled price table for one mapping."""

    input_per_mtok: Usd = 0.0
    output_per_mtok: Usd = 0.0
    cached_input_per_mtok: Usd | None = None
    per_image: Usd | dict[str, Usd] | None = None
    per_minute: Usd | None = None
    per_1k_chars: Usd | None = None
    realtime: dict[str, Usd] | None = None


class Deployment(Strict):
    provider: str
    model: Annotated[str, Field(min_length=1, max_length=300)]
    weight: Annotated[float, Field(gt=0, le=1_000_000)] = 1.0
    priority: Annotated[int, Field(ge=0, le=1000)] = 0
    timeout: Annotated[float, Field(gt=0)] | None = None
    connect_timeout: Annotated[float, Field(gt=0)] | None = None
    first_byte_timeout: Annotated[float, Field(gt=0)] | None = None
    pricing: Pricing | None = None


class ModelFields(Strict):
    name: str | None = None
    deployments: Annotated[list[Deployment], Field(min_length=1, max_length=100)] | None = None
    strategy: Strategy | None = None
    fallbacks: list[str] | None = None
    pricing: Pricing | None = None
    description: Annotated[str, Field(max_length=2000)] | None = None
    enabled: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not NAME_RE.match(v):
            raise ValueError("names use letters, digits and . _ : / @ - (at most 200)")
        return v


class ModelCreate(ModelFields):
    name: str
    deployments: Annotated[list[Deployment], Field(min_length=1, max_length=100)]


class ModelUpdate(ModelFields):
    pass
