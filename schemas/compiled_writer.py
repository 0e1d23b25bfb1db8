"""Avro bodies encoded by Python code generated once per schema.

fastavro's writer walks the schema for every record and picks each union's branch by
validating the value against the branches; on a canonical event that is most of the
encoding time, and pssync encodes every event it emits. The code generated here knows the
schema: each field is a type check and a few inline steps.

It writes only values it can write exactly as fastavro does: each value must be of the
plain Python type of its Avro type (str for string, int in range for long, a dict for a
record, a list for an array, ...), after fastavro's own logical-type conversion. Anything
else (a missing field, a tuple-named union branch, a subclass, a value out of range) makes
the generated code give up on the record, and the caller encodes it with fastavro, which
writes it or says why not. Unions other than a type or null are left to fastavro entirely.
The bytes written are fastavro's, checked by property tests.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from fastavro.write import LOGICAL_WRITERS

from schemas.codegen import PRIMITIVE, Source

# (record, bytes to start with) -> the bytes, or None where fastavro must write the record.
Writer = Callable[[dict[str, Any], bytes], bytes | None]

_LONG = "-9223372036854775808 <= {v} <= 9223372036854775807"
_INT = "-2147483648 <= {v} <= 2147483647"


class Unfit(Exception):
    """A value the generated code does not write; fastavro writes the record instead."""


def _varint(out: bytearray, z: int) -> None:
    """Append the zigzagged `z` (128 or more) as a varint."""
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


class _Writer(Source):
    """Emits the source of one module: a function per named record, then `write`."""

    def record(self, fn: str, schema: dict[str, Any]) -> list[str]:
        lines = [f"def {fn}(v, o):", "    if type(v) is not dict:", "        raise _Unfit"]
        for field in schema["fields"]:
            var, name = self.fresh("f"), repr(field["name"])
            # A missing field is its default, or None where its type names null, as fastavro
            # has it; otherwise a KeyError, and fastavro says what is missing.
            if "default" in field:
                lines.append(
                    f"    {var} = v.get({name}, {self.constant('default', field['default'])})"
                )
            elif "null" in field["type"]:
                lines.append(f"    {var} = v.get({name})")
            else:
                lines.append(f"    {var} = v[{name}]")
            lines += self.value(field["type"], var, "    ")
        return lines

    def long(self, var: str, ind: str, bound: str = _LONG) -> list[str]:
        z = self.fresh("z")
        return [
            f"{ind}if type({var}) is not int or not {bound.format(v=var)}:",
            f"{ind}    raise _Unfit",
            f"{ind}{z} = ({var} << 1) ^ ({var} >> 63)",
            f"{ind}if {z} < 128:",
            f"{ind}    o.append({z})",
            f"{ind}else:",
            f"{ind}    _varint(o, {z})",
        ]

    def size(self, expr: str, ind: str) -> list[str]:
        """A length (never negative): its varint."""
        n = self.fresh("n")
        return [
            f"{ind}{n} = {expr}",
            f"{ind}if {n} < 64:",
            f"{ind}    o.append({n} << 1)",
            f"{ind}else:",
            f"{ind}    _varint(o, {n} << 1)",
        ]

    def typed(self, schema: dict[str, Any], kind: str, var: str, ind: str) -> list[str]:
        """Lines that append one value `var` of `schema` (of type `kind`) to `o`, or raise."""
        lines: list[str] = []
        logical = schema.get("logicalType")
        prepare = LOGICAL_WRITERS.get(f"{kind}-{logical}") if logical else None
        if prepare is not None:  # fastavro's own conversion, so the value is its value
            fn, node = self.constant("logical", prepare), self.constant("schema", schema)
            lines.append(f"{ind}{var} = {fn}({var}, {node})")
        if kind == "record" or kind == "error":
            return [*lines, f"{ind}{self.function(schema)}({var}, o)"]
        if kind == "enum":
            index = self.constant("symbols", {s: i for i, s in enumerate(schema["symbols"])})
            i = self.fresh("i")
            return [
                *lines,
                f"{ind}if type({var}) is not str:",
                f"{ind}    raise _Unfit",
                f"{ind}{i} = {index}[{var}]",  # not a symbol: KeyError, fastavro's to say
                *self.size(i, ind),
            ]
        if kind == "fixed":
            size = int(schema["size"])
            return [
                *lines,
                f"{ind}if type({var}) is not bytes or len({var}) != {size}:",
                f"{ind}    raise _Unfit",
                f"{ind}o += {var}",
            ]
        if kind == "array":
            return lines + self.blocks(var, ind, schema["items"], keyed=False)
        if kind == "map":
            return lines + self.blocks(var, ind, schema["values"], keyed=True)
        if kind in PRIMITIVE:
            return lines + self.primitive(kind, var, ind)
        return lines + self.value(self.named[kind], var, ind)

    def primitive(self, kind: str, var: str, ind: str) -> list[str]:
        if kind == "null":
            return [f"{ind}if {var} is not None:", f"{ind}    raise _Unfit"]
        if kind == "boolean":
            return [
                f"{ind}if type({var}) is not bool:",
                f"{ind}    raise _Unfit",
                f"{ind}o.append(1 if {var} else 0)",
            ]
        if kind in ("int", "long"):
            return self.long(var, ind, _INT if kind == "int" else _LONG)
        if kind in ("float", "double"):
            pack = "_float" if kind == "float" else "_double"
            return [
                f"{ind}if type({var}) is not float:",
                f"{ind}    raise _Unfit",
                f"{ind}o += {pack}({var})",
            ]
        raw = self.fresh("s")
        expr = f"{var}.encode()" if kind == "string" else var
        return [
            f"{ind}if type({var}) is not {'str' if kind == 'string' else 'bytes'}:",
            f"{ind}    raise _Unfit",
            f"{ind}{raw} = {expr}",
            *self.size(f"len({raw})", ind),
            f"{ind}o += {raw}",
        ]

    def union(self, branches: list[Any], var: str, ind: str) -> list[str]:
        if len(branches) != 2 or "null" not in branches:
            raise ValueError("only unions of null and one type compile; fastavro writes others")
        null = branches.index("null")
        other = branches[1 - null]
        return [
            f"{ind}if {var} is None:",
            f"{ind}    o.append({null * 2})",
            f"{ind}else:",
            f"{ind}    o.append({(1 - null) * 2})",
            *self.value(other, var, ind + "    "),
        ]

    def blocks(self, var: str, ind: str, items: Any, keyed: bool) -> list[str]:
        item, key = self.fresh("i"), self.fresh("k")
        lines = [
            f"{ind}if type({var}) is not {'dict' if keyed else 'list'}:",
            f"{ind}    raise _Unfit",
            f"{ind}if {var}:",
            *self.size(f"len({var})", ind + "    "),
            f"{ind}    for {key + ', ' if keyed else ''}{item} in "
            f"{var}{'.items()' if keyed else ''}:",
        ]
        if keyed:
            lines += self.primitive("string", key, ind + "        ")
        lines += self.value(items, item, ind + "        ")
        lines.append(f"{ind}o.append(0)")
        return lines


def compile_writer(parsed_schema: dict[str, Any]) -> Writer:
    """A writer of records of `parsed_schema` (a record schema as fastavro.parse_schema
    returns it). ValueError for a schema it does not compile (not a record, a union of
    several types, nesting too deep): fastavro writes those."""
    if not (isinstance(parsed_schema, dict) and parsed_schema.get("type") == "record"):
        raise ValueError("only record schemas compile")
    tail = """def write(record, start):
    o = bytearray(start)
    try:
        {top}(record, o)
    except Exception:  # a value it does not write as fastavro would: fastavro's, then
        return None
    return bytes(o)
"""
    scope = _Writer(parsed_schema).build(
        parsed_schema,
        tail,
        {
            "_varint": _varint,
            "_Unfit": Unfit,
            "_float": struct.Struct("<f").pack,
            "_double": struct.Struct("<d").pack,
        },
    )
    write: Writer = scope["write"]
    return write
