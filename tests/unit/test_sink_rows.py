from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.sinks.postgres import PostgresSink, plan_batch, to_row
from streams.errors import SinkError


def ev(key: str, version: int, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "key": key,
        "data": data,
        "envelope": {
            "entity_version": version,
            "event_id": f"e{version}",
            "correlation_id": "c",
            "source": {"position": f"p{version}"},
        },
    }


def versions(events: list[dict[str, Any]]) -> dict[str, int]:
    return {e["key"]: e["envelope"]["entity_version"] for e in events}


def test_plan_keeps_newest_live_and_newer_delete() -> None:
    events = [ev("a", 1, {}), ev("b", 5, {}), ev("a", 3), ev("a", 2, {}), ev("b", 4)]
    live, deletes, blind = plan_batch(events)
    assert versions(live) == {"a": 2, "b": 5}
    assert versions(deletes) == {"a": 3}  # b's delete is older than its live image
    assert blind == []


def test_plan_routes_unknown_version_tombstones_to_blind_delete() -> None:
    live, deletes, blind = plan_batch([ev("a", -1), ev("b", 2, {})])
    assert blind == ["a"] and deletes == [] and versions(live) == {"b": 2}


def test_delete_row_is_soft() -> None:
    now = datetime.now(UTC)
    row = to_row(ev("a", 3), now)
    assert row["is_deleted"] is True and row["deleted_at"] == now
    assert row["entity_version"] == 3 and row["source_position"] == "p3"


def test_live_row_carries_data() -> None:
    row = to_row(ev("a", 4, {"name": "n", "stage": "proposal"}), datetime.now(UTC))
    assert row["is_deleted"] is False and row["name"] == "n" and row["stage"] == "proposal"
    assert row["opportunity_id"] == "a" and row["last_event_id"] == "e4"


def test_unreachable_target_says_what_to_check() -> None:
    sink = PostgresSink("postgresql+psycopg://nobody:secret@127.0.0.1:1/none")
    with pytest.raises(SinkError, match="PSSYNC_TARGET_URL") as err:
        asyncio.run(sink.ensure_schema())
    assert "secret" not in str(err.value)
