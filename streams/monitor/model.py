"""What a monitor reports: findings, each one business object that needs a look."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Finding:
    monitor: str
    key: str  # the business object: a saga key, a time entry, an invoice, a project code
    summary: str  # one line a person can act on
    since: datetime | None = None  # when the clock of the SLO started (or the event happened)
    late: bool = True  # past its SLO; monitors of events (baseline changes) are always late
    ids: dict[str, str] = field(default_factory=dict)  # the object's ids in every system

    def age(self, now: datetime) -> float | None:
        return None if self.since is None else max(0.0, (now - self.since).total_seconds())

    def plain(self, now: datetime) -> dict[str, Any]:
        age = self.age(now)
        return {
            "monitor": self.monitor,
            "key": self.key,
            "summary": self.summary,
            "since": self.since.isoformat(timespec="seconds") if self.since else None,
            "age_seconds": None if age is None else round(age, 1),
            "late": self.late,
            "ids": self.ids,
        }
