from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.sinks.plan import KeyImage, plan_batch
from connectors.sinks.postgres import PostgresSink, Statements
from connectors.sinks.tablespec import compile_spec
from schemas import contracts
from streams.errors import SinkError
from tests.sink_model import (
    NOW,
    OPPORTUNITY,
    SHAPES,
    Row,
    Shape,
    essentials,
    event,
    in_version_order,
    reference,
    splits,
    streams,
    tombstone,
)


def statements(shape: Shape) -> Statements:
    return Statements(compile_spec(shape.entity, contracts.schema(shape.entity), shape.reference))


def merge(st_: Statements, shape: Shape, rows: dict[str, Row], image: KeyImage) -> None:
    """What the target's upsert does with one key image (mirrors the SQL in postgres.py)."""
    staged = st_.row_dict(image, NOW)
    values = tuple(staged[f] for f in shape.fields)
    old = rows.get(image.key)
    if old is None:
        rows[image.key] = Row(
            values,
            staged["is_deleted"],
            staged["deleted_at"],
            staged["entity_version"],
            staged["data_version"],
            staged["deleted_version"],
            staged["last_event_id"],
        )
        return
    lv, dv = staged["data_version"], staged["deleted_version"]
    newer_data = lv is not None and lv > (old.data_version if old.data_version is not None else -1)
    newer_delete = dv is not None and dv > (
        old.deleted_version if old.deleted_version is not None else -1
    )
    if not (newer_data or newer_delete):
        return
    data_version = max(v for v in (old.data_version, lv, -1) if v is not None)
    deleted_version = max(v for v in (old.deleted_version, dv, -2) if v is not None)
    deleted = deleted_version >= data_version
    rows[image.key] = replace(
        old,
        values=values if newer_data else old.values,
        data_version=None if data_version < 0 else data_version,
        deleted_version=None if deleted_version < 0 else deleted_version,
        is_deleted=deleted,
        deleted_at=(staged["deleted_at"] if newer_delete else old.deleted_at) if deleted else None,
        entity_version=max(old.entity_version, staged["entity_version"]),
        last_event_id=staged["last_event_id"]
        if staged["entity_version"] > old.entity_version
        else old.last_event_id,
    )


def run_plans(shape: Shape, batches: list[list[dict[str, object]]]) -> dict[str, Row]:
    st_ = statements(shape)
    rows: dict[str, Row] = {}
    for batch in batches:
        for wave in plan_batch(batch):
            for image in wave.images.values():
                merge(st_, shape, rows, image)
            for key in wave.blind:
                row = rows.get(key)
                if row is not None and not row.is_deleted:
                    rows[key] = replace(
                        row, is_deleted=True, deleted_at=NOW, deleted_version=row.entity_version
                    )
    return rows


@given(streams(tombstones=False))
def test_reference_agrees_with_applying_in_version_order(events: list[dict[str, object]]) -> None:
    assert essentials(reference(events)) == in_version_order(events)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.entity)
@given(data=st.data())
def test_any_batch_split_reaches_the_reference_rows(shape: Shape, data: st.DataObject) -> None:
    events = data.draw(streams(shape=shape))
    batches = data.draw(splits(events))
    assert run_plans(shape, batches) == reference(events, shape)


def test_live_and_newer_delete_of_one_key_make_one_image() -> None:
    (wave,) = plan_batch([event("a", 1, True), event("a", 3, False), event("a", 2, True)])
    image = wave.images["a"]
    assert (image.live_version, image.dead_version, image.deleted) == (2, 3, True)
    row = statements(OPPORTUNITY).row_dict(image, NOW)
    # Created and deleted within one batch: the row keeps its last data, marked deleted.
    assert row["name"] == "a@2" and row["is_deleted"] and row["entity_version"] == 3
    assert row["last_event_id"] == "a-3-dead"


def test_a_tombstone_followed_by_a_reinsert_cuts_a_new_wave() -> None:
    waves = plan_batch([event("a", 1, True), tombstone("a"), event("a", 5, True)])
    assert [sorted(w.images) for w in waves] == [["a"], ["a"]]
    assert [w.blind for w in waves] == [["a"], []]


def test_live_row_carries_data() -> None:
    (wave,) = plan_batch([event("a", 4, True)])
    row = statements(OPPORTUNITY).row_dict(wave.images["a"], datetime.now(UTC))
    assert row["is_deleted"] is False and row["deleted_at"] is None
    assert row["opportunity_id"] == "a" and row["data_version"] == 4
    assert row["deleted_version"] is None


def test_a_delete_seen_first_leaves_every_data_column_empty() -> None:
    (wave,) = plan_batch([event("a", 4, False)])
    st_ = statements(OPPORTUNITY)
    row = st_.row_dict(wave.images["a"], NOW)
    assert all(row[c] is None for c in st_.spec.data_columns)
    assert row["is_deleted"] and row["deleted_version"] == 4 and row["data_version"] is None


def test_nested_values_become_json_and_missing_fields_take_their_default() -> None:
    st_ = statements(OPPORTUNITY)
    ev = event("a", 4, True)
    milestone = {"name": "M1", "due_date": None, "amount": None, "percent": None}
    ev["data"] = {**ev["data"], "billing_milestones": [milestone]}
    del ev["data"]["service_lines"]  # as from a contract version without the field
    (wave,) = plan_batch([ev])
    row = st_.row_dict(wave.images["a"], NOW)
    assert row["billing_milestones"] == (
        '[{"name":"M1","due_date":null,"amount":null,"percent":null}]'
    )
    assert row["service_lines"] == []  # its Avro default


def test_unreachable_target_says_what_to_check() -> None:
    sink = PostgresSink("postgresql+psycopg://nobody:secret@127.0.0.1:1/none", "opportunity")
    with pytest.raises(SinkError, match="PSSYNC_TARGET_URL") as err:
        asyncio.run(sink.ensure_schema())
    assert "secret" not in str(err.value)
