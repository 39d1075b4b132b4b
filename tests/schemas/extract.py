"""Regenerate openai_subset.json from OpenAI's published OpenAPI spec.

Usage: python tests/schemas/extract.py ../shared/openai-openapi/openapi.yaml.gz

Copies only the schemas the tests validate against (and what they reference), turning the
spec's OpenAPI-3.0 ``nullable: true`` into JSON Schema ``anyOf [..., null]``.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOTS = [
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
    "Response",
    "ResponseStreamEvent",
    "ResponseItemList",
    "CreateResponse",
    "CreateModerationResponse",
]
SOURCE = "openai/openai-openapi openapi.yaml at commit f85dbe223d40e1a31cba812ab2d755c7e98a92a3 (2026-08-21), MIT"


def refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            refs(value, found)
    elif isinstance(node, list):
        for value in node:
            refs(value, found)


def denull(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: denull(v) for k, v in node.items()}
        if node.pop("nullable", False):
            return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [denull(v) for v in node]
    return node


def main(path: str) -> None:
    with gzip.open(path, "rt") as fh:
        spec = yaml.safe_load(fh)
    schemas = spec["components"]["schemas"]
    wanted: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted.add(name)
        found: set[str] = set()
        refs(schemas[name], found)
        todo.extend(found - wanted)
    out = {
        "$comment": f"Extracted by tests/schemas/extract.py from {SOURCE}; nullable rewritten as anyOf null.",
        "components": {"schemas": {n: denull(schemas[n]) for n in sorted(wanted)}},
    }
    target = Path(__file__).with_name("openai_subset.json")
    target.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"{len(wanted)} schemas -> {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
