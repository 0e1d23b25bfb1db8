"""What the pipeline produced, against what the source did.

* every committed source change was captured (raw topic) and has exactly one canonical event
  id, whose record is the canonical mapping of that change (lost / wrong / doubled);
* the target table equals the canonical mapping of the source table, row by row and column by
  column; a row deleted at the source is `is_deleted` with its last data kept, and every row
  carries the version, position and event id of its last source change (and, where the
  target keeps them, the versions of its newest live image and newest delete);
* each DLQ topic holds exactly the poison injected for its stage, by marker.
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from fastavro import schemaless_reader
from sqlalchemy import create_engine, text

from connectors.sinks.tablespec import compile_spec
from connectors.sql import db_url
from schemas import contracts
from schemas.registry import Registry
from schemas.serde import Decoder, encode
from streams.changes import Change, format_lsn, parse
from streams.mappings.crm import map_opportunity, opportunity_key
from streams.mappings.envelope import correlation_id, event_id
from streams.settings import Settings
from streams.topology import topology
from tests.integration.kafka_util import read_all
from tests.sink_model import stored
from tests.soak.poison import find_marker
from tests.soak.workload import Tally

ENTITY = "opportunity"
EXAMPLES = 5  # mismatches quoted per kind in the log
ENVELOPE_FIELDS = ("event_id", "op", "entity_version", "correlation_id")
SOURCE_FIELDS = ("key", "position", "committed_at")


def canonical_form(record: dict[str, Any]) -> dict[str, Any]:
    """The record as it reads back from the canonical topic (Avro precision: millis, cents)."""
    parsed = contracts.parsed(ENTITY)
    body = encode(0, parsed, record)[5:]
    decoded = schemaless_reader(io.BytesIO(body), parsed, None)
    assert isinstance(decoded, dict)
    return decoded


@dataclass
class RawChange:
    change: Change
    event_id: str
    expected: dict[str, Any]  # canonical record the change must become (envelope + data)


@dataclass
class Findings:
    source_changes: int = 0
    captured: int = 0
    canonical_distinct: int = 0
    canonical_messages: int = 0
    not_captured: int = 0  # committed at the source, absent from the raw topic
    lost_events: int = 0  # raw change without canonical event
    lost_rows: int = 0  # source row absent from the target
    wrong_events: int = 0
    wrong_rows: int = 0
    doubled_events: int = 0  # distinct canonical events for one source change, or for none
    wrong_versions: int = 0  # target rows not at their last source change
    dlq_expected: dict[str, int] = field(default_factory=dict)
    dlq_found: dict[str, int] = field(default_factory=dict)  # distinct markers
    dlq_missing: dict[str, int] = field(default_factory=dict)
    dlq_unexpected: dict[str, int] = field(default_factory=dict)  # unmarked or other stage's
    dlq_copies: dict[str, int] = field(default_factory=dict)  # redeliveries of one marker
    details: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.not_captured + self.lost_events + self.lost_rows

    @property
    def wrong(self) -> int:
        return self.wrong_events + self.wrong_rows

    @property
    def doubled(self) -> int:
        return self.doubled_events + self.wrong_versions

    @property
    def dlq_exact(self) -> bool:
        return not any(self.dlq_missing.values()) and not any(self.dlq_unexpected.values())

    @property
    def ok(self) -> bool:
        return not (self.lost or self.wrong or self.doubled) and self.dlq_exact and (
            self.captured == self.source_changes
        )

    def detail(self, kind: str, counter: Counter[str], msg: str) -> None:
        counter[kind] += 1
        if counter[kind] <= EXAMPLES:
            self.details.append(f"{kind}: {msg}")


class Verifier:
    def __init__(self, settings: Settings, tally: Tally) -> None:
        self.settings = settings
        self.tally = tally
        topo = topology(settings)
        self.raw_topic = topo.routes[0].raw_topic
        self.canonical_topic = topo.canonical(ENTITY)
        self.dlq_topics = {stage: topo.dlq(stage) for stage in ("normalize", "sink")}
        self.decoder = Decoder(Registry(settings).schema_by_id)

    # ---------------------------------------------------------------- reading
    def _raw(self) -> dict[str, RawChange]:
        changes: dict[str, RawChange] = {}
        for msg in read_all(self.settings, self.raw_topic):
            if find_marker(msg.key()) or msg.value() is None:
                continue  # poison (checked through the DLQ) or a tombstone after a delete
            change = parse(msg.key(), msg.value(), self.raw_topic)
            if change is None:
                continue
            key = opportunity_key(change.key)
            eid = event_id(change, key)
            if eid not in changes:
                _, record = map_opportunity(change, "")
                changes[eid] = RawChange(change, eid, canonical_form(record))
        return changes

    def _canonical(self, f: Findings) -> dict[str, list[dict[str, Any]]]:
        events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for msg in read_all(self.settings, self.canonical_topic):
            if find_marker(msg.key()):
                continue  # sink poison
            f.canonical_messages += 1
            record = self.decoder.decode(msg.value() or b"")
            record["key"] = (msg.key() or b"").decode()
            # The contract types event ids as uuid: they decode as UUID objects.
            events[str(record["envelope"]["event_id"])].append(record)
        return events

    def _source_rows(self) -> dict[str, dict[str, Any]]:
        """id -> last image: live rows from the CRM, deleted ones as the workload deleted them."""
        engine = create_engine(db_url(self.settings.crm_db))
        try:
            with engine.connect() as conn:
                live = {r["id"]: dict(r) for r in
                        conn.execute(text("SELECT * FROM sales.opportunity")).mappings()}
        finally:
            engine.dispose()
        return {**self.tally.deleted, **live}

    def _target_rows(self) -> dict[str, dict[str, Any]]:
        engine = create_engine(self.settings.target_url)
        try:
            with engine.connect() as conn:
                if conn.execute(text("SELECT to_regclass('opportunity')")).scalar() is None:
                    return {}
                return {r["opportunity_id"]: dict(r) for r in
                        conn.execute(text("SELECT * FROM opportunity")).mappings()}
        finally:
            engine.dispose()

    # ---------------------------------------------------------------- checks
    def check(self) -> Findings:
        f = Findings(source_changes=self.tally.changes)
        n: Counter[str] = Counter()
        raw = self._raw()
        f.captured = len(raw)
        f.not_captured = max(0, f.source_changes - f.captured)
        canonical = self._canonical(f)
        f.canonical_distinct = len(canonical)
        self._check_events(f, n, raw, canonical)
        self._check_target(f, n, raw)
        self._check_dlq(f)
        return f

    def _check_events(self, f: Findings, n: Counter[str], raw: dict[str, RawChange],
                      canonical: dict[str, list[dict[str, Any]]]) -> None:
        for eid in raw.keys() - canonical.keys():
            c = raw[eid].change
            f.detail("lost event", n, f"{c.op} of {c.key} at {c.position} ({eid})")
        f.lost_events = len(raw.keys() - canonical.keys())
        per_change: dict[tuple[str, str], set[str]] = defaultdict(set)
        for eid, copies in canonical.items():
            env = copies[0]["envelope"]
            per_change[(copies[0]["key"], env["source"]["position"])].add(eid)
            if eid not in raw:
                f.doubled_events += 1
                what = "a raw tombstone" if env["source"]["position"] == "tombstone" else "?"
                f.detail("event for no source change", n,
                         f"{copies[0]['key']} {env['op']} {eid} from {what} at "
                         f"{env['causation_id']}")
                continue
            want = raw[eid].expected
            for got in copies:
                diff = _event_diff(want, got)
                if diff:
                    f.wrong_events += 1
                    f.detail("wrong event", n, f"{got['key']} {eid}: {diff}")
                    break
        for (key, position), ids in per_change.items():
            if len(ids) > 1:
                f.doubled_events += len(ids) - 1
                f.detail("doubled event", n, f"{key} at {position}: {sorted(ids)}")

    def _check_target(self, f: Findings, n: Counter[str], raw: dict[str, RawChange]) -> None:
        last: dict[str, RawChange] = {}
        # Newest live and newest delete version per key: the target keeps both.
        live_version: dict[str, int] = {}
        delete_version: dict[str, int] = {}
        for rc in raw.values():
            key = opportunity_key(rc.change.key)
            seq = rc.change.sequence or 0
            if key not in last or seq > (last[key].change.sequence or 0):
                last[key] = rc
            versions = delete_version if rc.change.op == "delete" else live_version
            versions[key] = max(seq, versions.get(key, seq))
        source = self._source_rows()
        target = self._target_rows()
        for crm_id, image in source.items():
            key = opportunity_key(crm_id)
            row = target.get(key)
            if row is None:
                f.lost_rows += 1
                f.detail("lost row", n, key)
                continue
            change = Change("update", None, image, "", "sales.opportunity", crm_id, "", 0, 0)
            _, mapped = map_opportunity(change, "")
            data = canonical_form(mapped)["data"]
            wrong = {
                c.name: (row[c.name], want)
                for c in compile_spec(ENTITY, contracts.schema(ENTITY)).columns
                if row[c.name] != (want := stored(c.sql_type, data[c.name]))
            }
            deleted = crm_id in self.tally.deleted
            final = last.get(key)
            if final is None:
                f.lost_rows += 1
                f.detail("row without captured change", n, key)
                continue
            env = final.expected["envelope"]
            deleted_at = env["source"]["committed_at"] if deleted else None
            if row["is_deleted"] != deleted or row["deleted_at"] != deleted_at:
                wrong["is_deleted/deleted_at"] = ((row["is_deleted"], row["deleted_at"]),
                                                  (deleted, deleted_at))
            if wrong:
                f.wrong_rows += 1
                f.detail("wrong row", n, f"{key}: (target, expected) {wrong}")
            book = {
                "entity_version": env["entity_version"],
                "source_position": format_lsn(env["entity_version"]),
                "last_event_id": str(env["event_id"]),
                "correlation_id": correlation_id(key),
                "data_version": live_version.get(key),
                "deleted_version": delete_version.get(key),
            }
            off = {c: (row[c], v) for c, v in book.items() if c in row and str(row[c]) != str(v)}
            if off:
                f.wrong_versions += 1
                f.detail("wrong version", n, f"{key}: (target, expected) {off}")
        for key in target.keys() - {opportunity_key(i) for i in source}:
            f.wrong_rows += 1
            f.detail("row not in the source", n, key)

    def _check_dlq(self, f: Findings) -> None:
        for stage, topic in self.dlq_topics.items():
            expected = {m for m, s in self.tally.poison_acked.items() if s == stage}
            found: Counter[str] = Counter()
            unmarked = 0
            for msg in read_all(self.settings, topic):
                mark = find_marker(msg.key())
                if mark is None:
                    unmarked += 1
                    if unmarked <= EXAMPLES:
                        f.details.append(f"unexpected in {topic}: key {msg.key()!r}")
                else:
                    found[mark] += 1
            f.dlq_expected[stage] = len(expected)
            f.dlq_found[stage] = len(found)
            f.dlq_missing[stage] = len(expected - found.keys())
            f.dlq_unexpected[stage] = unmarked + len(found.keys() - expected)
            f.dlq_copies[stage] = sum(found.values()) - len(found)
            for mark in sorted(expected - found.keys())[:EXAMPLES]:
                f.details.append(f"missing in {topic}: {mark}")


def _event_diff(want: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    diff: dict[str, Any] = {}
    for name in ENVELOPE_FIELDS:
        if str(got["envelope"][name]) != str(want["envelope"][name]):
            diff[name] = (got["envelope"][name], want["envelope"][name])
    for name in SOURCE_FIELDS:
        if got["envelope"]["source"][name] != want["envelope"]["source"][name]:
            diff[f"source.{name}"] = (got["envelope"]["source"][name],
                                      want["envelope"]["source"][name])
    if got["data"] != want["data"]:
        g, w = got["data"] or {}, want["data"] or {}
        diff["data"] = {k: (g.get(k), w.get(k)) for k in set(g) | set(w) if g.get(k) != w.get(k)}
    return diff

