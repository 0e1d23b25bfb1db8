"""Field-level difference between two versions of an Avro schema, for people to read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from schemas.compat import TypeIndex


@dataclass(frozen=True)
class FieldInfo:
    type: str
    default: str | None  # JSON of the default, None if the field has none
    symbols: tuple[str, ...] = ()  # enum symbols, when the field's type holds an enum


def _walk(side: TypeIndex, node: Any, ns: str, path: str, out: dict[str, FieldInfo],
          seen: set[int]) -> tuple[str, ...]:
    """Record every field under `node` into `out`; return enum symbols found at `node`."""
    t = side.resolve(node, ns)
    if t.kind == "union":
        symbols: tuple[str, ...] = ()
        for branch in t.node:
            symbols += _walk(side, branch, t.ns, path, out, seen)
        return symbols
    if t.kind == "enum":
        return tuple(t.node["symbols"])
    if t.kind == "array":
        return _walk(side, t.node["items"], t.ns, path + "[]", out, seen)
    if t.kind == "map":
        return _walk(side, t.node["values"], t.ns, path + "{}", out, seen)
    if t.kind == "record" and id(t.node) not in seen:
        seen = seen | {id(t.node)}
        for f in t.node.get("fields", []):
            fpath = f"{path}.{f['name']}" if path else f["name"]
            syms = _walk(side, f["type"], t.ns, fpath, out, seen)
            default = json.dumps(f["default"]) if "default" in f else None
            out[fpath] = FieldInfo(side.describe(f["type"], t.ns), default, syms)
    return ()


def fields(schema: Any) -> dict[str, FieldInfo]:
    """Every field of `schema` by dotted path (`[]` marks array items, `{}` map values)."""
    out: dict[str, FieldInfo] = {}
    _walk(TypeIndex(schema), schema, "", "", out, set())
    return out


def diff(old: Any, new: Any) -> list[str]:
    """Lines like `+ data.x: string (default null)`, `- data.y`, `~ data.z: int -> long`."""
    a, b = fields(old), fields(new)
    lines: list[str] = []
    for path in sorted(a.keys() | b.keys()):
        before, after = a.get(path), b.get(path)
        if before is None and after is not None:
            default = "no default" if after.default is None else f"default {after.default}"
            lines.append(f"+ {path}: {after.type} ({default})")
        elif after is None and before is not None:
            lines.append(f"- {path}: {before.type}")
        elif before is not None and after is not None and before != after:
            changes = []
            if before.type != after.type:
                changes.append(f"type {before.type} -> {after.type}")
            if before.default != after.default:
                changes.append(f"default {before.default or 'none'} -> {after.default or 'none'}")
            added = [s for s in after.symbols if s not in before.symbols]
            removed = [s for s in before.symbols if s not in after.symbols]
            if added:
                changes.append("symbols added " + ", ".join(added))
            if removed:
                changes.append("symbols removed " + ", ".join(removed))
            lines.append(f"~ {path}: " + "; ".join(changes))
    return lines
