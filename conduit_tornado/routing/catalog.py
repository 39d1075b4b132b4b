"""Providers and model mappings: admin CRUD and the in-memory snapshot routing reads.

The hot path never queries the store for these: it reads a snapshot that is reloaded
after every admin change on this instance, when the change feed says another instance
made one (store/changes.py), and every ``catalog_refresh`` seconds as a backstop.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conduit_tornado.core.clock import Clock
from conduit_tornado.core.errors import ApiError, not_found, reject_nulls
from conduit_tornado.core.schemas import (
    ModelCreate,
    ModelUpdate,
    ProviderCreate,
    ProviderUpdate,
    check_options,
)
from conduit_tornado.core.security import CredentialError, SecretBox
from conduit_tornado.store import Doc, DuplicateError, Store
from conduit_tornado.store.changes import CATALOG, note

from .clients import ClientConfigError, client_identity
from .model_kinds import model_kinds

log = logging.getLogger("conduit.catalog")
PROVIDERS = "providers"
MODELS = "models"
_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Provider:
    id: str
    name: str
    type: str
    base_url: str | None
    api_key: str | None = field(repr=False)
    headers: dict[str, str] = field(repr=False)
    options: dict[str, Any]
    enabled: bool
    credential_error: str | None = None


@dataclass(frozen=True, slots=True)
class ModelRoute:
    name: str
    deployments: list[dict[str, Any]]
    strategy: str
    fallbacks: list[str]
    pricing: dict[str, Any] | None
    description: str | None
    enabled: bool
    created_at: datetime
    declared: frozenset[str] | None = None  # capabilities the admin set, if any


#: What each provider type's adapter can be asked for.
PROVIDER_CAPABILITIES: dict[str, frozenset[str]] = {
    "openai": frozenset(
        {
            "chat",
            "responses",
            "completions",
            "embeddings",
            "images",
            "audio",
            "realtime",
            "moderations",
            "rerank",
        }
    ),
    "azure": frozenset(
        {"chat", "responses", "completions", "embeddings", "images", "audio", "realtime"}
    ),
    "anthropic": frozenset({"chat", "responses", "completions"}),
    "gemini": frozenset({"chat", "responses", "completions", "embeddings"}),
    "ollama": frozenset({"chat", "responses", "completions", "embeddings"}),
    "mock": frozenset(
        {"chat", "responses", "completions", "embeddings", "images", "audio", "realtime"}
    ),
}


def capabilities(route: ModelRoute, providers: dict[str, Provider]) -> list[str]:
    """What a virtual model can do: as declared, else what its deployments' upstream
    models can do through their providers (model_kinds.py), or, for an upstream model
    not known by name, what its provider type can."""
    if route.declared is not None:
        return sorted(route.declared)
    found: set[str] = set()
    for dep in route.deployments:
        provider = providers.get(dep["provider"])
        if provider is not None:
            serves = PROVIDER_CAPABILITIES.get(provider.type, frozenset())
            kinds = model_kinds(dep["model"])
            found |= serves if kinds is None else serves & kinds
    return sorted(found)


def _without_userinfo(url: str | None) -> str | None:
    """A URL stored before credentials in base_url were refused, shown without them."""
    if url is None or "@" not in url:
        return url
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    return f"{scheme}{sep}{authority.rpartition('@')[2]}{slash}{path}"


def _shown_options(doc: Doc) -> dict[str, Any]:
    """Options as shown: a client certificate's private key is reported as set, never
    shown (given as PEM text, it is a credential)."""
    options: dict[str, Any] = doc.get("options") or {}
    if "client_key" not in options and not doc.get("has_client_key"):
        return options
    return {**options, "client_key": "(set)"}


def _key_apart(options: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Options without the client certificate's private key, and the key: it is sealed
    with the other credentials, not stored in the clear."""
    rest = {k: v for k, v in options.items() if k != "client_key"}
    key = options.get("client_key")
    return rest, key if isinstance(key, str) else None


def provider_view(doc: Doc) -> dict[str, Any]:
    """The admin view: credentials are reported as present or not, never shown."""
    return {
        "id": doc["_id"],
        "name": doc["name"],
        "type": doc["type"],
        "base_url": _without_userinfo(doc.get("base_url")),
        "has_api_key": bool(doc.get("has_api_key")),
        "header_names": doc.get("header_names", []),
        "options": _shown_options(doc),
        "enabled": doc.get("enabled", True),
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
    }


def _check_identity(options: dict[str, Any]) -> None:
    """A client certificate in the options must load now, not fail every call later."""
    try:
        client_identity(options)
    except ClientConfigError as exc:
        raise ApiError(400, f"options: {exc}", param="options", code="invalid_value") from None


def model_view(doc: Doc) -> dict[str, Any]:
    return {"name": doc["_id"], **{k: v for k, v in doc.items() if k != "_id"}}


