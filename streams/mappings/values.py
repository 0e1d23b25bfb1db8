"""Column values as Debezium sends them, read the same way by every source mapping."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from streams.errors import BadEventError

_EPOCH = date(1970, 1, 1)


def day(value: Any, field: str) -> date | None:
    """A DATE column: Debezium sends days since the epoch (or ISO text from pollers)."""
    if value is None:
        return None
    if isinstance(value, int):
        return _EPOCH + timedelta(days=value)
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise BadEventError(f"{field}={value!r} is not a date") from None
