"""Loads the canonical Avro contracts from schemas/avro/*.avsc.

Shared named types (the envelope) live in their own files and are inlined into each
entity schema, so every registered subject is self-contained for consumers.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema

from streams.errors import SchemaError

AVRO_DIR = Path(__file__).resolve().parent / "avro"
NAMESPACE = "io.pssync.canonical"
# Files holding named types that entity schemas refer to by name.
SHARED = ("envelope",)


def _read(name: str) -> dict[str, Any]:
    path = AVRO_DIR / f"{name}.avsc"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise SchemaError(f"no schema file {path}; add it or check the entity name") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path} is not valid JSON: {exc}") from None
    return data


def entities() -> list[str]:
    """Names of the entity contracts (every .avsc that is not a shared type)."""
    return sorted(p.stem for p in AVRO_DIR.glob("*.avsc") if p.stem not in SHARED)


def _inline(node: Any, shared: dict[str, dict[str, Any]], seen: set[str]) -> Any:
    if isinstance(node, str):
        full = node if "." in node else f"{NAMESPACE}.{node}"
        if full in shared and full not in seen:
            seen.add(full)
            return _inline(shared[full], shared, seen)
        return node
    if isinstance(node, list):
        return [_inline(n, shared, seen) for n in node]
    if isinstance(node, dict):
        return {k: (_inline(v, shared, seen) if k in ("type", "items", "values", "fields") else v)
                for k, v in node.items()}
    return node


@cache
def _shared() -> dict[str, dict[str, Any]]:
    out = {}
    for name in SHARED:
        data = _read(name)
        out[f"{data.get('namespace', NAMESPACE)}.{data['name']}"] = data
    return out


@cache
def _schema_json(entity: str) -> str:
    return json.dumps(_inline(_read(entity), _shared(), set()), sort_keys=False)


def schema(entity: str) -> dict[str, Any]:
    """The self-contained schema of `entity` as a JSON object (fresh copy)."""
    data: dict[str, Any] = json.loads(_schema_json(entity))
    return data


def schema_str(entity: str) -> str:
    return _schema_json(entity)


@cache
def parsed(entity: str) -> Any:
    """fastavro's parsed form of `entity`, validated once."""
    try:
        return parse_schema(schema(entity))
    except Exception as exc:  # fastavro raises several types for a bad schema
        raise SchemaError(f"schemas/avro/{entity}.avsc is not a valid Avro schema: {exc}") from exc
