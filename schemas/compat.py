"""Avro schema-resolution checker that explains *why* one schema cannot read another's data.

The registry stays the gate (it decides); this module names each breaking change so a
developer knows which field to fix. It follows the Avro specification's resolution rules:
matching record/enum/fixed names, numeric and string/bytes promotions, reader fields absent
from the writer need a default, writer enum symbols unknown to the reader need an enum
default, and every writer union branch must be readable by the reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from streams.errors import SchemaError

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
# writer type -> reader types it may be promoted to
PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
NAMED = frozenset({"record", "error", "enum", "fixed"})


@dataclass(frozen=True)
class Problem:
    """One reason a reader schema cannot read data of a writer schema."""

    kind: str  # missing_default | type | enum_symbols | name | fixed_size
    path: str  # dotted field path, `[]` for array items, `{}` for map values
    reader: str  # reader type, described
    writer: str  # writer type, described
    symbols: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Type:
    kind: str  # a primitive name, record, enum, fixed, array, map or union
    node: Any
    ns: str


class TypeIndex:
    """Named types of one schema, so references by name can be followed."""

    def __init__(self, schema: Any) -> None:
        self.names: dict[str, tuple[Any, str]] = {}
        self._index(schema, "")

    @staticmethod
    def _fullname(name: str, ns: str) -> str:
        return name if "." in name or not ns else f"{ns}.{name}"

    def _index(self, node: Any, ns: str) -> None:
        if isinstance(node, list):
            for branch in node:
                self._index(branch, ns)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in NAMED and isinstance(node.get("name"), str):
                full = self._fullname(node["name"], node.get("namespace") or ns)
                inner_ns = full.rpartition(".")[0]
                self.names[full] = (node, inner_ns)
                for f in node.get("fields", []) if kind in ("record", "error") else []:
                    self._index(f.get("type"), inner_ns)
            elif kind in ("array", "map"):
                self._index(node.get("items" if kind == "array" else "values"), ns)
            elif isinstance(kind, dict | list):
                self._index(kind, ns)

    def resolve(self, node: Any, ns: str) -> _Type:
        if isinstance(node, list):
            return _Type("union", node, ns)
        if isinstance(node, str):
            if node in PRIMITIVES:
                return _Type(node, node, ns)
            found = self.names.get(self._fullname(node, ns)) or self.names.get(node)
            if found is None:
                raise SchemaError(f"schema refers to unknown type {node!r}; define it first")
            return self.resolve(found[0], found[1])
        if isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, dict | list):
                return self.resolve(kind, ns)
            if kind in ("record", "error"):
                full = self._fullname(node["name"], node.get("namespace") or ns)
                return _Type("record", node, full.rpartition(".")[0])
            if kind in ("enum", "fixed", "array", "map") or kind in PRIMITIVES:
                return _Type(str(kind), node, node.get("namespace") or ns)
        raise SchemaError(f"not an Avro type: {node!r}")

    def describe(self, node: Any, ns: str) -> str:
        t = self.resolve(node, ns)
        n = t.node
        if t.kind == "union":
            return " | ".join(self.describe(b, ns) for b in n)
        if t.kind in ("record", "enum"):
            return f"{t.kind} {n['name']}"
        if t.kind == "fixed":
            return f"fixed {n['name']}({n.get('size')})"
        if t.kind == "array":
            return f"array<{self.describe(n['items'], t.ns)}>"
        if t.kind == "map":
            return f"map<{self.describe(n['values'], t.ns)}>"
        if isinstance(n, dict) and n.get("logicalType"):
            if n["logicalType"] == "decimal":
                return f"decimal({n.get('precision')},{n.get('scale', 0)})"
            return f"{t.kind}({n['logicalType']})"
        return t.kind


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class _Checker:
    def __init__(self, reader: Any, writer: Any) -> None:
        self.r = TypeIndex(reader)
        self.w = TypeIndex(writer)
        self.problems: list[Problem] = []
        self._active: set[tuple[int, int]] = set()  # guards recursive types

    def check(self, rnode: Any, rns: str, wnode: Any, wns: str, path: str) -> list[Problem]:
        out: list[Problem] = []
        rt, wt = self.r.resolve(rnode, rns), self.w.resolve(wnode, wns)

        def mismatch() -> None:
            out.append(Problem("type", path, self.r.describe(rnode, rns),
                               self.w.describe(wnode, wns)))

        if wt.kind == "union":
            whole = self.w.describe(wnode, wns)
            for branch in wt.node:
                for p in self._branch(rnode, rns, branch, wt.ns, path):
                    # Name the writer's whole union, not the one branch, at this field.
                    fix = p.kind == "type" and p.path == path
                    out.append(replace(p, writer=whole) if fix else p)
            return list(dict.fromkeys(out))
        if rt.kind == "union":
            return self._branch(rnode, rns, wnode, wns, path)
        if rt.kind in PRIMITIVES or wt.kind in PRIMITIVES:
            if rt.kind != wt.kind and rt.kind not in PROMOTIONS.get(wt.kind, set()):
                mismatch()
            return out
        if rt.kind != wt.kind:
            mismatch()
            return out
        if rt.kind in ("record", "enum", "fixed"):
            rname, wname = rt.node["name"].rpartition(".")[2], wt.node["name"].rpartition(".")[2]
            if rname != wname and wname not in rt.node.get("aliases", []):
                out.append(Problem("name", path, self.r.describe(rnode, rns),
                                   self.w.describe(wnode, wns)))
                return out
        if rt.kind == "record":
            key = (id(rt.node), id(wt.node))
            if key in self._active:
                return out
            self._active.add(key)
            try:
                out += self._record(rt, wt, path)
            finally:
                self._active.discard(key)
        elif rt.kind == "enum":
            missing = [s for s in wt.node["symbols"] if s not in rt.node["symbols"]]
            if missing and "default" not in rt.node:
                out.append(Problem("enum_symbols", path, self.r.describe(rnode, rns),
                                   self.w.describe(wnode, wns), tuple(missing)))
        elif rt.kind == "fixed":
            if rt.node.get("size") != wt.node.get("size"):
                out.append(Problem("fixed_size", path, self.r.describe(rnode, rns),
                                   self.w.describe(wnode, wns)))
        elif rt.kind == "array":
            out += self.check(rt.node["items"], rt.ns, wt.node["items"], wt.ns, path + "[]")
        elif rt.kind == "map":
            out += self.check(rt.node["values"], rt.ns, wt.node["values"], wt.ns, path + "{}")
        return out

    def _branch(self, rnode: Any, rns: str, wnode: Any, wns: str, path: str) -> list[Problem]:
        """Writer type `wnode` (one branch) against reader `rnode` (a union or not)."""
        rt = self.r.resolve(rnode, rns)
        if rt.kind != "union":
            return self.check(rnode, rns, wnode, wns, path)
        wt = self.w.resolve(wnode, wns)
        closest: list[Problem] | None = None
        for branch in rt.node:
            problems = self.check(branch, rt.ns, wnode, wns, path)
            if not problems:
                return []
            bt = self.r.resolve(branch, rt.ns)
            same = bt.kind == wt.kind and (
                bt.kind not in ("record", "enum", "fixed")
                or bt.node["name"].rpartition(".")[2] == wt.node["name"].rpartition(".")[2])
            if same and closest is None:
                closest = problems
        if closest is not None:
            return closest
        return [Problem("type", path, self.r.describe(rnode, rns), self.w.describe(wnode, wns))]

    def _record(self, rt: _Type, wt: _Type, path: str) -> list[Problem]:
        out: list[Problem] = []
        wfields = {f["name"]: f for f in wt.node.get("fields", [])}
        for rf in rt.node.get("fields", []):
            names = [rf["name"], *rf.get("aliases", [])]
            wf = next((wfields[n] for n in names if n in wfields), None)
            fpath = _join(path, rf["name"])
            if wf is None:
                if "default" not in rf:
                    out.append(Problem("missing_default", fpath,
                                       self.r.describe(rf["type"], rt.ns), "absent"))
                continue
            out += self.check(rf["type"], rt.ns, wf["type"], wt.ns, fpath)
        return out


def problems(reader: Any, writer: Any) -> list[Problem]:
    """Why `reader` cannot read data written with `writer`; empty if it can."""
    return _Checker(reader, writer).check(reader, "", writer, "", "")


def can_read(reader: Any, writer: Any) -> bool:
    return not problems(reader, writer)


def explain(problem: Problem, reader_is_new: bool) -> str:
    """A sentence about `problem` in terms of schema evolution (old -> new)."""
    where = f"field `{problem.path}`" if problem.path else "the top-level type"
    old, new = (problem.writer, problem.reader) if reader_is_new else (problem.reader,
                                                                       problem.writer)
    if problem.kind == "missing_default":
        if reader_is_new:
            return (f"new {where} has no default: records written with the old schema lack "
                    "it, so give it a default (e.g. null in a union with null)")
        return (f"{where} removed without default: readers still on the old schema need it; "
                "keep it, or give it a default in the old schema first")
    if problem.kind == "type":
        why = ("data written as the old type cannot be read as the new one" if reader_is_new
               else "readers on the old schema cannot read the new type")
        return f"{where} changed type from {old} to {new}: {why}; add a new field instead"
    if problem.kind == "enum_symbols":
        listed = ", ".join(f"`{s}`" for s in problem.symbols)
        if reader_is_new:
            return (f"{where}: enum symbol(s) {listed} removed and the enum has no default "
                    "to read them as; keep the symbols or give the enum a default")
        return (f"{where}: enum symbol(s) {listed} added but the old enum has no default, so "
                "old readers fail on them")
    if problem.kind == "name":
        return f"{where} renamed type {old} to {new}; keep the name or add the old as an alias"
    if problem.kind == "fixed_size":
        return f"{where} changed fixed size from {old} to {new}"
    return f"{where}: {problem.kind} ({old} -> {new})"


def _directions(level: str) -> tuple[bool, bool]:
    """(check backward, check forward) for a compatibility level."""
    base = level.removesuffix("_TRANSITIVE")
    return base in ("BACKWARD", "FULL"), base in ("FORWARD", "FULL")


def breaking_changes(new: Any, old_versions: Sequence[tuple[int, Any]], level: str
                     ) -> list[str]:
    """Readable account of each change in `new` that `level` forbids.

    `old_versions` are (version, schema) pairs, oldest first; non-transitive levels look
    only at the latest.
    """
    level = level.upper()
    if level == "NONE" or not old_versions:
        return []
    against = old_versions if level.endswith("_TRANSITIVE") else old_versions[-1:]
    backward, forward = _directions(level)
    found: dict[str, list[int]] = {}
    for version, old in against:
        checks = ([(new, old, True)] if backward else []) + ([(old, new, False)] if forward
                                                             else [])
        for reader, writer, reader_is_new in checks:
            for p in problems(reader, writer):
                found.setdefault(explain(p, reader_is_new), []).append(version)
    return [f"{msg} (vs version{'s' if len(v) > 1 else ''} {', '.join(map(str, sorted(set(v))))})"
            for msg, v in found.items()]
