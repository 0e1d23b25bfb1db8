"""Compiled writers against fastavro, the reference: the same bytes for every record of every
contract; for a value out of place, either fastavro's bytes or a hand-over to fastavro, never
bytes of their own."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.compiled_writer import compile_writer
from schemas.serde import _encoding, _hinted, encode, encode_header
from streams.errors import SerdeError
from tests.unit.avro_cases import EVERYTHING, SCHEMAS, parse_schema, values

HEADER = encode_header(7)
CONTRACT_SCHEMAS = [(n, p) for n, p in SCHEMAS if n != "everything"]


def fastavro_bytes(parsed: Any, record: Any) -> bytes:
    """What encode() wrote before compiled writers: fastavro, with the union hints."""
    buf = io.BytesIO()
    buf.write(HEADER)
    plan = _encoding(parsed).plan
    schemaless_writer(buf, parsed, _hinted(record, plan) if isinstance(record, dict) else record)
    return buf.getvalue()


@pytest.mark.parametrize(("name", "parsed"), CONTRACT_SCHEMAS, ids=[n for n, _ in CONTRACT_SCHEMAS])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_writes_what_fastavro_writes(name: str, parsed: Any, data: st.DataObject) -> None:
    record = data.draw(values(parsed, parsed.get("__named_schemas", {})))
    ours = compile_writer(parsed)(record, HEADER)
    assert ours is not None, "a record of the contract's own types went to fastavro"
    assert ours == fastavro_bytes(parsed, record)
    assert encode(7, parsed, record) == ours


# Values of other types than a field's, as a producer's bug would hand them over.
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.decimals(allow_nan=False, places=3, min_value=-1000, max_value=1000),
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(),
    st.dates(),
    st.uuids(),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.tuples(st.text(max_size=3), st.integers()),
    st.just(date(2020, 1, 1)),
)
_GONE = object()


@st.composite
def altered(draw: st.DrawFn, parsed: Any) -> Any:
    """A record of `parsed` with one value, at any depth, replaced by an odd one or removed."""
    record = draw(values(parsed, parsed.get("__named_schemas", {})))
    node = record
    while True:
        keys = sorted(node) if isinstance(node, dict) else []
        if not keys:
            return record
        key = draw(st.sampled_from(keys))
        if isinstance(node[key], dict) and draw(st.booleans()):
            node = node[key]
            continue
        odd = draw(st.one_of(ODD, st.just(_GONE)))
        if odd is _GONE:
            del node[key]
        else:
            node[key] = odd
        return record


@pytest.mark.parametrize(("name", "parsed"), CONTRACT_SCHEMAS, ids=[n for n, _ in CONTRACT_SCHEMAS])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_an_odd_value_is_fastavros_to_write_or_refuse(
    name: str, parsed: Any, data: st.DataObject
) -> None:
    record = data.draw(altered(parsed))
    try:
        expected: bytes | None = fastavro_bytes(parsed, record)
    except Exception:  # noqa: BLE001 - fastavro refuses it, in whichever way it does
        expected = None
    ours = compile_writer(parsed)(record, HEADER)
    assert ours is None or ours == expected
    if expected is not None:
        assert encode(7, parsed, record) == expected
    else:
        with pytest.raises(Exception) as refused:
            encode(7, parsed, record)
        assert refused.type is SerdeError or not isinstance(refused.value, SerdeError)


def test_unions_of_several_types_are_left_to_fastavro() -> None:
    parsed = parse_schema(EVERYTHING)
    with pytest.raises(ValueError, match="unions of null and one type"):
        compile_writer(parsed)
    record = {
        "n": None, "flag": True, "i": 1, "l": 2, "f": 0.5, "d": 0.25, "raw": b"r", "text": "t",
        "colour": "G", "colours": ["R"], "hash": b"abcd", "point": {"x": 1, "y": None},
        "points": [], "by_name": {"p": "q"}, "choice": "s", "chain": {"v": 1, "next": None},
        "amount": Decimal("1.250"), "fixed_amount": Decimal("3.10"), "day": date(2026, 1, 2),
        "at_ms": datetime(2026, 1, 1, tzinfo=UTC), "at_us": datetime(2026, 1, 1, tzinfo=UTC),
        "local_ms": datetime(2026, 1, 1), "local_us": datetime(2026, 1, 1),
        "clock_ms": datetime(2026, 1, 1, 1, 2, 3).time(), "clock_us": datetime(2026, 1, 1).time(),
        "id": str(uuid.uuid4()), "odd": "x",
    }  # fmt: skip
    assert encode(7, parsed, record) == fastavro_bytes(parsed, record)


def test_what_fastavro_refuses_is_still_a_serde_error() -> None:
    parsed = dict(CONTRACT_SCHEMAS)["opportunity.avsc"]
    with pytest.raises(SerdeError, match="does not fit schema id 7"):
        encode(7, parsed, {"envelope": {}, "data": {}})


def test_only_records_compile() -> None:
    with pytest.raises(ValueError, match="only record schemas"):
        compile_writer(parse_schema({"type": "array", "items": "long"}))