class Catalog:
    def __init__(self, store: Store, box: SecretBox, clock: Clock) -> None:
        self._store = store
        self._box = box
        self._clock = clock
        self.providers: dict[str, Provider] = {}
        self.models: dict[str, ModelRoute] = {}

    # -- snapshot -------------------------------------------------------------------------

    async def refresh(self) -> None:
        providers = {}
        for doc in await self._all(PROVIDERS):
            p = self._provider(doc)
            providers[p.name] = p
        models = {}
        for doc in await self._all(MODELS):
            models[doc["_id"]] = ModelRoute(
                name=doc["_id"],
                deployments=doc["deployments"],
                strategy=doc.get("strategy", "weighted"),
                fallbacks=doc.get("fallbacks", []),
                pricing=doc.get("pricing"),
                description=doc.get("description"),
                enabled=doc.get("enabled", True),
                created_at=doc["created_at"],
                declared=frozenset(doc["capabilities"]) if doc.get("capabilities") else None,
            )
        self.providers, self.models = providers, models

    async def _all(self, collection: str) -> list[Doc]:
        out: list[Doc] = []
        while True:
            page = await self._store.find(collection, {}, offset=len(out), limit=_PAGE)
            out.extend(page)
            if len(page) < _PAGE:
                return out

    def _provider(self, doc: Doc) -> Provider:
        creds: dict[str, Any] = {}
        error = None
        if doc.get("credentials"):
            try:
                creds = json.loads(self._box.decrypt(doc["credentials"]))
            except CredentialError as exc:
                error = str(exc)
                log.error("provider %s: %s", doc["name"], exc)
        return Provider(
            id=doc["_id"],
            name=doc["name"],
            type=doc["type"],
            base_url=doc.get("base_url"),
            api_key=creds.get("api_key"),
            headers=creds.get("headers", {}),
            options={
                **doc.get("options", {}),
                **({"client_key": creds["client_key"]} if creds.get("client_key") else {}),
            },
            enabled=doc.get("enabled", True),
            credential_error=error,
        )

    # -- providers ------------------------------------------------------------------------

    def _seal(
        self, api_key: str | None, headers: dict[str, str], client_key: str | None = None
    ) -> dict[str, Any]:
        secrets_: dict[str, Any] = {"api_key": api_key, "headers": headers}
        if client_key is not None:
            secrets_["client_key"] = client_key
        return {
            "credentials": self._box.encrypt(json.dumps(secrets_)),
            "has_api_key": api_key is not None,
            "has_client_key": client_key is not None,
            "header_names": sorted(headers),
        }

    async def _changed(self) -> None:
        """After an admin write: a new snapshot here, and the other instances told."""
        await self.refresh()
        await note(self._store, CATALOG)

    async def create_provider(self, body: ProviderCreate) -> Doc:
        _check_identity(body.options or {})
        options, client_key = _key_apart(body.options or {})
        now = self._clock.now()
        doc: Doc = {
            "_id": "prov_" + secrets.token_hex(8),
            "name": body.name,
            "type": body.type,
            "base_url": body.base_url,
            "options": options,
            "enabled": True if body.enabled is None else body.enabled,
            "created_at": now,
            "updated_at": now,
            **self._seal(
                body.api_key.get_secret_value() if body.api_key else None,
                body.headers or {},
                client_key,
            ),
        }
        try:
            await self._store.insert(PROVIDERS, doc)
        except DuplicateError as exc:
            raise ApiError(
                409,
                f"A provider named {body.name!r} already exists.",
                code="provider_exists",
                param="name",
            ) from exc
        await self._changed()
        return doc

    async def get_provider(self, ref: str) -> Doc:
        doc = await self._store.get(PROVIDERS, ref) or await self._store.find_one(
            PROVIDERS, {"name": ref}
        )
        if doc is None:
            raise not_found(f"No provider {ref!r}.", code="provider_not_found")
        return doc

    async def list_providers(self, offset: int, limit: int) -> tuple[list[Doc], int]:
        docs = await self._store.find(PROVIDERS, {}, sort="name", offset=offset, limit=limit)
        return docs, await self._store.count(PROVIDERS, {})

    async def update_provider(self, ref: str, body: ProviderUpdate) -> Doc:
        doc = await self.get_provider(ref)
        fields = body.model_dump(exclude_unset=True, exclude={"api_key", "headers", "name"})
        if "name" in body.model_fields_set and body.name != doc["name"]:
            raise ApiError(
                400,
                "A provider cannot be renamed: model mappings refer to it by name.",
                param="name",
            )
        reject_nulls(fields, "type", "enabled")
        if "options" in fields and fields["options"] is None:
            fields["options"] = {}
        if "options" in fields or "type" in fields:
            # Options fit a type: check the ones the provider will have against the type
            # it will have (the schema could not: an update need not name the type).
            kind = str(fields.get("type", doc["type"]))
            options = fields["options"] if "options" in fields else doc.get("options")
            try:
                fields["options"] = check_options(kind, dict(options or {}))
            except ValueError as exc:
                raise ApiError(
                    400, f"options: {exc}", param="options", code="invalid_value"
                ) from None
            _check_identity(fields["options"])
        sealed = ("api_key", "headers", "options")
        if any(name in body.model_fields_set for name in sealed) or "options" in fields:
            current = self.providers.get(doc["name"])
            api_key = current.api_key if current else None
            headers = dict(current.headers) if current else {}
            client_key = current.options.get("client_key") if current else None
            if "api_key" in body.model_fields_set:
                api_key = body.api_key.get_secret_value() if body.api_key else None
            if "headers" in body.model_fields_set:
                headers = body.headers or {}
            if "options" in fields:
                fields["options"], client_key = _key_apart(fields["options"])
            fields.update(self._seal(api_key, headers, client_key))
        fields["updated_at"] = self._clock.now()
        updated = await self._store.update(PROVIDERS, doc["_id"], fields)
        if updated is None:
            raise not_found(f"No provider {ref!r}.", code="provider_not_found")
        await self._changed()
        return updated

    async def delete_provider(self, ref: str) -> None:
        doc = await self.get_provider(ref)
        users = sorted(
            m.name
            for m in self.models.values()
            if any(d["provider"] == doc["name"] for d in m.deployments)
        )
        if users:
            raise ApiError(
                409,
                f"Provider {doc['name']!r} is used by models: {', '.join(users)}.",
                code="provider_in_use",
            )
        await self._store.delete(PROVIDERS, doc["_id"])
        await self._changed()

    # -- models ---------------------------------------------------------------------------

    def _check_deployments(self, deployments: list[dict[str, Any]]) -> None:
        for i, dep in enumerate(deployments):
            if dep["provider"] not in self.providers:
                raise ApiError(
                    400,
                    f"Unknown provider {dep['provider']!r}.",
                    param=f"deployments[{i}].provider",
                    code="provider_not_found",
                )

    async def create_model(self, body: ModelCreate) -> Doc:
        await self.refresh()  # validate against the newest providers, not a stale snapshot
        data = body.model_dump(exclude_none=True)
        self._check_deployments(data["deployments"])
        if body.name in (body.fallbacks or []):
            raise ApiError(400, "A model cannot fall back to itself.", param="fallbacks")
        now = self._clock.now()
        doc: Doc = {
            "_id": data.pop("name"),
            "strategy": "weighted",
            "fallbacks": [],
            "enabled": True,
            **data,
            "created_at": now,
            "updated_at": now,
        }
        try:
            await self._store.insert(MODELS, doc)
        except DuplicateError as exc:
            raise ApiError(
                409,
                f"A model named {body.name!r} already exists.",
                code="model_exists",
                param="name",
            ) from exc
        await self._changed()
        return doc

    async def get_model(self, name: str) -> Doc:
        doc = await self._store.get(MODELS, name)
        if doc is None:
            raise not_found(f"No model {name!r}.", code="model_not_found")
        return doc

    async def list_models(self, offset: int, limit: int) -> tuple[list[Doc], int]:
        docs = await self._store.find(MODELS, {}, offset=offset, limit=limit)
        return docs, await self._store.count(MODELS, {})

    async def update_model(self, name: str, body: ModelUpdate) -> Doc:
        await self.refresh()
        fields = body.model_dump(exclude_unset=True)
        if "name" in fields and fields.pop("name") != name:
            raise ApiError(400, "A model cannot be renamed; create a new one.", param="name")
        reject_nulls(fields, "deployments", "strategy", "enabled")
        if fields.get("deployments"):
            self._check_deployments(fields["deployments"])
        if "fallbacks" in fields:
            fields["fallbacks"] = fields["fallbacks"] or []
            if name in fields["fallbacks"]:
                raise ApiError(400, "A model cannot fall back to itself.", param="fallbacks")
        unset = [k for k, v in fields.items() if v is None]
        changes = {k: v for k, v in fields.items() if v is not None}
        changes["updated_at"] = self._clock.now()
        doc = await self._store.update(MODELS, name, changes, unset)
        if doc is None:
            raise not_found(f"No model {name!r}.", code="model_not_found")
        await self._changed()
        return doc

    async def delete_model(self, name: str) -> None:
        if not await self._store.delete(MODELS, name):
            raise not_found(f"No model {name!r}.", code="model_not_found")
        await self._changed()

    # -- declarative config ---------------------------------------------------------------

    async def apply(self, providers: list[ProviderCreate], models: list[ModelCreate]) -> None:
        """Make the store match a config file's declarations (create or update by name)."""
        await self.refresh()
        for p in providers:
            update = ProviderUpdate(**p.model_dump(exclude={"name"}, exclude_unset=True))
            if p.name not in self.providers:
                try:
                    await self.create_provider(p)
                    continue
                except ApiError as exc:
                    # Another instance, starting with the same file on the same database,
                    # created it first (409): then this one updates it like any other.
                    if exc.status != 409:
                        raise
                    await self.refresh()
            await self.update_provider(p.name, update)
        for m in models:
            change = ModelUpdate(**m.model_dump(exclude={"name"}, exclude_unset=True))
            if m.name not in self.models:
                try:
                    await self.create_model(m)
                    continue
                except ApiError as exc:
                    if exc.status != 409:
                        raise
                    await self.refresh()
            await self.update_model(m.name, change)
