"""Avro bodies decoded by Python code generated once per writer schema.

fastavro's reader walks the schema for every record, looking up each field's type and name
as it goes; on a canonical event that walk is most of the decoding time, and decoding is the
largest part of the sink's work. The code generated here knows the schema already: each
field is a few inline steps (a one-byte length, a slice, a decode), so the same records come
out, equal to fastavro's, at about a third of its cost.

It reads what pssync's contracts use, and every Avro type besides; logical types go
through fastavro's own readers so their values match exactly. Schema resolution (a reader
schema other than the writer's) is left to fastavro. The records read are those
`fastavro.schemaless_reader(body, writer)` returns, checked against it by property tests.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Context
from typing import Any

from fastavro.read import LOGICAL_READERS

from schemas.codegen import PRIMITIVE, Source

# (body, offset of the Avro body) -> record; raises on any malformed body.
Reader = Callable[[bytes, int], dict[str, Any]]

# The common logical types inline, with fastavro's arithmetic: datetimes from the epoch plus
# a timedelta (not fromtimestamp, which rounds), dates from their ordinal.
_INLINE = {
    "long-timestamp-millis": "_EPOCH + _delta(0, 0, {v} * 1000)",
    "long-timestamp-micros": "_EPOCH + _delta(0, 0, {v})",
    "long-local-timestamp-millis": "_NAIVE_EPOCH + _delta(0, 0, {v} * 1000)",
    "long-local-timestamp-micros": "_NAIVE_EPOCH + _delta(0, 0, {v})",
    "int-date": "_from_ordinal({v} + 719163)",
}


class Truncated(EOFError):
    """The body ended before its record did."""


def _varint(b: bytes, p: int, x: int) -> tuple[int, int]:
    """The rest of a varint whose first byte `x` (already read) had its high bit set;
    returns the still-zigzagged value and the offset after it."""
    # Unrolled to six bytes in all (millisecond timestamps, the longest common values):
    # half the time of the loop, which takes the rest.
    c = b[p]
    x = (x & 0x7F) | (c & 0x7F) << 7
    if c < 0x80:
        return x, p + 1
    c = b[p + 1]
    x |= (c & 0x7F) << 14
    if c < 0x80:
        return x, p + 2
    c = b[p + 2]
    x |= (c & 0x7F) << 21
    if c < 0x80:
        return x, p + 3
    c = b[p + 3]
    x |= (c & 0x7F) << 28
    if c < 0x80:
        return x, p + 4
    c = b[p + 4]
    x |= (c & 0x7F) << 35
    if c < 0x80:
        return x, p + 5
    p += 5
    shift = 42
    while True:
        c = b[p]
        p += 1
        x |= (c & 0x7F) << shift
        if c < 0x80:
            return x, p
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes: not an Avro int or long")


def _size(b: bytes, p: int, x: int) -> tuple[int, int]:
    """A length (of bytes, a string or a skipped block) whose first byte is `x`."""
    if x & 0x80:
        x, p = _varint(b, p, x)
    if x & 1:
        raise ValueError(f"negative length {-((x + 1) >> 1)}: the body is corrupt")
    return x >> 1, p


def _bad_index(kind: str, index: int, count: int) -> None:
    raise ValueError(f"{kind} index {index} is outside the {count} the schema has")


class _Reader(Source):
    """Emits the source of one module: a function per named record, then `read`."""

    def record(self, fn: str, schema: dict[str, Any]) -> list[str]:
        lines = [f"def {fn}(b, p):"]
        names = []
        for field in schema["fields"]:
            var = self.fresh("f")
            names.append((field["name"], var))
            lines += self.value(field["type"], var, "    ")
        items = ", ".join(f"{name!r}: {var}" for name, var in names)
        lines.append(f"    return {{{items}}}, p")
        return lines

    def long(self, var: str, ind: str) -> list[str]:
        return [
            f"{ind}{var} = b[p]",
            f"{ind}p += 1",
            f"{ind}if {var} & 128:",
            f"{ind}    {var}, p = _varint(b, p, {var})",
            f"{ind}{var} = ({var} >> 1) ^ -({var} & 1)",
        ]

    def size(self, var: str, ind: str) -> list[str]:
        return [
            f"{ind}{var} = b[p]",
            f"{ind}p += 1",
            f"{ind}if {var} & 129:",
            f"{ind}    {var}, p = _size(b, p, {var})",
            f"{ind}else:",
            f"{ind}    {var} >>= 1",
        ]

    def typed(self, schema: dict[str, Any], kind: str, var: str, ind: str) -> list[str]:
        """Lines that read one value of `schema` (of type `kind`) into `var`, moving `p` past it."""
        if kind == "record" or kind == "error":
            return [f"{ind}{var}, p = {self.function(schema)}(b, p)"]
        if kind == "enum":
            symbols = self.constant("symbols", tuple(schema["symbols"]))
            count = len(schema["symbols"])
            return [
                *self.long(var, ind),
                f"{ind}if not 0 <= {var} < {count}:",
                f"{ind}    _bad_index('enum', {var}, {count})",
                f"{ind}{var} = {symbols}[{var}]",
            ]
        if kind == "fixed":
            lines = [f"{ind}{var} = b[p:p + {int(schema['size'])}]", f"{ind}p += {schema['size']}"]
        elif kind == "array":
            lines = self.blocks(var, ind, schema["items"], keyed=False)
        elif kind == "map":
            lines = self.blocks(var, ind, schema["values"], keyed=True)
        elif kind in PRIMITIVE:
            lines = self.primitive(kind, var, ind)
        else:
            return self.value(self.named[kind], var, ind)
        logical = f"{kind}-{schema.get('logicalType')}"
        reader = LOGICAL_READERS.get(logical)
        if logical in _INLINE:
            lines.append(f"{ind}{var} = {_INLINE[logical]}".format(v=var))
        elif logical == "bytes-decimal":
            # fastavro's arithmetic, with a context of the field's precision of its own
            context = self.constant("context", Context(prec=schema["precision"]))
            scale = -int(schema.get("scale", 0))
            lines.append(
                f"{ind}{var} = {context}.create_decimal("
                f"int.from_bytes({var}, 'big', signed=True)).scaleb({scale}, {context})"
            )
        elif reader is not None:
            fn, node = self.constant("logical", reader), self.constant("schema", schema)
            lines.append(f"{ind}{var} = {fn}({var}, {node}, None)")
        return lines

    def primitive(self, kind: str, var: str, ind: str) -> list[str]:
        if kind == "null":
            return [f"{ind}{var} = None"]
        if kind == "boolean":
            return [f"{ind}{var} = b[p] != 0", f"{ind}p += 1"]
        if kind in ("int", "long"):
            return self.long(var, ind)
        if kind in ("float", "double"):
            width, unpack = (4, "_float") if kind == "float" else (8, "_double")
            return [f"{ind}{var} = {unpack}(b, p)[0]", f"{ind}p += {width}"]
        # No bounds check: a slice past the end comes out short, but leaves `p` past it,
        # which the next read or the final check in `read` refuses.
        end = self.fresh("e")
        read = f"b[p:{end}]" if kind == "bytes" else f"b[p:{end}].decode()"
        return [
            f"{ind}{end} = b[p]",
            f"{ind}if {end} & 129:",
            f"{ind}    {end}, p = _size(b, p + 1, {end})",
            f"{ind}    {end} += p",
            f"{ind}else:",
            f"{ind}    p += 1",
            f"{ind}    {end} = p + ({end} >> 1)",
            f"{ind}{var} = {read}",
            f"{ind}p = {end}",
        ]

    def union(self, branches: list[Any], var: str, ind: str) -> list[str]:
        index = self.fresh("u")
        lines = self.long(index, ind)
        for i, branch in enumerate(branches):
            lines.append(f"{ind}{'if' if i == 0 else 'elif'} {index} == {i}:")
            lines += self.value(branch, var, ind + "    ")
        lines += [f"{ind}else:", f"{ind}    _bad_index('union', {index}, {len(branches)})"]
        return lines

    def blocks(self, var: str, ind: str, items: Any, keyed: bool) -> list[str]:
        count, item, key, skip = (self.fresh(s) for s in ("n", "i", "k", "s"))
        lines = [f"{ind}{var} = {{}}" if keyed else f"{ind}{var} = []", *self.long(count, ind)]
        lines += [
            f"{ind}while {count}:",
            f"{ind}    if {count} < 0:",  # a block that gives its size in bytes too
            f"{ind}        {count} = -{count}",
            *self.size(skip, ind + "        "),
            f"{ind}    for _ in range({count}):",
        ]
        if keyed:
            lines += self.primitive("string", key, ind + "        ")
        lines += self.value(items, item, ind + "        ")
        lines.append(
            f"{ind}        {var}[{key}] = {item}" if keyed else f"{ind}        {var}.append({item})"
        )
        lines += self.long(count, ind + "    ")
        return lines


def compile_reader(parsed_schema: dict[str, Any]) -> Reader:
    """A reader for bodies written with `parsed_schema`: a record schema as
    fastavro.parse_schema returns it (named types by full name, `__named_schemas`).
    Raises ValueError for a schema that is not a record."""
    if not (isinstance(parsed_schema, dict) and parsed_schema.get("type") == "record"):
        raise ValueError("only record schemas compile")
    tail = """def read(b, p):
    try:
        record, p = {top}(b, p)
    except (IndexError, _StructError) as exc:  # a byte or a number read past the end
        raise _Truncated('the record runs past the end of the body') from exc
    if p > len(b):
        raise _Truncated('the record runs past the end of the body')
    return record
"""
    scope = _Reader(parsed_schema).build(
        parsed_schema,
        tail,
        {
            "_varint": _varint,
            "_size": _size,
            "_bad_index": _bad_index,
            "_Truncated": Truncated,
            "_StructError": struct.error,
            "_float": struct.Struct("<f").unpack_from,
            "_double": struct.Struct("<d").unpack_from,
            "_EPOCH": datetime(1970, 1, 1, tzinfo=UTC),
            "_NAIVE_EPOCH": datetime(1970, 1, 1),
            "_delta": timedelta,
            "_from_ordinal": date.fromordinal,
        },
    )
    read: Reader = scope["read"]
    return read
