"""Children of an opportunity go to their opportunity's partition, deletes included."""

from __future__ import annotations

import asyncio
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from schemas import contracts
from schemas.conventions import partition_for
from streams.agents.normalize import Normalizer
from streams.settings import Settings
from streams.topology import topology

PARTITIONS = 7


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=1, max_value=500))
def test_partition_for_is_crc32_modulo_the_count(key: bytes, partitions: int) -> None:
    # librdkafka's consistent_random: CRC-32 (IEEE, as zlib) of the key bytes.
    p = partition_for(key, partitions)
    assert 0 <= p < partitions and p == zlib.crc32(key) % partitions


def test_no_partition_for_an_empty_key_or_topic() -> None:
    import pytest

    with pytest.raises(ValueError, match="random partition"):
        partition_for(b"", 3)
    with pytest.raises(ValueError, match="at least one partition"):
        partition_for(b"k", 0)


def test_known_values_of_the_partitioner() -> None:
    # Fixed points (CRC-32 0xa0541af3), so a change of hash function cannot pass unnoticed.
    key = b"crm:opportunity:006A"
    assert [partition_for(key, n) for n in (1, 2, 3, 6, 12)] == [0, 1, 0, 3, 3]


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[Any] = field(default_factory=list)
    timestamp: float = 1_700_000_000.0


@dataclass
class FakeOutput:
    sent: list[tuple[str, bytes | None, int | None]] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any = None,
        partition: int | None = None,
        on_delivery: Any = None,
    ) -> None:
        self.sent.append((topic, key, partition))

    def partitions(self, topic: str) -> int:
        self.asked.append(topic)
        return PARTITIONS

    async def flush(self) -> None:
        return None


class NoPositions:
    def get(self, key: str) -> None:
        return None

    def write(self, positions: Any) -> None:
        list(positions)


def event(table: str, op: str, row: dict[str, Any], lsn: int) -> bytes:
    before, after = (row, None) if op == "d" else (None, row)
    return json.dumps(
        {
            "op": op,
            "before": before,
            "after": after,
            "ts_ms": 1,
            "source": {"schema": "sales", "table": table, "name": "crm", "lsn": lsn, "ts_ms": 1},
        }
    ).encode()


def line(i: str, opp: str = "006A") -> dict[str, Any]:
    return {
        "id": i,
        "opportunity_id": opp,
        "service_line__c": "IMPL",
        "quantity": "1",
        "unit_price": "10",
        "currency_iso_code": "EUR",
    }


def test_children_land_on_their_opportunitys_partition() -> None:
    settings = Settings.from_env({"PSSYNC_PARTITIONS": str(PARTITIONS)})
    topo = topology(settings)
    out = FakeOutput()
    n = Normalizer(topo, out, None, NoPositions())  # type: ignore[arg-type]
    for entity in topo.entities:  # no registry: schema id 1 for all
        n.outputs[entity] = (topo.output(entity), 1, contracts.parsed(entity))
    milestone = {
        "id": "a0M1",
        "opportunity_id": "006B",
        "name": "Go-live",
        "amount__c": "5",
        "currency_iso_code": "EUR",
    }
    msgs = [
        Msg(
            "crm.sales.opportunity_line_item",
            0,
            0,
            b'{"id":"00k1"}',
            event("opportunity_line_item", "c", line("00k1"), 10),
        ),
        Msg(
            "crm.sales.opportunity_line_item",
            0,
            1,
            b'{"id":"00k2"}',
            event("opportunity_line_item", "c", line("00k2", "006B"), 11),
        ),
        Msg(
            "crm.sales.billing_milestone",
            0,
            0,
            b'{"id":"a0M1"}',
            event("billing_milestone", "c", milestone, 12),
        ),
        # A delete with its old row (REPLICA IDENTITY FULL) follows the same opportunity.
        Msg(
            "crm.sales.opportunity_line_item",
            0,
            2,
            b'{"id":"00k1"}',
            event("opportunity_line_item", "d", line("00k1"), 13),
        ),
        # A delete whose old row holds only the key cannot find its partition: dead letter.
        Msg(
            "crm.sales.opportunity_line_item",
            0,
            3,
            b'{"id":"00k3"}',
            event("opportunity_line_item", "d", {"id": "00k3"}, 14),
        ),
    ]
    asyncio.run(n.process(msgs))  # type: ignore[arg-type]
    a = partition_for(b"crm:opportunity:006A", PARTITIONS)
    b = partition_for(b"crm:opportunity:006B", PARTITIONS)
    assert out.sent[:4] == [
        ("canonical.opportunity_line_item", b"crm:opportunity_line_item:00k1", a),
        ("canonical.opportunity_line_item", b"crm:opportunity_line_item:00k2", b),
        ("canonical.billing_milestone", b"crm:billing_milestone:a0M1", b),
        ("canonical.opportunity_line_item", b"crm:opportunity_line_item:00k1", a),
    ]
    assert out.sent[4][0] == "dlq.normalize"
    # The partition count is read once per batch and topic, not per record.
    assert sorted(out.asked) == ["canonical.billing_milestone", "canonical.opportunity_line_item"]
