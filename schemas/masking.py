"""Field masking for analytics copies of canonical events, driven by one policy file.

The policy (JSON, see schemas/masking.json) names, per entity, fields of the entity's data
record and what to do with each:

- ``hash``: HMAC-SHA256 with a secret key, hex. Equal inputs give equal outputs across
  entities and topics, so analysts can still join and count distinct values.
- ``redact``: null; a required (non-nullable) text field gets ``[redacted]``.
- ``partial``: e-mail addresses keep only their domain (``***@example.com``); other text
  keeps its last 4 characters.

A policy is checked against the Avro contracts when it is loaded: an unknown entity or
field, an unknown action, or `hash`/`partial` on a field that is not text fails at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.contracts import Catalog, catalog
from streams.errors import ConfigError

ACTIONS = ("hash", "redact", "partial")
REDACTED = "[redacted]"
MIN_KEY_LENGTH = 16


@dataclass(frozen=True)
class FieldRule:
    field: str
    action: str
    nullable: bool


@dataclass(frozen=True)
class Policy:
    """Validated rules per entity; `source` names the file in messages."""

    rules: Mapping[str, tuple[FieldRule, ...]]
    source: str = ""

    @property
    def needs_key(self) -> bool:
        return any(r.action == "hash" for rules in self.rules.values() for r in rules)


def _branches(avro_type: Any) -> list[Any]:
    return list(avro_type) if isinstance(avro_type, list) else [avro_type]


def _is_text(avro_type: Any) -> bool:
    base = avro_type.get("type") if isinstance(avro_type, dict) else avro_type
    return bool(base == "string")


def _data_fields(cat: Catalog, entity: str) -> dict[str, Any]:
    """Field name -> Avro type of the entity's `data` record."""
    schema = cat.schema(entity)
    data = next((f for f in schema["fields"] if f["name"] == "data"), None)
    record = (
        next(
            (
                b
                for b in _branches(data["type"])
                if isinstance(b, dict) and b.get("type") == "record"
            ),
            None,
        )
        if data
        else None
    )
    if record is None:
        raise ConfigError(f"contract {entity!r} has no `data` record to mask")
    return {f["name"]: f["type"] for f in record["fields"]}


def parse_policy(doc: Any, source: str = "policy", cat: Catalog | None = None) -> Policy:
    """Check a policy document against the contracts; ConfigError says what to fix."""
    cat = cat or catalog()
    entities = doc.get("entities") if isinstance(doc, dict) else None
    if not isinstance(entities, dict):
        raise ConfigError(
            f'{source}: expected {{"entities": {{"<entity>": {{"<field>": "<action>"}}}}}}'
        )
    known = cat.names()
    rules: dict[str, tuple[FieldRule, ...]] = {}
    for entity, fields in entities.items():
        if entity not in known:
            raise ConfigError(
                f"{source}: no contract named {entity!r}; use one of {', '.join(known)}"
            )
        if not isinstance(fields, dict) or not fields:
            raise ConfigError(f'{source}: {entity} needs an object of "<field>": "<action>"')
        types = _data_fields(cat, entity)
        out = []
        for name, action in fields.items():
            where = f"{source}: {entity}.{name}"
            if name not in types:
                raise ConfigError(
                    f"{where}: {entity} has no field {name!r}; its fields are {', '.join(types)}"
                )
            if action not in ACTIONS:
                raise ConfigError(
                    f"{where}: unknown action {action!r}; use one of {', '.join(ACTIONS)}"
                )
            branches = _branches(types[name])
            nullable = "null" in branches
            text = all(_is_text(b) for b in branches if b != "null")
            if action in ("hash", "partial") and not text:
                raise ConfigError(
                    f"{where}: {action} works on text fields only and {name} is "
                    f"{json.dumps(types[name])}; use redact"
                    + ("" if nullable else " (or leave it unmasked)")
                )
            if action == "redact" and not nullable and not text:
                raise ConfigError(
                    f"{where}: {name} is required and not text, so it cannot be redacted "
                    "without breaking the contract; leave it unmasked"
                )
            out.append(FieldRule(name, action, nullable))
        rules[entity] = tuple(out)
    return Policy(rules, source)


def load_policy(path: str | Path, cat: Catalog | None = None) -> Policy:
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except OSError as exc:
        raise ConfigError(
            f"cannot read masking policy {p} ({exc}); check PSSYNC_ANALYTICS_POLICY"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"masking policy {p} is not valid JSON: {exc}") from None
    return parse_policy(doc, str(p), cat)


def check_key(policy: Policy, key: str) -> bytes:
    """The HMAC key as bytes; a policy that hashes needs a real one."""
    if policy.needs_key and len(key) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"{policy.source} hashes fields: set PSSYNC_MASKING_KEY to a secret of at least "
            f"{MIN_KEY_LENGTH} characters (e.g. `openssl rand -hex 32`); keep it stable, or "
            "hashed values stop matching earlier ones"
        )
    return key.encode()


def partial(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if at and local and domain:
        return f"***@{domain}"
    keep = value[-4:] if len(value) > 4 else ""
    return "*" * (len(value) - len(keep)) + keep


def hash_value(value: str, key: bytes) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def mask_value(rule: FieldRule, value: Any, key: bytes) -> Any:
    if value is None:
        return None
    if rule.action == "hash":
        return hash_value(str(value), key)
    if rule.action == "partial":
        return partial(str(value))
    return None if rule.nullable else REDACTED


def mask_record(
    record: Mapping[str, Any], rules: tuple[FieldRule, ...], key: bytes
) -> dict[str, Any]:
    """A copy of a canonical record with its data fields masked; the input is not changed."""
    data = record.get("data")
    if data is None:
        return dict(record)
    masked = dict(data)
    for rule in rules:
        masked[rule.field] = mask_value(rule, masked.get(rule.field), key)
    return {**record, "data": masked}
