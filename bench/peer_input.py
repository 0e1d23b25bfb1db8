"""The peer benchmark's input: Debezium change events of `sales.opportunity`, and what any
correct peer must end with.

The events are byte-for-byte the shape Debezium 3.6 writes on the local stack
(JsonConverter, schemas.enable=false, decimal.handling.mode=string, adaptive dates): creates
and then updates over a key space smaller than the event count, ~1% exact duplicates right
after their original (a producer retry), LSNs increasing in commit order.

The JDBC sink connector cannot read schemaless JSON, so it gets the same events with the
Connect schema inlined (schemas.enable=true), as Debezium writes them with that setting.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Producer

from streams.admin import TopicSpec, ensure_topics
from streams.security import kafka_config
from streams.settings import Settings

SOURCE_TOPIC_SUFFIX = "sales.opportunity"
STAGES = ["Prospecting", "Qualification", "Proposal/Price Quote", "Negotiation/Review",
          "Closed Won"]
BILLING = ["Fixed Fee", "Time and Materials", "Milestone", "Retainer"]
REGIONS = ["EMEA", "NA", "APAC", None]
LSN_BASE = 40_000_000
LSN_STEP = 344  # a few WAL records per change, as in a real slot
DUPLICATE_EVERY = 100  # one exact duplicate per 100 changes


def source_id(i: int) -> str:
    return f"006B{i:011d}"


@dataclass
class Expected:
    """What a correct peer ends with: one row per key at the key's last LSN."""

    rows: int = 0
    version_sum: int = 0
    checksum: str = ""
    canonical: int = 0  # distinct canonical records (unique changes)
    duplicates: int = 0
    final: dict[str, int] = field(default_factory=dict)


@dataclass
class Change:
    key: bytes
    value: bytes
    schema_key: bytes
    schema_value: bytes
    source_id: str
    lsn: int
    ts_ms: int


def checksum(pairs: dict[str, int]) -> str:
    """md5 of `key:version` lines sorted by key: the same text PostgreSQL's string_agg builds."""
    text = ",".join(f"{k}:{v}" for k, v in sorted(pairs.items()))
    return hashlib.md5(text.encode()).hexdigest()


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}000Z"


def _after(i: int, key_index: int, version: int, ts_ms: int, created_ms: int) -> dict[str, Any]:
    stage = STAGES[min(version, len(STAGES) - 1)]
    won = stage == "Closed Won"
    return {
        "id": source_id(key_index),
        "account_id": None,
        "name": f"Deal {key_index} rev {version}",
        "stage_name": stage,
        "amount": f"{1000 + (key_index * 37 + version * 250) % 90000}.50",
        "currency_iso_code": "USD" if key_index % 4 else "EUR",
        "close_date": 20999 + key_index % 200,
        "probability": f"{min(10 + version * 20, 100)}.00",
        "is_closed": won,
        "is_won": won,
        "billing_type__c": BILLING[key_index % len(BILLING)],
        "delivery_region__c": REGIONS[key_index % len(REGIONS)],
        "project_manager_email__c": f"pm{key_index % 97}@example.com",
        "sow_reference__c": f"SOW-{key_index}" if won else None,
        "service_lines__c": "CONSULT;PM" if key_index % 2 else "IMPL",
        "created_date": _iso(created_ms),
        "last_modified_date": _iso(ts_ms),
    }


def _envelope(op: str, after: dict[str, Any], lsn: int, tx: int, ts_ms: int,
              connector: str) -> dict[str, Any]:
    return {
        "before": None,
        "after": after,
        "source": {
            "version": "3.6.1.Final", "connector": "postgresql", "name": connector,
            "ts_ms": ts_ms, "snapshot": "false", "db": "crm",
            "sequence": json.dumps([str(lsn - LSN_STEP), str(lsn)], separators=(",", ":")),
            "ts_us": ts_ms * 1000, "ts_ns": ts_ms * 1_000_000, "schema": "sales",
            "table": "opportunity", "txId": tx, "lsn": lsn, "xmin": None, "origin": None,
            "origin_lsn": None,
        },
        "transaction": None,
        "op": op,
        "ts_ms": ts_ms + 400,
        "ts_us": (ts_ms + 400) * 1000,
        "ts_ns": (ts_ms + 400) * 1_000_000,
    }


def _opt(kind: str, name: str, logical: str | None = None) -> dict[str, Any]:
    f: dict[str, Any] = {"type": kind, "optional": True, "field": name}
    if logical:
        f["name"], f["version"] = logical, 1
    return f


def _req(kind: str, name: str, logical: str | None = None) -> dict[str, Any]:
    f = _opt(kind, name, logical)
    f["optional"] = False
    return f


