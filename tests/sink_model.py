"""A reference model of a keyed target and random event streams for property tests.

The model applies one event at a time, as simply as possible; the sink must reach the
same rows whatever batches it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from hypothesis import strategies as st

Event = dict[str, Any]
KEYS = ["k1", "k2", "k3"]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def event(key: str, version: int, live: bool) -> Event:
    """A canonical opportunity event; its payload is derived from (key, version)."""
    data = (
        {
            "opportunity_id": key,
            "name": f"{key}@{version}",
            "stage": "proposal" if version % 2 else "closed_won",
            "probability": version % 101,
        }
        if live
        else None
    )
    return {
        "key": key,
        "data": data,
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
def streams(draw: st.DrawFn, tombstones: bool = True) -> list[Event]:
    """Changes over a few keys: each (key, version) is one live or one delete, delivered
    out of order and with duplicates, as replays and redeliveries do."""
    changes = draw(
        st.lists(
            st.tuples(st.sampled_from(KEYS), st.integers(0, 40), st.booleans()),
            max_size=30,
            unique_by=lambda c: (c[0], c[1]),
        )
    )
    events = [event(k, v, live) for k, v, live in changes]
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
    """What the target shows for one key."""

    name: str | None
    stage: str | None
    probability: int | None
    is_deleted: bool
    deleted_at: datetime | None
    entity_version: int
    data_version: int | None
    deleted_version: int | None
    last_event_id: str


def _deleted(data_version: int | None, deleted_version: int | None) -> bool:
    return deleted_version is not None and (data_version is None or deleted_version >= data_version)


def apply_one(rows: dict[str, Row], ev: Event, now: datetime = NOW) -> None:
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
        row = Row(None, None, None, False, None, -1, None, None, "")
    dv, xv = row.data_version, row.deleted_version
    fields: dict[str, Any] = {}
    if data is not None and (dv is None or version > dv):
        fields = {k: data[k] for k in ("name", "stage", "probability")}
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
        **fields,
        data_version=dv,
        deleted_version=xv,
        is_deleted=is_deleted,
        deleted_at=deleted_at if is_deleted else None,
        entity_version=max(version, row.entity_version),
        last_event_id=ev["envelope"]["event_id"] if newest else row.last_event_id,
    )


def reference(events: list[Event]) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for ev in events:
        apply_one(rows, ev)
    return rows


def in_version_order(events: list[Event]) -> dict[str, tuple[Any, ...]]:
    """The classic way: versioned events sorted by version, each applied if newer than the
    row; a delete keeps the row's data. The reference must agree with it."""
    rows: dict[str, dict[str, Any]] = {}
    for ev in sorted(events, key=lambda e: e["envelope"]["entity_version"]):
        key, data, version = ev["key"], ev["data"], ev["envelope"]["entity_version"]
        row = rows.get(key)
        if row is not None and version <= row["entity_version"]:
            continue
        row = row or {"name": None, "stage": None, "probability": None}
        if data is not None:
            row.update({k: data[k] for k in ("name", "stage", "probability")}, is_deleted=False)
        else:
            row["is_deleted"] = True
        row["entity_version"] = version
        rows[key] = row
    return {
        k: (r["name"], r["stage"], r["probability"], r["is_deleted"], r["entity_version"])
        for k, r in rows.items()
    }


def essentials(rows: dict[str, Row]) -> dict[str, tuple[Any, ...]]:
    return {
        k: (r.name, r.stage, r.probability, r.is_deleted, r.entity_version) for k, r in rows.items()
    }
