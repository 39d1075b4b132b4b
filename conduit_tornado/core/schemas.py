"""Admin API request bodies. Unknown fields are rejected so typos never pass silently."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .validation import first_problem

BudgetDuration = Literal["1d", "7d", "30d", "monthly", "total"]
ProviderType = Literal["openai", "azure", "anthropic", "gemini", "ollama", "mock"]
Strategy = Literal["weighted", "round_robin", "least_busy", "lowest_latency"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$")
Name = Annotated[str, Field(min_length=1, max_length=200)]
#: Integers the stores can hold (BSON's and SQLite's are 64-bit, signed).
MAX_INT = 2**63 - 1
PositiveInt = Annotated[int, Field(ge=1, le=MAX_INT)]
Usd = Annotated[float, Field(ge=0)]


#: Deepest nesting of free-form JSON the gateway stores (key and group metadata, realtime
#: session settings). Stored documents are served back as JSON and written to MongoDB,
#: whose encoders have nesting limits of their own: refusing at write keeps every later
#: read answerable.
MAX_STORED_DEPTH = 32
MAX_PROVIDER_HEADERS = 64
MAX_URL = 2048
# RFC 9110 field names (tokens); values: visible latin-1 characters, spaces and tabs.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]{0,8192}")
# Headers that frame or route the request: the HTTP client sets them, never a provider's
# configuration (a wrong one would desynchronise the connection).
_RESERVED_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "via",
    }
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def unstorable(value: Any, limit: int = MAX_STORED_DEPTH) -> str | None:
    """Why JSON-like data cannot be stored and served back, or None: objects and arrays
    nested deeper than ``limit``, integers beyond 64 bits, NUL in object keys (MongoDB
    refuses the last two). Iterative, so hostile depth costs a loop, not the stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if any("\x00" in key for key in item):
                return "object keys must not contain NUL characters"
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            if isinstance(item, int) and not -MAX_INT - 1 <= item <= MAX_INT:
                return "integers must fit in 64 bits"
            continue
        if depth >= limit:
            return f"nested deeper than {limit} levels"
        stack.extend((child, depth + 1) for child in children)
    return None


def _storable(value: dict[str, Any] | None) -> dict[str, Any] | None:
    problem = None if value is None else unstorable(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def check_base_url(url: str) -> str:
    """An http(s) URL the adapters can append paths to: no credentials (they would be
    echoed wherever the URL is shown: use api_key or headers), no query or fragment, no
    whitespace or control characters."""
    if len(url) > MAX_URL or any(c <= " " or c == "\x7f" for c in url):
        raise ValueError(f"base_url must be a URL of at most {MAX_URL} characters, no spaces")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a malformed port)
    except ValueError as exc:
        raise ValueError(f"base_url is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("base_url must be an http(s) URL with a host")
    if "@" in parts.netloc:
        raise ValueError(
            "base_url must not hold credentials (user:password@); use api_key or headers"
        )
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError("base_url must not have a query or fragment")
    return url.rstrip("/")


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    """Extra headers sent upstream as given: token names, latin-1 values without control
    characters (CR or LF would let a value add headers of its own)."""
    if len(headers) > MAX_PROVIDER_HEADERS:
        raise ValueError(f"at most {MAX_PROVIDER_HEADERS} headers")
    seen: set[str] = set()
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name[:64]!r} is not a valid header name")
        lowered = name.lower()
        if lowered in _RESERVED_HEADERS:
            raise ValueError(f"the header {name!r} is set by the gateway itself")
        if lowered in seen:
            raise ValueError(f"the header {name!r} is given twice")
        seen.add(lowered)
        if not _HEADER_VALUE.fullmatch(value):
            raise ValueError(
                f"the value of {name!r} must be latin-1 text without control characters "
                "(at most 8192 characters)"
            )
    return headers


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

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return _storable(v)


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

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return _storable(v)


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


Pem = Annotated[str, Field(min_length=1, max_length=512 * 1024)]


class ProviderOptions(Strict):
    """Options every HTTP provider takes.

    ``client_cert`` and ``client_key``: a client certificate for providers that require
    mutual TLS, each PEM text or the path of a PEM file on the gateway's host. Their
    contents are checked where they are loaded (routing/clients.py); here only their shape.
    """

    client_cert: Pem | None = None
    client_key: Pem | None = None

    @model_validator(mode="after")
    def _pair(self) -> ProviderOptions:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        return self