def _value_schema() -> dict[str, Any]:
    """The Connect schema Debezium attaches to a sales.opportunity change (schemas.enable)."""
    row = [
        _req("string", "id"), _opt("string", "account_id"), _req("string", "name"),
        _req("string", "stage_name"), _opt("string", "amount"),
        _req("string", "currency_iso_code"), _opt("int32", "close_date", "io.debezium.time.Date"),
        _opt("string", "probability"), _req("boolean", "is_closed"), _req("boolean", "is_won"),
        _opt("string", "billing_type__c"), _opt("string", "delivery_region__c"),
        _opt("string", "project_manager_email__c"), _opt("string", "sow_reference__c"),
        _opt("string", "service_lines__c"),
        _req("string", "created_date", "io.debezium.time.ZonedTimestamp"),
        _req("string", "last_modified_date", "io.debezium.time.ZonedTimestamp"),
    ]
    value = "crm.sales.opportunity.Value"
    source = [
        _req("string", "version"), _req("string", "connector"), _req("string", "name"),
        _req("int64", "ts_ms"), _opt("string", "snapshot"), _req("string", "db"),
        _opt("string", "sequence"), _opt("int64", "ts_us"), _opt("int64", "ts_ns"),
        _req("string", "schema"), _req("string", "table"), _opt("int64", "txId"),
        _opt("int64", "lsn"), _opt("int64", "xmin"), _opt("string", "origin"),
        _opt("int64", "origin_lsn"),
    ]
    return {
        "type": "struct",
        "name": "crm.sales.opportunity.Envelope",
        "version": 2,
        "optional": False,
        "fields": [
            {"type": "struct", "fields": row, "optional": True, "name": value, "field": "before"},
            {"type": "struct", "fields": row, "optional": True, "name": value, "field": "after"},
            {"type": "struct", "fields": source, "optional": False,
             "name": "io.debezium.connector.postgresql.Source", "field": "source"},
            {"type": "struct", "optional": True, "name": "event.block", "version": 1,
             "field": "transaction", "fields": [
                 _req("string", "id"), _req("int64", "total_order"),
                 _req("int64", "data_collection_order")]},
            _req("string", "op"), _opt("int64", "ts_ms"), _opt("int64", "ts_us"),
            _opt("int64", "ts_ns"),
        ],
    }


KEY_SCHEMA = json.dumps(
    {"type": "struct", "fields": [_req("string", "id")], "optional": False,
     "name": "crm.sales.opportunity.Key"}, separators=(",", ":"))
VALUE_SCHEMA = json.dumps(_value_schema(), separators=(",", ":"))


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def generate(n: int, keys: int, connector: str = "crm",
             start_ms: int | None = None) -> tuple[list[Change], Expected]:
    """`n` events over `keys` keys: each key's create, then updates round-robin."""
    start_ms = start_ms or int(time.time() * 1000) - 3_600_000
    out: list[Change] = []
    exp = Expected()
    versions: dict[int, int] = {}
    i = 0
    while len(out) < n:
        k = i % keys
        version = versions.get(k, -1) + 1
        versions[k] = version
        lsn = LSN_BASE + i * LSN_STEP
        ts = start_ms + i
        after = _after(i, k, version, ts, start_ms + k)
        env = _envelope("c" if version == 0 else "u", after, lsn, 1000 + i, ts, connector)
        key_obj = {"id": after["id"]}
        payload, key_text = _compact(env), _compact(key_obj)
        change = Change(
            key=key_text.encode(), value=payload.encode(),
            schema_key=f'{{"schema":{KEY_SCHEMA},"payload":{key_text}}}'.encode(),
            schema_value=f'{{"schema":{VALUE_SCHEMA},"payload":{payload}}}'.encode(),
            source_id=after["id"], lsn=lsn, ts_ms=ts,
        )
        out.append(change)
        exp.final[change.source_id] = lsn
        exp.canonical += 1
        if i % DUPLICATE_EVERY == DUPLICATE_EVERY // 2 and len(out) < n:
            out.append(change)  # the same bytes again, as a retried produce leaves them
            exp.duplicates += 1
        i += 1
    exp.rows = len(exp.final)
    exp.version_sum = sum(exp.final.values())
    exp.checksum = checksum(exp.final)
    return out, exp


def producer(settings: Settings) -> Producer:
    return Producer(kafka_config(settings, **{
        "linger.ms": 20, "batch.num.messages": 10000, "queue.buffering.max.messages": 500000}))


def produce(settings: Settings, topic: str, changes: list[Change],
            with_schema: bool = False) -> None:
    """Create `topic` as Debezium does (compact,delete) and write the changes in order."""
    ensure_topics(settings, [TopicSpec(topic, 1, 1, {"cleanup.policy": "compact,delete"})])
    p = producer(settings)
    for c in changes:
        key, value = (c.schema_key, c.schema_value) if with_schema else (c.key, c.value)
        while True:
            try:
                p.produce(topic, value=value, key=key)
                break
            except BufferError:
                p.poll(0.05)
    if p.flush(120):
        raise SystemExit(f"could not write the input to {topic}: Kafka did not acknowledge it")


def live_change(key_index: int, lsn: int, ts_ms: int, connector: str = "crm") -> Change:
    """One create stamped with the current commit time, for latency measurements."""
    after = _after(key_index, key_index, 0, ts_ms, ts_ms)
    env = _envelope("c", after, lsn, lsn // LSN_STEP, ts_ms, connector)
    key_text, payload = _compact({"id": after["id"]}), _compact(env)
    return Change(key=key_text.encode(), value=payload.encode(), schema_key=b"",
                  schema_value=b"", source_id=after["id"], lsn=lsn, ts_ms=ts_ms)
