"""A reference model of a keyed target and random event streams for property tests.

The model applies one event at a time, as simply as possible; the sink must reach the
same rows whatever batches it is given. It follows three data fields of one entity (a
`Shape`); every event also carries the rest of a contract-valid record, so the sink's
table for that entity receives complete rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import pairwise
from typing import Any

from hypothesis import strategies as st

from connectors.sinks.tablespec import compile_spec, json_value
from schemas import contracts
from schemas.samples import Sampler

Event = dict[str, Any]
KEYS = ["k1", "k2", "k3"]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Shape:
    """An entity as the model sees it: three data fields and their values per version."""

    entity: str
    fields: tuple[str, str, str]
    values: Callable[[str, int], tuple[Any, Any, Any]]

    @property
    def key(self) -> str:
        return compile_spec(self.entity, contracts.schema(self.entity), self.reference).key

    @property
    def reference(self) -> bool:
        return contracts.is_reference(self.entity)

    def data(self, key: str, version: int) -> dict[str, Any]:
        return {
            **base_data(self.entity),
            self.key: key,
            **dict(zip(self.fields, self.values(key, version), strict=True)),
        }


@cache
def base_data(entity: str) -> dict[str, Any]:
    """A contract-valid data record of `entity` (required fields filled), always the same."""
    sampler = Sampler(contracts.schema(entity), seed=11)
    while (data := sampler.record()["data"]) is None:
        pass
    return dict(data)


OPPORTUNITY = Shape(
    "opportunity",
    ("name", "stage", "probability"),
    lambda k, v: (f"{k}@{v}", "proposal" if v % 2 else "closed_won", v % 101),
)
# Another entity (timestamps, nullable fields) and a reference set (key `code`).
CUSTOMER = Shape(
    "customer",
    ("name", "status", "last_modified_at"),
    lambda k, v: (f"{k}@{v}", "active" if v % 2 else "blocked", EPOCH + timedelta(hours=v)),
)
CURRENCY = Shape(
    "currency",
    ("name", "minor_units", "is_active"),
    lambda k, v: (f"{k}@{v}", v % 4, v % 3 != 0),
)
SHAPES = [OPPORTUNITY, CUSTOMER, CURRENCY]


def event(key: str, version: int, live: bool, shape: Shape = OPPORTUNITY) -> Event:
    """A canonical event; its payload is derived from (key, version)."""
    return {
        "key": key,
        "data": shape.data(key, version) if live else None,
        "envelope": {
            "entity_version": version,
            "event_id": f"{key}-{version}-{'live' if live else 'dead'}",
            "correlation_id": f"corr-{key}",
            "source": {
                "position": f"p{version}",
                "committed_at": EPOCH + timedelta(seconds=version),
            },
        },
    }


def tombstone(key: str) -> Event:
    """A delete of unknown version (a compacted topic's lone tombstone)."""
    return {"key": key, "data": None, "envelope": {"entity_version": -1}}


@st.composite
def streams(draw: st.DrawFn, tombstones: bool = True, shape: Shape = OPPORTUNITY) -> list[Event]:
    """Changes over a few keys: each (key, version) is one live or one delete, delivered
    out of order and with duplicates, as replays and redeliveries do."""
    changes = draw(
        st.lists(
            st.tuples(st.sampled_from(KEYS), st.integers(0, 40), st.booleans()),
            max_size=30,
            unique_by=lambda c: (c[0], c[1]),
        )
    )
    events = [event(k, v, live, shape) for k, v, live in changes]
    if events:
        dupes = draw(st.lists(st.sampled_from(events), max_size=8))
        events += dupes
    if tombstones:
        events += [tombstone(k) for k in draw(st.lists(st.sampled_from(KEYS), max_size=4))]
    return draw(st.permutations(events))


@st.composite
def splits(draw: st.DrawFn, events: list[Event]) -> list[list[Event]]:
    """The stream cut at random batch boundaries."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(events) - 1)), max_size=6)))
    bounds = [0, *[c for c in cuts if c < len(events)], len(events)]
    return [events[a:b] for a, b in pairwise(bounds) if b > a]


@dataclass(frozen=True)
class Row:
    """What the target shows for one key: the shape's three fields, then bookkeeping."""

    values: tuple[Any, ...]
    is_deleted: bool
    deleted_at: datetime | None
    entity_version: int
    data_version: int | None
    deleted_version: int | None
    last_event_id: str

    @property
    def name(self) -> Any:
        return self.values[0]


NO_DATA = (None, None, None)


def _deleted(data_version: int | None, deleted_version: int | None) -> bool:
    return deleted_version is not None and (data_version is None or deleted_version >= data_version)


def apply_one(
    rows: dict[str, Row], ev: Event, now: datetime = NOW, shape: Shape = OPPORTUNITY
) -> None:
    """Apply one event: a live image replaces older data, a delete marks the row deleted
    while no newer live image exists; a tombstone of unknown version deletes what is there."""
    key, data, version = ev["key"], ev["data"], ev["envelope"]["entity_version"]
    row = rows.get(key)
    if version < 0:
        if row is not None and not row.is_deleted:
            rows[key] = replace(
                row, is_deleted=True, deleted_at=now, deleted_version=row.entity_version
            )
        return
    if row is None:
        row = Row(NO_DATA, False, None, -1, None, None, "")
    dv, xv = row.data_version, row.deleted_version
    values = row.values
    if data is not None and (dv is None or version > dv):
        values = tuple(data[f] for f in shape.fields)
        dv = version
    deleted_at = row.deleted_at
    if data is None and (xv is None or version > xv):
        xv = version
        deleted_at = ev["envelope"]["source"]["committed_at"]
    if (dv, xv) == (row.data_version, row.deleted_version):
        return  # stale or duplicate
    newest = version > row.entity_version
    is_deleted = _deleted(dv, xv)
    rows[key] = replace(
        row,
        values=values,
        data_version=dv,
        deleted_version=xv,
        is_deleted=is_deleted,
        deleted_at=deleted_at if is_deleted else None,
        entity_version=max(version, row.entity_version),
        last_event_id=ev["envelope"]["event_id"] if newest else row.last_event_id,
    )


def reference(events: list[Event], shape: Shape = OPPORTUNITY) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for ev in events:
        apply_one(rows, ev, shape=shape)
    return rows


def in_version_order(events: list[Event], shape: Shape = OPPORTUNITY) -> dict[str, tuple[Any, ...]]:
    """The classic way: versioned events sorted by version, each applied if newer than the
    row; a delete keeps the row's data. The reference must agree with it."""
    rows: dict[str, dict[str, Any]] = {}
    for ev in sorted(events, key=lambda e: e["envelope"]["entity_version"]):
        key, data, version = ev["key"], ev["data"], ev["envelope"]["entity_version"]
        row = rows.get(key)
        if row is not None and version <= row["entity_version"]:
            continue
        row = row or {"values": NO_DATA}
        if data is not None:
            row.update(values=tuple(data[f] for f in shape.fields), is_deleted=False)
        else:
            row["is_deleted"] = True
        row["entity_version"] = version
        rows[key] = row
    return {k: (r["values"], r["is_deleted"], r["entity_version"]) for k, r in rows.items()}


def essentials(rows: dict[str, Row]) -> dict[str, tuple[Any, ...]]:
    return {k: (r.values, r.is_deleted, r.entity_version) for k, r in rows.items()}


def stored(sql_type: str, value: Any) -> Any:
    """A data value as the target gives it back: JSON columns hold JSON (decimals, dates and
    ids as strings), the others the value itself."""
    if sql_type == "jsonb" and value is not None:
        return json.loads(json_value(value))
    return value
