"""The CRM -> canonical -> target slice on the real stack."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from decimal import Decimal

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas import contracts
from schemas.registry import client_config
from streams.dlq import read_context
from streams.output import produce_sync
from streams.topology import topology
from tests.integration.conftest import SliceEnv
from tests.integration.kafka_util import read_all

pytestmark = pytest.mark.integration

INSERT = (
    "INSERT INTO sales.opportunity (id, account_id, name, stage_name, amount, currency_iso_code, "
    "close_date, billing_type__c, service_lines__c) VALUES (:id, NULL, :name, 'Prospecting', "
    ":amount, 'EUR', '2027-02-01', 'Time and Materials', 'CONSULT;ARCH')"
)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def _row(env: SliceEnv, crm_id: str) -> dict[str, object] | None:
    rows = env.target_rows("opportunity_id = :k", {"k": f"crm:opportunity:{crm_id}"})
    return dict(rows[0]) if rows else None


def _replay(env: SliceEnv, *args: str) -> subprocess.CompletedProcess[str]:
    """`pssync replay` on the canonical opportunity topic, as a user runs it."""
    canonical = topology(env.settings).canonical("opportunity")
    cli = [sys.executable, "-m", "streams.cli", "replay", "--topic", canonical, *args]
    return subprocess.run(cli, env=env.env, capture_output=True, text=True)


def test_insert_update_delete_reach_target_and_decode_with_registry(slice_env: SliceEnv) -> None:
    env = slice_env
    env.worker().start()
    env.crm(INSERT, {"id": "006X1", "name": "Data platform", "amount": "125000.50"})
    env.wait_for(lambda: _row(env, "006X1") is not None, what="inserted row in target")
    row = _row(env, "006X1")
    assert row is not None
    assert row["name"] == "Data platform" and row["stage"] == "prospecting"
    assert row["amount"] == Decimal("125000.50") and row["currency"] == "EUR"
    assert row["billing_type"] == "time_and_materials"
    assert row["service_lines"] == ["CONSULT", "ARCH"]

    env.crm(
        "UPDATE sales.opportunity SET stage_name = 'Closed Won', is_closed = true, "
        "is_won = true WHERE id = '006X1'"
    )
    env.wait_for(
        lambda: (_row(env, "006X1") or {}).get("stage") == "closed_won", what="update applied"
    )
    env.crm("DELETE FROM sales.opportunity WHERE id = '006X1'")
    env.wait_for(
        lambda: (_row(env, "006X1") or {}).get("is_deleted") is True, what="delete applied"
    )
    deleted = _row(env, "006X1")
    assert deleted is not None and deleted["name"] == "Data platform"  # soft delete keeps data

    # Every canonical event decodes with confluent-kafka's own deserializer via the registry.
    topic = topology(env.settings).canonical("opportunity")
    deserializer = AvroDeserializer(SchemaRegistryClient(client_config(env.settings)))
    events = [
        deserializer(m.value(), SerializationContext(topic, MessageField.VALUE))
        for m in read_all(env.settings, topic)
    ]
    assert [e["envelope"]["op"] for e in events] == ["create", "update", "delete"]
    assert events[0]["data"]["amount"] == Decimal("125000.50")
    assert events[1]["data"]["stage"] == "closed_won" and events[1]["data"]["is_won"] is True
    assert events[2]["data"] is None
    versions = [e["envelope"]["entity_version"] for e in events]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert len({e["envelope"]["correlation_id"] for e in events}) == 1

    # Each target write has one audit record, decodable through the registry.
    audit_topic = topology(env.settings).audit("sink")
    audits = [
        deserializer(m.value(), SerializationContext(audit_topic, MessageField.VALUE))
        for m in read_all(env.settings, audit_topic)
    ]
    assert [(a["op"], a["version_before"], a["version_after"]) for a in audits] == [
        ("create", None, versions[0]),
        ("update", versions[0], versions[1]),
        ("delete", versions[1], versions[2]),
    ]
    assert [a["event_id"] for a in audits] == [str(e["envelope"]["event_id"]) for e in events]
    assert audits[0]["target"].endswith(f"/{env.settings.target_url.rsplit('/', 1)[1]}/opportunity")
    assert "postgres:postgres" not in audits[0]["target"]  # no credentials

    # The worker's Prometheus endpoint reports what happened, lag included.
    url = f"http://127.0.0.1:{env.settings.web_port}/metrics"
    # Lag is measured every 15 s from committed offsets: it reaches 0 once the last
    # batch's offsets are committed and the next report runs.
    caught_up = f'pssync_consumer_lag{{partition="0",topic="{topic}"}} 0.0'
    env.wait_for(lambda: caught_up in _get(url), timeout=60, what="lag metric at 0")
    text = _get(url)
    assert 'pssync_events_out_total{entity="opportunity",stage="normalize"} 3.0' in text
    assert (
        'pssync_sink_rows_total{entity="opportunity",result="applied",target="postgres"} 3.0'
        in (text)
    )


def test_same_raw_event_twice_has_one_effect(slice_env: SliceEnv) -> None:
    env = slice_env
    env.worker().start()
    env.crm(INSERT, {"id": "006D1", "name": "Once", "amount": "10.00"})
    env.wait_for(lambda: _row(env, "006D1") is not None, what="row in target")
    first = _row(env, "006D1")
    route = topology(env.settings).routes[0]
    canonical = topology(env.settings).canonical("opportunity")
    raw = read_all(env.settings, route.raw_topic)
    assert len(raw) == 1
    # Replay the raw change verbatim, as a connector restart would.
    produce_sync(env.settings, [(route.raw_topic, raw[0].key(), raw[0].value())])
    # A marker change after the replay proves the replay has been processed.
    env.crm(INSERT, {"id": "006D2", "name": "Marker", "amount": "1.00"})
    env.wait_for(lambda: _row(env, "006D2") is not None, what="marker row")
    events = read_all(env.settings, canonical)
    assert [m.key() for m in events] == [b"crm:opportunity:006D1", b"crm:opportunity:006D2"]
    assert _row(env, "006D1") == first  # untouched, not even re-applied


def test_poison_events_go_to_dlq_and_stream_goes_on(slice_env: SliceEnv) -> None:
    env = slice_env
    env.worker().start()
    topo = topology(env.settings)
    raw_topic = topo.routes[0].raw_topic
    no_after = json.dumps(
        {"op": "c", "before": None, "after": None, "source": {"lsn": 1, "ts_ms": 1}}
    ).encode()
    no_name = json.dumps(
        {
            "op": "c",
            "before": None,
            "after": {"id": "006P3", "stage_name": "x", "currency_iso_code": "USD"},
            "source": {"lsn": 2, "ts_ms": 1, "schema": "sales", "table": "opportunity"},
        }
    ).encode()
    poison = [
        (raw_topic, b'{"id":"006P1"}', b"{not json"),
        (raw_topic, b'{"id":"006P2"}', no_after),
        (raw_topic, b'{"id":"006P3"}', no_name),
    ]
    produce_sync(env.settings, poison)
    env.crm(INSERT, {"id": "006OK", "name": "Healthy", "amount": "5.00"})
    env.wait_for(lambda: _row(env, "006OK") is not None, what="healthy row after poison")

    dlq = read_all(env.settings, topo.dlq("normalize"))
    assert [m.value() for m in dlq] == [v for _, _, v in poison]  # original bytes, untouched
    assert [m.key() for m in dlq] == [k for _, k, _ in poison]
    contexts = [read_context(m.headers()) for m in dlq]
    assert [c["topic"] for c in contexts] == [raw_topic] * 3
    assert [int(c["offset"]) for c in contexts] == [0, 1, 2]
    assert all(c["stage"] == "normalize" and c["error.class"] == "BadEventError" for c in contexts)
    assert "not valid JSON" in contexts[0]["error.message"]
    assert "'after'" in contexts[1]["error.message"]
    assert "'name'" in contexts[2]["error.message"]


def test_worker_killed_mid_stream_loses_and_doubles_nothing(slice_env: SliceEnv) -> None:
    env = slice_env
    total = 3000
    rows = [{"id": f"006K{i:05d}", "name": f"Deal {i}", "amount": f"{i}.25"} for i in range(total)]
    for start in range(0, total, 500):
        env.crm(INSERT, rows[start : start + 500])
    env.crm(
        "UPDATE sales.opportunity SET stage_name = 'Closed Won', is_closed = true, "
        "is_won = true WHERE id < '006K01000'"
    )
    worker = env.worker()
    worker.start()
    env.wait_for(lambda: len(env.target_rows()) >= 300, timeout=120, what="first rows applied")
    worker.kill()  # SIGKILL: no flush, no commit, no goodbye
    applied_at_kill = len(env.target_rows())
    worker.start()
    env.wait_for(
        lambda: (
            len(env.target_rows("stage = 'closed_won'")) == 1000 and len(env.target_rows()) == total
        ),
        timeout=180,
        what="all rows after restart",
    )
    assert applied_at_kill < total or worker.starts == 2
    target = env.target_rows()
    assert len(target) == total
    assert {r["crm_id"] for r in target} == {r["id"] for r in rows}
    won = {r["crm_id"] for r in target if r["stage"] == "closed_won"}
    assert won == {f"006K{i:05d}" for i in range(1000)}
    assert all(r["amount"] == Decimal(f"{int(r['crm_id'][4:])}.25") for r in target)
    # Duplicates on the canonical topic are allowed (at-least-once) but carry the same
    # event ids, so every consumer can drop them; nothing is missing.
    canonical = topology(env.settings).canonical("opportunity")
    deserializer = AvroDeserializer(SchemaRegistryClient(client_config(env.settings)))
    ids = [
        deserializer(m.value(), SerializationContext(canonical, MessageField.VALUE))["envelope"][
            "event_id"
        ]
        for m in read_all(env.settings, canonical)
    ]
    assert len(set(ids)) == total + 1000


@pytest.mark.parametrize("slice_env", [{"PSSYNC_PARTITIONS": "2"}], indirect=True)
def test_two_workers_share_the_load_and_a_killed_one_loses_and_doubles_nothing(
    slice_env: SliceEnv,
) -> None:
    env = slice_env
    total = 4000
    rows = [{"id": f"006R{i:05d}", "name": f"Deal {i}", "amount": f"{i}.50"} for i in range(total)]
    first, second = env.worker(), env.worker()
    first.start()
    second.start()
    for start in range(0, total, 500):
        env.crm(INSERT, rows[start : start + 500])
    env.crm(
        "UPDATE sales.opportunity SET stage_name = 'Closed Won', is_closed = true, "
        "is_won = true WHERE id < '006R02000'"
    )
    env.wait_for(lambda: len(env.target_rows()) >= 500, timeout=120, what="first rows applied")
    second.kill()  # its partitions move to the first worker in a rebalance
    env.wait_for(
        lambda: (
            len(env.target_rows("stage = 'closed_won'")) == 2000 and len(env.target_rows()) == total
        ),
        # The group notices the dead member after its session timeout (PSSYNC_SESSION_TIMEOUT) only.
        timeout=360,
        what="all rows after the rebalance",
    )
    target = env.target_rows()
    assert {r["crm_id"] for r in target} == {r["id"] for r in rows}
    assert all(r["amount"] == Decimal(f"{int(r['crm_id'][4:])}.50") for r in target)
    canonical = topology(env.settings).canonical("opportunity")
    deserializer = AvroDeserializer(SchemaRegistryClient(client_config(env.settings)))
    messages = read_all(env.settings, canonical)
    assert {m.partition() for m in messages} == {0, 1}  # both partitions carried the load
    ids = {
        deserializer(m.value(), SerializationContext(canonical, MessageField.VALUE))["envelope"][
            "event_id"
        ]
        for m in messages
    }
    assert len(ids) == total + 2000


def test_sink_isolates_rows_the_target_rejects(slice_env: SliceEnv) -> None:
    env = slice_env
    env.worker().start()
    env.crm(INSERT, {"id": "006S0", "name": "Before", "amount": "1.00"})
    env.wait_for(lambda: _row(env, "006S0") is not None, what="first row")
    topo = topology(env.settings)
    canonical = topo.canonical("opportunity")
    good = read_all(env.settings, canonical)[0]
    # Same writer schema, but a name the target's text column cannot hold (a NUL byte).
    deserializer = AvroDeserializer(SchemaRegistryClient(client_config(env.settings)))
    record = deserializer(good.value(), SerializationContext(canonical, MessageField.VALUE))
    record["data"]["name"] = "nul\x00byte"
    record["data"]["opportunity_id"] = "crm:opportunity:006BAD"
    record["envelope"]["entity_version"] += 1
    serializer = AvroSerializer(
        SchemaRegistryClient(client_config(env.settings)),
        contracts.schema_str("opportunity"),
        conf={"auto.register.schemas": True},
    )
    bad = serializer(record, SerializationContext(canonical, MessageField.VALUE))
    produce_sync(
        env.settings,
        [
            (canonical, b"crm:opportunity:006BAD", bad),
            (canonical, b"crm:opportunity:006JUNK", b"\x00\x00\x00"),
        ],
    )
    env.crm(INSERT, {"id": "006S1", "name": "After", "amount": "2.00"})
    env.wait_for(lambda: _row(env, "006S1") is not None, what="row after poison")
    assert _row(env, "006BAD") is None
    dlq = read_all(env.settings, topo.dlq("sink"))
    assert sorted(m.key() for m in dlq) == [b"crm:opportunity:006BAD", b"crm:opportunity:006JUNK"]
    by_key = {m.key(): read_context(m.headers()) for m in dlq}
    assert by_key[b"crm:opportunity:006JUNK"]["error.class"] == "SerdeError"
    # The target's own words (binary COPY; text COPY's client-side check says the same).
    message = by_key[b"crm:opportunity:006BAD"]["error.message"]
    assert "0x00" in message and "column name" in message
    assert {m.value() for m in dlq} == {bad, b"\x00\x00\x00"}


def test_replay_canonical_topic_rebuilds_a_lost_target(slice_env: SliceEnv) -> None:
    env = slice_env
    worker = env.worker()
    worker.start()
    rows = [{"id": f"006R{i}", "name": f"Replay {i}", "amount": f"{i}.00"} for i in range(5)]
    env.crm(INSERT, rows)
    env.crm("UPDATE sales.opportunity SET stage_name = 'Closed Won' WHERE id = '006R1'")
    env.crm("DELETE FROM sales.opportunity WHERE id = '006R2'")
    env.wait_for(
        lambda: (
            len(env.target_rows()) == 5
            and len(env.target_rows("stage = 'closed_won'")) == 1
            and len(env.target_rows("is_deleted")) == 1
        ),
        what="converged target",
    )
    ignore = {"applied_at"}
    before = [{k: v for k, v in r.items() if k not in ignore} for r in env.target_rows()]

    # Dry run changes nothing; executing while the worker runs is refused.
    dry = _replay(env)
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout and "to replay" in dry.stdout
    busy = _replay(env, "--execute")
    assert busy.returncode == 2 and "active member" in busy.stderr

    worker.stop()
    env.crm_target("DELETE FROM opportunity")  # the target lost everything
    done = _replay(env, "--execute")
    assert done.returncode == 0, done.stderr
    worker.start()
    env.wait_for(
        lambda: len(env.target_rows()) == 5, what=f"target rebuilt by replay\n{done.stdout}"
    )
    after = [{k: v for k, v in r.items() if k not in ignore} for r in env.target_rows()]
    assert after == before


def test_restarts_after_replay_lose_nothing(slice_env: SliceEnv) -> None:
    # Each start restores the dedupe table, then resumes the streams: records fetched in
    # between must reach the sink (streams/flow.py). Without that, about one restart in four
    # lost some of these events.
    env = slice_env
    worker = env.worker()
    worker.start()
    n = 2000
    env.crm(INSERT, [{"id": f"006L{i}", "name": f"L {i}", "amount": f"{i}.00"} for i in range(n)])
    env.wait_for(lambda: len(env.target_rows()) == n, timeout=180, what=f"{n} rows")
    for round_ in range(1, 5):
        worker.stop()
        env.crm_target("DELETE FROM opportunity")
        done = _replay(env, "--execute")
        assert done.returncode == 0, done.stderr
        worker.start()
        env.wait_for(
            lambda: len(env.target_rows()) == n, what=f"all {n} rows after replay {round_}"
        )


def test_lone_tombstone_deletes_and_a_later_reinsert_wins(slice_env: SliceEnv) -> None:
    # After compaction a raw topic may hold only the tombstone of a deleted row.
    env = slice_env
    env.worker().start()
    env.crm(INSERT, {"id": "006T1", "name": "Compacted", "amount": "3.00"})
    env.wait_for(lambda: _row(env, "006T1") is not None, what="row in target")
    version = (_row(env, "006T1") or {})["entity_version"]
    raw_topic = topology(env.settings).routes[0].raw_topic
    produce_sync(env.settings, [(raw_topic, b'{"id":"006T1"}', None)])
    env.wait_for(lambda: (_row(env, "006T1") or {}).get("is_deleted") is True, what="delete")
    assert (_row(env, "006T1") or {})["entity_version"] == version  # position unknown: kept
    # The CRM restores the record (a Salesforce undelete keeps the id): newer position wins.
    env.crm("UPDATE sales.opportunity SET name = 'Restored' WHERE id = '006T1'")
    env.wait_for(
        lambda: (_row(env, "006T1") or {}).get("is_deleted") is False, what="re-insert applied"
    )
    assert (_row(env, "006T1") or {})["name"] == "Restored"
