"""The peer benchmark's input and measurements: the events are what pssync reads from
Debezium, and the expected result is what applying them in order gives."""

from __future__ import annotations

import hashlib
import itertools
import json
import os

from bench import peer_input, peer_jdbc, peer_measure
from schemas import contracts
from schemas.serde import encode
from streams.changes import parse
from streams.mappings.crm import map_opportunity
from streams.settings import Settings

TOPIC = "crm.sales.opportunity"


def test_events_parse_map_and_encode_like_debezium_events() -> None:
    changes, _ = peer_input.generate(300, 60)
    parsed = contracts.parsed("opportunity")
    for c in changes:
        change = parse(c.key, c.value, TOPIC)
        assert change is not None
        assert (change.key, change.sequence, change.committed_at_ms) == (c.source_id, c.lsn,
                                                                          c.ts_ms)
        key, record = map_opportunity(change, "t/0/0")
        assert key.endswith(c.source_id)
        assert encode(1, parsed, record)[:1] == b"\x00"


def test_schema_form_carries_the_same_change() -> None:
    changes, _ = peer_input.generate(50, 10)
    for c in changes:
        plain, wrapped = parse(c.key, c.value, TOPIC), parse(c.schema_key, c.schema_value, TOPIC)
        assert plain == wrapped
        envelope = json.loads(c.schema_value)["schema"]
        assert envelope["name"].endswith(".Envelope")
        row = {f["field"] for f in envelope["fields"][1]["fields"]}
        assert row == set(json.loads(c.value)["after"])


def test_expected_result_is_each_keys_last_change_applied_in_order() -> None:
    changes, exp = peer_input.generate(1000, 200)
    assert len(changes) == 1000
    state: dict[str, int] = {}
    seen: set[bytes] = set()
    duplicates = 0
    for c in changes:
        duplicates += c.value in seen
        seen.add(c.value)
        state[c.source_id] = c.lsn
    assert exp.rows == len(state) == 200
    assert exp.final == state and exp.version_sum == sum(state.values())
    assert exp.duplicates == duplicates and 8 <= duplicates <= 12
    assert exp.canonical == 1000 - duplicates
    # Every duplicate follows its original directly: a peer without dedupe still converges.
    adjacent = sum(cur.value == prev.value for prev, cur in itertools.pairwise(changes))
    assert adjacent == duplicates
    lines = ",".join(f"{k}:{v}" for k, v in sorted(state.items()))
    assert exp.checksum == hashlib.md5(lines.encode()).hexdigest()


def test_latency_events_are_creates_stamped_with_their_commit_time() -> None:
    c = peer_input.live_change(7, 123_456, 1_800_000_000_000)
    change = parse(c.key, c.value, TOPIC)
    assert change is not None and change.op == "create"
    assert change.committed_at_ms == 1_800_000_000_000 and change.sequence == 123_456


def test_jdbc_sink_upserts_by_record_key_and_keeps_the_lsn() -> None:
    conf = peer_jdbc.config(Settings.from_env({}), "x.sales.opportunity", "db1")
    assert conf["insert.mode"] == "upsert" and conf["primary.key.mode"] == "record_key"
    assert conf["delete.enabled"] == "true" and conf["transforms.unwrap.add.fields"] == "lsn"
    assert conf["connection.url"].endswith("/db1")


def test_process_cpu_and_peak_memory_come_from_proc() -> None:
    sum(i * i for i in range(200_000))
    assert peer_measure.cpu_seconds(os.getpid()) > 0
    assert peer_measure.peak_rss_mb(os.getpid()) > 10
