"""The PostgreSQL sink against a real target: random batches, planted bad records, outages.

Every test runs for an entity, another entity and a reference set: the sink derives each
table from its contract, and must keep the same properties for all of them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from connectors.sinks.postgres import PostgresSink
from connectors.sinks.resilient import RetryPolicy, apply_isolating
from streams.errors import SinkError
from tests.sink_model import NOW, SHAPES, Row, Shape, reference, splits, streams, tombstone
from tests.sink_model import event as make_event

pytestmark = pytest.mark.integration


class Target:
    """A PostgresSink of one entity driven from sync test code on one event loop."""

    def __init__(self, url: str, shape: Shape) -> None:
        self.url = url
        self.shape = shape
        self.table = shape.entity
        self.loop = asyncio.new_event_loop()
        self.sink = PostgresSink(url, shape.entity)
        self.run(self.sink.ensure_schema())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def event(self, key: str, version: int, live: bool) -> dict[str, Any]:
        return make_event(key, version, live, self.shape)

    def sql(self, statement: str, database: str | None = None) -> None:
        url = self.url if database is None else self.url.rsplit("/", 1)[0] + "/" + database
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text(statement))
        engine.dispose()

    def rows(self) -> dict[str, Row]:
        engine = create_engine(self.url)
        fields = ", ".join(self.shape.fields)
        with engine.connect() as conn:
            result = conn.execute(
                text(
                    f"SELECT {self.shape.key}, {fields}, is_deleted, deleted_at, "
                    "entity_version, data_version, deleted_version, last_event_id "
                    f"FROM {self.table}"
                )
            )
            rows = {r[0]: Row(tuple(r[1:4]), *r[4:]) for r in result}
        engine.dispose()
        return rows

    def close(self) -> None:
        self.run(self.sink.close())
        self.loop.close()


@pytest.fixture(params=SHAPES, ids=lambda s: s.entity)
def target(target_url: str, request: pytest.FixtureRequest) -> Iterator[Target]:
    t = Target(target_url, request.param)
    yield t
    t.close()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_random_batches_reach_the_rows_of_one_by_one_application(
    target: Target, data: st.DataObject
) -> None:
    events = data.draw(streams(shape=target.shape))
    target.sql(f"TRUNCATE {target.table}")
    for batch in data.draw(splits(events)):
        target.run(target.sink.apply(batch, now=NOW))
    assert target.rows() == reference(events, target.shape)


def test_upsert_and_delete_of_one_key_in_one_batch(target: Target) -> None:
    # The shape that used to fail with "ON CONFLICT DO UPDATE command cannot affect row a
    # second time": a live image and a newer delete of one key, over an existing row.
    ev = target.event
    target.run(target.sink.apply([ev("a", 1, True)], now=NOW))
    batch = [ev("a", 2, True), ev("a", 3, False), ev("b", 4, True), ev("b", 5, False)]
    target.run(target.sink.apply(batch, now=NOW))
    rows = target.rows()
    assert (rows["a"].name, rows["a"].is_deleted, rows["a"].entity_version) == ("a@2", True, 3)
    assert (rows["b"].name, rows["b"].is_deleted) == ("b@4", True)


def test_writes_report_what_changed_and_from_which_version(target: Target) -> None:
    ev = target.event

    def ops(batch: list[dict[str, Any]]) -> list[tuple[str, str, int | None, int]]:
        writes = target.run(target.sink.apply(batch, now=NOW))
        return sorted((w.key, w.op, w.version_before, w.version_after) for w in writes)

    assert ops([ev("a", 1, True), ev("b", 2, False)]) == [
        ("a", "create", None, 1),
        ("b", "delete", None, 2),
    ]
    # A duplicate and a stale image write nothing, so they are not reported.
    assert ops([ev("a", 1, True), ev("a", 0, True), ev("a", 3, True)]) == [("a", "update", 1, 3)]
    assert ops([ev("a", 4, False), ev("b", 5, True)]) == [
        ("a", "delete", 3, 4),
        ("b", "undelete", 2, 5),
    ]
    assert ops([tombstone("b")]) == [("b", "delete", 5, 5)]


def test_tombstone_between_two_images_of_one_key_in_one_batch(target: Target) -> None:
    ev = target.event
    batch = [ev("a", 1, True), tombstone("a"), ev("a", 0, True), ev("a", 5, True)]
    target.run(target.sink.apply(batch, now=NOW))
    assert target.rows() == reference(batch, target.shape)
    assert target.rows()["a"].name == "a@5" and not target.rows()["a"].is_deleted


def bad(ev: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**ev, "data": {**ev["data"], **fields}}


def test_bisect_isolates_planted_bad_records_of_any_class(target: Target) -> None:
    events = [target.event(f"k{i:03}", 10 + i, True) for i in range(200)]
    # A required field without a value (the table's CHECK, SQLSTATE 23514), and a NUL byte
    # PostgreSQL text refuses (raised by the driver, no SQLSTATE at all).
    events[37] = bad(events[37], name=None)
    events[150] = bad(events[150], name="nul\x00byte")
    outcome = target.run(apply_isolating(target.sink, events))
    rejected = sorted(ev["key"] for ev, _ in outcome.rejected)
    assert rejected == ["k037", "k150"]
    rows = target.rows()
    assert len(rows) == 198 and "k037" not in rows and "k150" not in rows
    assert len(outcome.writes) == 198
    # Bisection costs a few statements per bad record, not one per record.
    assert outcome.statements < 40


def test_target_outage_is_retried_not_dead_lettered(target: Target) -> None:
    dbname = target.url.rsplit("/", 1)[1]
    target.sql(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false', "postgres")
    target.sql(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'",
        "postgres",
    )

    def reopen() -> None:
        time.sleep(3)
        target.sql(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true', "postgres")

    retries: list[float] = []
    opener = threading.Thread(target=reopen)
    opener.start()
    events = [target.event(f"k{i}", i, True) for i in range(50)]
    outcome = target.run(
        apply_isolating(
            target.sink,
            events,
            RetryPolicy(retry_for=60, first_delay=0.2, max_delay=1),
            on_retry=lambda: retries.append(time.monotonic()),
        )
    )
    opener.join()
    assert retries and outcome.rejected == [] and len(outcome.writes) == 50
    assert len(target.rows()) == 50


def test_a_broken_target_stops_with_one_line_instead_of_dead_lettering(target: Target) -> None:
    target.sql(f"DROP TABLE {target.table}")
    with pytest.raises(SinkError, match="failed for 1s: UndefinedTable") as err:
        target.run(
            apply_isolating(
                target.sink,
                [target.event("a", 1, True), target.event("b", 2, True)],
                RetryPolicy(retry_for=1, first_delay=0.2, max_delay=0.2),
            )
        )
    assert "\n" not in str(err.value)
