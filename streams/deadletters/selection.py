"""Which dead letters a command applies to: stage, error class, age, explicit offsets."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from streams.deadletters.model import DeadLetter, Ref
from streams.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"(\d+)([smhdw])")


def parse_age(text: str) -> timedelta:
    """`90s`, `15m`, `1h`, `2d`, `1w`, or combinations such as `1h30m`."""
    compact = text.strip().lower()
    parts = _AGE.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ConfigError(
            f"--older-than {text!r}: write a duration such as 30m, 1h, 2d or 1h30m "
            "(units s, m, h, d, w)"
        )
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def parse_since(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: use an ISO datetime with zone, e.g. 2026-11-29T10:00:00+00:00"
        ) from None
    if when.tzinfo is None:
        raise ConfigError(f"--since {text!r}: add a time zone, e.g. {text}+00:00")
    return when


def format_age(age: timedelta) -> str:
    """Two most significant units: 45s, 12m, 3h5m, 2d4h."""
    seconds = max(0, int(age.total_seconds()))
    out: list[str] = []
    for unit in ("w", "d", "h", "m", "s"):
        n, seconds = divmod(seconds, _UNITS[unit])
        if n or (unit == "s" and not out):
            out.append(f"{n}{unit}")
        if len(out) == 2:
            break
    return "".join(out)


@dataclass(frozen=True)
class Selection:
    stages: tuple[str, ...] = ()  # empty: every stage
    error_class: str | None = None
    older_than: timedelta | None = None
    since: datetime | None = None
    refs: tuple[Ref, ...] | None = None  # None: every record of the DLQ topics

    def __post_init__(self) -> None:
        if self.older_than is not None and self.since is not None:
            raise ConfigError("use --older-than or --since, not both")

    def matches(self, letter: DeadLetter, now: datetime) -> bool:
        if self.refs is not None and letter.ref not in self.refs:
            return False
        if self.stages and letter.stage not in self.stages:
            return False
        if self.error_class and letter.error_class.lower() != self.error_class.lower():
            return False
        if self.older_than is not None and letter.failed_at > now - self.older_than:
            return False
        return self.since is None or letter.failed_at >= self.since
