"""The audit.sink encoder writes what fastavro writes for the same record, for any write."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.sinks.base import Write
from schemas.serde import Decoder, encode, parse
from streams.audit import SinkWriteEncoder, audit_record, schema_str

TARGET = "postgres://db.example:5432/target/opportunity"
SCHEMA_ID = 4242

text = st.text(max_size=80)
longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30))]
)
times = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=zones
)
writes = st.builds(
    Write,
    key=text,
    op=st.sampled_from(["create", "update", "delete", "undelete", "unknown", "merge"]),
    version_before=st.none() | longs,
    version_after=longs,
    event_id=text,
    correlation_id=text,
    applied_at=times | st.datetimes(max_value=datetime(2100, 1, 1)),  # naive too
)


def reference(write: Write, entity: str) -> bytes:
    return encode(SCHEMA_ID, parse(schema_str()), audit_record(TARGET, entity, write))


@settings(max_examples=400)
@given(st.lists(writes, max_size=20), text)
def test_same_bytes_as_fastavro(batch: list[Write], entity: str) -> None:
    encoder = SinkWriteEncoder(SCHEMA_ID, schema_str(), TARGET, entity)
    for write in batch:  # one encoder over a batch: its cached time must not leak
        try:
            expected = reference(write, entity)
        except Exception as exc:  # both ways must refuse it alike
            try:
                encoder.encode(write)
            except type(exc):
                continue
            raise AssertionError(f"fastavro refused {write}: {exc!r}; the encoder did not") from exc
        assert encoder.encode(write) == expected


def test_decodes_with_the_registered_schema() -> None:
    at = datetime(2026, 12, 1, 8, 0, 0, 123456, tzinfo=UTC)
    write = Write("crm:opportunity:42", "update", 7, 300_000_000_000, "e-1", "c-1", at)
    body = SinkWriteEncoder(SCHEMA_ID, schema_str(), TARGET, "opportunity").encode(write)
    record = Decoder(lambda _id: json.loads(schema_str())).decode(body)
    assert record == {
        **audit_record(TARGET, "opportunity", write),
        "applied_at": at.replace(microsecond=123000),
    }


def test_a_schema_it_does_not_know_takes_fastavros_way() -> None:
    write = Write("k", "create", None, 1, "e", "c", datetime(2026, 1, 1, tzinfo=UTC))
    added = json.loads(schema_str())
    added["fields"].insert(3, {"name": "tenant", "type": "string", "default": ""})
    encoder = SinkWriteEncoder(SCHEMA_ID, json.dumps(added), TARGET, "opportunity")
    record = {**audit_record(TARGET, "opportunity", write), "tenant": ""}
    assert encoder.encode(write) == encode(SCHEMA_ID, parse(json.dumps(added)), record)
    # Same names, another type: an int where the encoder writes a long is the same bytes, a
    # double is not; either way the bytes are fastavro's.
    retyped = json.loads(schema_str())
    next(f for f in retyped["fields"] if f["name"] == "version_after")["type"] = "double"
    encoder = SinkWriteEncoder(SCHEMA_ID, json.dumps(retyped), TARGET, "opportunity")
    expected = encode(
        SCHEMA_ID, parse(json.dumps(retyped)), audit_record(TARGET, "opportunity", write)
    )
    assert encoder.encode(write) == expected
