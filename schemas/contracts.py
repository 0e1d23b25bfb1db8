"""Loads the canonical Avro contracts from schemas/avro/*.avsc.

A contract's name is its file stem, except reference data: ``ref_<set>.avsc`` holds the
contract named ``<set>`` (``ref_currency.avsc`` -> ``currency``), so reference sets are told
from entities by file name and listed in REFERENCE.

Shared named types (the envelope) live in their own files and are inlined into each
contract, so every registered subject is self-contained for consumers.
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
# Files holding named types that contracts refer to by name.
SHARED = ("envelope",)
REFERENCE_PREFIX = "ref_"
# The canonical model as designed; test_contracts checks the files match these lists.
ENTITIES = (
    "customer", "legal_entity", "opportunity", "contract", "project", "task", "resource",
    "time_entry", "expense", "billing_event", "invoice", "revenue_schedule",
    "opportunity_line_item", "billing_milestone",
    # Source-shaped PSA rows, co-partitioned by the object they describe for the stages that
    # join them (expenses: an issue and its custom values).
    "psa_issue", "psa_custom_value",
)
REFERENCE = frozenset(
    {
        "currency", "tax_code", "department", "practice", "region", "service_line",
        "project_template", "role", "jurisdiction", "legal_entity_profile",
    }
)


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


class Catalog:
    """The contracts in one directory of .avsc files (the package's, or a scratch copy)."""

    def __init__(self, directory: Path = AVRO_DIR) -> None:
        self.directory = Path(directory)
        self._shared: dict[str, dict[str, Any]] | None = None
        self._json: dict[str, str] = {}

    def _path(self, name: str) -> Path:
        ref = self.directory / f"{REFERENCE_PREFIX}{name}.avsc"
        return ref if ref.exists() else self.directory / f"{name}.avsc"

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            raise SchemaError(f"no schema file {path}; add it or check the name") from None
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{path} is not valid JSON: {exc}") from None
        return data

    def names(self) -> list[str]:
        """Every contract: entities and reference sets, sorted."""
        if not self.directory.is_dir():
            raise SchemaError(f"{self.directory} is not a directory of .avsc files")
        out = []
        for p in self.directory.glob("*.avsc"):
            if p.stem in SHARED:
                continue
            out.append(p.stem.removeprefix(REFERENCE_PREFIX))
        return sorted(out)

    def is_reference(self, name: str) -> bool:
        return (self.directory / f"{REFERENCE_PREFIX}{name}.avsc").exists()

    def shared(self) -> dict[str, dict[str, Any]]:
        if self._shared is None:
            out = {}
            for stem in SHARED:
                data = self._read(self.directory / f"{stem}.avsc")
                out[f"{data.get('namespace', NAMESPACE)}.{data['name']}"] = data
            self._shared = out
        return self._shared

    def schema_str(self, name: str) -> str:
        """The self-contained schema of `name` as compact JSON (what gets registered)."""
        if name not in self._json:
            inlined = _inline(self._read(self._path(name)), self.shared(), set())
            self._json[name] = json.dumps(inlined, sort_keys=False)
        return self._json[name]

    def schema(self, name: str) -> dict[str, Any]:
        """The self-contained schema of `name` as a JSON object (fresh copy)."""
        data: dict[str, Any] = json.loads(self.schema_str(name))
        return data

    def parsed(self, name: str) -> Any:
        """fastavro's parsed form of `name`; raises SchemaError if it is not valid Avro."""
        try:
            return parse_schema(self.schema(name))
        except SchemaError:
            raise
        except Exception as exc:  # fastavro raises several types for a bad schema
            raise SchemaError(
                f"{self._path(name)} is not a valid Avro schema: {exc}"
            ) from exc


@cache
def catalog() -> Catalog:
    """The contracts shipped in this package."""
    return Catalog(AVRO_DIR)


def entities() -> list[str]:
    """Names of every contract, entities and reference sets alike."""
    return catalog().names()


def is_reference(name: str) -> bool:
    """True for a reference-data set (compacted ``reference.<set>`` topic, FULL compatibility)."""
    return catalog().is_reference(name)


def schema(entity: str) -> dict[str, Any]:
    return catalog().schema(entity)


def schema_str(entity: str) -> str:
    return catalog().schema_str(entity)


@cache
def parsed(entity: str) -> Any:
    """fastavro's parsed form of `entity`, validated once."""
    return catalog().parsed(entity)
