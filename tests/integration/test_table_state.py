"""The dedupe table across worker restarts, for each table store (PSSYNC_STORE)."""

from __future__ import annotations

import shutil

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from streams.admin import delete_topics
from streams.output import produce_sync
from streams.security import kafka_config
from streams.settings import Settings
from streams.topology import topology
from tables.dedupe import changelog_topic
from tests.integration.conftest import SliceEnv
from tests.integration.kafka_util import read_all

pytestmark = pytest.mark.integration

INSERT = (
    "INSERT INTO sales.opportunity (id, account_id, name, stage_name, amount, currency_iso_code, "
    "close_date, billing_type__c, service_lines__c) VALUES (:id, NULL, :name, 'Prospecting', "
    ":amount, 'EUR', '2027-02-01', 'Time and Materials', 'CONSULT;ARCH')"
)


def _has_row(env: SliceEnv, crm_id: str) -> bool:
    return bool(env.target_rows("opportunity_id = :k", {"k": f"crm:opportunity:{crm_id}"}))


def _settings(env: SliceEnv) -> Settings:
    return Settings.from_env(env.env)


@pytest.mark.parametrize(
    ("store", "wipe"),
    [("rocksdb", False), ("rocksdb", True), ("memory", False)],
    ids=["rocksdb-warm", "rocksdb-empty-data-dir", "memory"],
)
def test_replayed_changes_stay_duplicates_after_a_restart(
    slice_env: SliceEnv, store: str, wipe: bool
) -> None:
    env = slice_env
    env.env["PSSYNC_STORE"] = store
    settings = _settings(env)
    route = topology(settings).routes[0]
    canonical = topology(settings).canonical("opportunity")
    worker = env.worker()
    worker.start()
    for i in range(3):
        env.crm(INSERT, {"id": f"006S{i}", "name": f"Kept {i}", "amount": "5.00"})
    env.wait_for(lambda: all(_has_row(env, f"006S{i}") for i in range(3)), what="three rows")
    worker.stop()

    tables = settings.state_dir / "v1" / "tables"
    if store == "rocksdb":
        assert (tables / "dedupe-positions-0.db" / "CURRENT").is_file()
    else:
        assert not (tables / "dedupe-positions-0.db").exists()
    if wipe:
        # A new host or volume: the state must come back from the changelog.
        shutil.rmtree(settings.data_dir)

    # A connector restart replays the raw changes verbatim while the worker is down.
    raw = read_all(settings, route.raw_topic)
    assert len(raw) == 3
    produce_sync(settings, [(route.raw_topic, m.key(), m.value()) for m in raw])
    worker.start()
    env.crm(INSERT, {"id": "006S9", "name": "Marker", "amount": "1.00"})
    env.wait_for(lambda: _has_row(env, "006S9"), what="marker row")

    keys = [m.key() for m in read_all(settings, canonical)]
    assert keys == [f"crm:opportunity:006S{i}".encode() for i in (0, 1, 2, 9)]


def test_a_deleted_changelog_resets_the_local_state_like_the_memory_store(
    slice_env: SliceEnv,
) -> None:
    env = slice_env
    env.env["PSSYNC_STORE"] = "rocksdb"
    settings = _settings(env)
    route = topology(settings).routes[0]
    canonical = topology(settings).canonical("opportunity")
    worker = env.worker()
    worker.start()
    for i in range(3):
        env.crm(INSERT, {"id": f"006A{i}", "name": f"Reset {i}", "amount": "5.00"})
    env.wait_for(lambda: all(_has_row(env, f"006A{i}") for i in range(3)), what="three rows")
    worker.stop()
    # Deleting the changelog resets the app's state; the files on disk must not outlive it.
    delete_topics(settings, [changelog_topic(settings.app_id)])
    admin = AdminClient(kafka_config(settings))
    env.wait_for(
        lambda: changelog_topic(settings.app_id) not in admin.list_topics(timeout=10).topics,
        what="the changelog topic deleted",
    )
    raw = read_all(settings, route.raw_topic)
    produce_sync(settings, [(route.raw_topic, m.key(), m.value()) for m in raw])

    worker.start()
    want = [f"crm:opportunity:006A{i}".encode() for i in (0, 1, 2)] * 2
    env.wait_for(
        lambda: [m.key() for m in read_all(settings, canonical)] == want,
        what="the replayed changes emitted again",
    )
    assert "removed, restoring it from the changelog" in worker.log.read_text()


def test_a_connector_replaying_a_delete_does_not_undo_the_re_insert_after_it(
    slice_env: SliceEnv,
) -> None:
    env = slice_env
    settings = _settings(env)
    route = topology(settings).routes[0]
    canonical = topology(settings).canonical("opportunity")
    worker = env.worker()
    worker.start()
    env.crm(INSERT, {"id": "006U1", "name": "Undeleted", "amount": "5.00"})
    env.crm("DELETE FROM sales.opportunity WHERE id = '006U1'")
    env.crm(INSERT, {"id": "006U1", "name": "Undeleted", "amount": "6.00"})

    def live_again() -> bool:
        rows = env.target_rows("opportunity_id = 'crm:opportunity:006U1'")
        return bool(rows) and not rows[0]["is_deleted"] and rows[0]["amount"] == 6

    env.wait_for(live_again, what="the re-inserted row")

    # Connect restarts and writes its last changes again: the delete, its tombstone and
    # the re-insert, as new records on the raw topic.
    raw = read_all(settings, route.raw_topic)
    assert [m.value() is None for m in raw] == [False, False, True, False]
    replay = Producer(kafka_config(settings))
    for m in raw[1:]:
        replay.produce(route.raw_topic, m.value(), m.key(), partition=m.partition())
    assert replay.flush(30) == 0
    env.crm(INSERT, {"id": "006U9", "name": "Marker", "amount": "1.00"})
    env.wait_for(lambda: _has_row(env, "006U9"), what="marker row")

    assert live_again(), env.target_rows("opportunity_id = 'crm:opportunity:006U1'")
    # create, delete, create (no delete of the replayed tombstone), then the marker.
    keys = [m.key() for m in read_all(settings, canonical)]
    assert keys == [b"crm:opportunity:006U1"] * 3 + [b"crm:opportunity:006U9"]
