from __future__ import annotations

import json

import pytest

from streams.changes import format_lsn, key_text, parse
from streams.errors import BadEventError


def debezium(op: str = "c", after: dict[str, object] | None = None, lsn: int = 100) -> bytes:
    return json.dumps(
        {
            "op": op,
            "before": None,
            "after": after if after is not None else {"id": "006A"},
            "source": {
                "name": "crm",
                "schema": "sales",
                "table": "opportunity",
                "lsn": lsn,
                "ts_ms": 1700000000000,
            },
            "ts_ms": 1700000000100,
        }
    ).encode()


def test_parses_debezium_envelope() -> None:
    change = parse(b'{"id":"006A"}', debezium(), "crm.sales.opportunity")
    assert change is not None
    assert (change.op, change.key, change.entity, change.connector) == (
        "create",
        "006A",
        "sales.opportunity",
        "crm",
    )
    assert change.sequence == 100 and change.position == "0/64"
    assert change.committed_at_ms == 1700000000000 and not change.tombstone


def test_snapshot_read_maps_to_snapshot() -> None:
    change = parse(b'{"id":"006A"}', debezium("r"), "crm.sales.opportunity")
    assert change is not None and change.op == "snapshot"


def test_tombstone_is_a_delete_without_position() -> None:
    change = parse(b'{"id":"006A"}', None, "crm.sales.opportunity")
    assert change is not None and change.op == "delete" and change.tombstone


def test_truncate_carries_no_row() -> None:
    value = json.dumps({"op": "t", "source": {"lsn": 1, "ts_ms": 1}}).encode()
    assert parse(b'{"id":"x"}', value, "crm.sales.opportunity") is None


def test_schema_wrapped_json_is_unwrapped() -> None:
    wrapped = json.dumps({"schema": {}, "payload": json.loads(debezium())}).encode()
    change = parse(b'{"schema":{},"payload":{"id":"006A"}}', wrapped, "crm.sales.opportunity")
    assert change is not None and change.key == "006A"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"{nope", "not valid JSON"),
        (b"[1,2]", "not a JSON object"),
        (json.dumps({"op": "x", "source": {}}).encode(), "unknown op"),
        (json.dumps({"op": "c", "after": {"id": 1}}).encode(), "no 'source'"),
        (
            json.dumps({"op": "u", "after": None, "source": {"lsn": 1, "ts_ms": 1}}).encode(),
            "without an 'after'",
        ),
        (json.dumps({"op": "c", "after": {}, "source": {"ts_ms": 1}}).encode(), "cannot order"),
    ],
)
def test_bad_events_raise_with_reason(value: bytes, message: str) -> None:
    with pytest.raises(BadEventError, match=message):
        parse(b'{"id":"006A"}', value, "crm.sales.opportunity")


def test_composite_keys_join_in_order() -> None:
    assert key_text(b'{"tenant":"t1","id":7}') == "t1|7"


def test_key_without_primary_key_is_rejected() -> None:
    with pytest.raises(BadEventError, match="primary key"):
        key_text(b"{}")


def test_lsn_format_matches_postgres() -> None:
    assert format_lsn(0x16B3748) == "0/16B3748"
    assert format_lsn((1 << 32) + 5) == "1/5"
