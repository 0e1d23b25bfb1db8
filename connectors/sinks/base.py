"""What every target sink offers: apply a batch, say what it wrote, classify failures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

Event = dict[str, Any]


@dataclass(frozen=True)
class Write:
    """One object a target write changed (stale and duplicate events change nothing)."""

    key: str
    op: str  # create | update | delete | undelete
    version_before: int | None
    version_after: int
    event_id: str
    correlation_id: str
    applied_at: datetime


# Called with a batch's writes before the target commits them: a write is never committed
# without its audit record (a failed commit after it leaves a record that a retry repeats
# with the same audit id).
BeforeCommit = Callable[[list[Write]], Awaitable[None]]


def write_op(before: int | None, was_deleted: bool | None, is_deleted: bool) -> str:
    if before is None:
        return "delete" if is_deleted else "create"
    if is_deleted and not was_deleted:
        return "delete"
    if was_deleted and not is_deleted:
        return "undelete"
    return "update"


class Target(Protocol):
    name: str
    entity: str

    async def apply(self, events: Sequence[Event]) -> list[Write]: ...

    def describe(self) -> str: ...

    def is_target_fault(self, exc: BaseException) -> bool: ...

    def is_data_fault(self, exc: BaseException) -> bool: ...
