"""Which offsets of a partition are safe to commit: processed, without a hole, since sought.

A commit says "everything before this offset is done". Faust derives it from acknowledged
offsets and treats a jump between two fetched records as a hole in the log (compaction) that
may be committed over. But a jump can also be records that were fetched and then dropped
before anyone processed them (Faust drops the rest of a fetch when the group generation
changes mid-fetch); committing over those loses them for good. Here a partition's commit
position only moves over a span of the log that a stage processed and that starts at or
before the current position. Every span is a contiguous slice of the log: what one fetch
returned, starting where the fetch began (a seek's target, else its first record), so a
compacted gap inside a span or right after a seek is covered without guessing.

Pure bookkeeping, no Kafka: the batch consumer feeds it seeks, fetches, deliveries and
processed spans; the property tests drive it against a simulated log.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)

REFETCH = -1  # `admit`: records before this fetch were lost; seek back to `delivered` first


class Progress(Generic[P]):
    def __init__(self) -> None:
        # Processed without a hole up to here: the commit candidate.
        self.done: dict[P, int] = {}
        # Delivered to a stage without a hole up to here: where the next fetch must begin.
        self.delivered: dict[P, int] = {}
        # Sought to here since the last fetch began: the next fetch starts exactly there.
        self._sought: dict[P, int] = {}

    def anchor(self, tp: P, committed: int | None) -> None:
        """The partition was sought to its committed offset (None/0: nothing committed yet)."""
        known = committed is not None and committed > 0
        at = committed if committed is not None and known else 0
        self.done[tp] = at
        self.delivered[tp] = at
        if known:
            self._sought[tp] = at
        else:
            # Where the reset policy starts is unknown: a first fetch beyond 0 is sought to 0
            # (Kafka then resets it), which makes its start known.
            self._sought.pop(tp, None)

    def seek(self, tp: P, offset: int) -> None:
        self.delivered[tp] = offset
        self._sought[tp] = offset

    def take_sought(self) -> dict[P, int]:
        """Seeks made so far; call before each fetch, whose records start there."""
        sought, self._sought = self._sought, {}
        return sought

    def admit(self, tp: P, first: int, sought: int | None) -> int:
        """Where a fetched chunk starting at record `first` becomes new, or REFETCH.

        Records below the returned offset were delivered already and must be skipped. Before
        the partition is anchored, chunks are delivered but never counted for commits.
        """
        expected = self.delivered.get(tp)
        start = sought if sought is not None else first
        if expected is None:
            return start
        if start > expected:
            return REFETCH
        return expected

    def lost_tail(self, tp: P, position: int | None) -> int | None:
        """Where to fetch again if the fetch position passed records never delivered.

        A lost fetch shows as a jump when the next records arrive; asked while a partition
        is idle, this finds the lost records that were the last ones of the log.
        """
        expected = self.delivered.get(tp)
        if expected is None or position is None or position <= expected:
            return None
        return expected

    def delivered_up_to(self, tp: P, end: int) -> None:
        if tp in self.delivered:
            self.delivered[tp] = max(self.delivered[tp], end)

    def processed(self, tp: P, start: int, end: int) -> None:
        """A stage finished the span [start, end) of the log."""
        at = self.done.get(tp)
        if at is not None and start <= at < end:
            self.done[tp] = end

    def committable(self, tp: P) -> int | None:
        return self.done.get(tp)

    def forget(self, tp: P) -> None:
        self.done.pop(tp, None)
        self.delivered.pop(tp, None)
        self._sought.pop(tp, None)

    def partitions(self) -> list[P]:
        return list(self.done)