class OpenAIOptions(ProviderOptions):
    """``responses``: 'native' relays /v1/responses to the provider's own Responses API,
    'translate' sends it as chat completions. Unset: native for OpenAI's own URL only."""

    responses: Literal["native", "translate"] | None = None


class AzureOptions(ProviderOptions):
    api_version: Annotated[str, Field(pattern=r"^[0-9A-Za-z.-]{1,40}$")] | None = None


class MockOptions(Strict):
    """The in-process mock provider (routing/providers/mock.py)."""

    latency_ms: Annotated[float, Field(ge=0, le=600_000)] = 0.0
    chunk_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0
    words: Annotated[int, Field(ge=1, le=100_000)] | None = None
    dimensions: Annotated[int, Field(ge=1, le=4096)] = 8


PROVIDER_OPTIONS: dict[str, type[Strict]] = {
    "openai": OpenAIOptions,
    "azure": AzureOptions,
    "anthropic": ProviderOptions,
    "gemini": ProviderOptions,
    "ollama": ProviderOptions,
    "mock": MockOptions,
}


def check_options(provider_type: str, options: dict[str, Any]) -> dict[str, Any]:
    """A provider's options checked against its type; ValueError names the first problem."""
    try:
        model = PROVIDER_OPTIONS[provider_type].model_validate(options)
    except ValidationError as exc:
        problem = first_problem(exc, PROVIDER_OPTIONS[provider_type])
        if problem.unknown_field:
            raise ValueError(
                f"{provider_type} providers take no option {problem.param!r}"
            ) from None
        raise ValueError(problem.message) from None
    return model.model_dump(exclude_unset=True)


class ProviderFields(Strict):
    name: str | None = None
    type: ProviderType | None = None
    base_url: str | None = Field(
        None,
        description="Where the provider's API is: the gateway appends each call's path to "
        "it. openai (and OpenAI-compatible servers): up to and including the version path, "
        "e.g. https://api.openai.com/v1 (the default); /chat/completions, /embeddings ... "
        "are appended. ollama: ending in /v1, e.g. http://127.0.0.1:11434/v1 (required). "
        "azure: the resource's endpoint without a path, e.g. https://NAME.openai.azure.com "
        "(required); /openai/deployments/{deployment}/... is appended. anthropic: without "
        "/v1, e.g. https://api.anthropic.com (the default); /v1/messages is appended. "
        "gemini: without a version, e.g. https://generativelanguage.googleapis.com (the "
        "default); /v1beta/models/{model}:generateContent is appended. mock: not used.",
    )
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
        return None if v is None else check_base_url(v)

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return None if v is None else check_headers(v)

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, v: SecretStr | None) -> SecretStr | None:
        # Sent in a header: the same rule as header values.
        if v is not None and not _HEADER_VALUE.fullmatch(v.get_secret_value()):
            raise ValueError("api_key must be latin-1 text without control characters")
        return v

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        kind = info.data.get("type")
        # Without a type (an update) the catalog checks them against the stored type.
        return v if v is None or kind is None else check_options(kind, v)


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
    cache_write_per_mtok: Usd | None = None
    cache_write_1h_per_mtok: Usd | None = None
    audio_input_per_mtok: Usd | None = None
    audio_output_per_mtok: Usd | None = None
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
    health_check: bool | None = None  # false: no active checks (routing/health.py)


Capability = Literal[
    "chat",
    "responses",
    "completions",
    "embeddings",
    "images",
    "audio",
    "realtime",
    "moderations",
    "rerank",
]


class ModelFields(Strict):
    name: str | None = None
    deployments: Annotated[list[Deployment], Field(min_length=1, max_length=100)] | None = None
    strategy: Strategy | None = None
    fallbacks: list[str] | None = None
    pricing: Pricing | None = None
    description: Annotated[str, Field(max_length=2000)] | None = None
    enabled: bool | None = None
    #: What the model can do; requests for anything else are refused. Unset: what its
    #: providers' types can do (routing/catalog.py), checked by the providers.
    capabilities: Annotated[list[Capability], Field(max_length=16)] | None = None

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
