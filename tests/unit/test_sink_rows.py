from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connectors.sinks.postgres import latest_per_key, to_row


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


def test_latest_per_key_keeps_newest() -> None:
    events = [ev("a", 1, {}), ev("b", 5, {}), ev("a", 3), ev("a", 2, {})]
    latest = {e["key"]: e["envelope"]["entity_version"] for e in latest_per_key(events, "k")}
    assert latest == {"a": 3, "b": 5}


def test_delete_row_is_soft() -> None:
    now = datetime.now(UTC)
    row = to_row(ev("a", 3), now)
    assert row["is_deleted"] is True and row["deleted_at"] == now
    assert row["entity_version"] == 3 and row["source_position"] == "p3"


def test_live_row_carries_data() -> None:
    row = to_row(ev("a", 4, {"name": "n", "stage": "proposal"}), datetime.now(UTC))
    assert row["is_deleted"] is False and row["name"] == "n" and row["stage"] == "proposal"
    assert row["opportunity_id"] == "a" and row["last_event_id"] == "e4"
