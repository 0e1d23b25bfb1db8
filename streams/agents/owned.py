"""The partitions of one input topic a worker owns, read on a stage's timer.

Stages that keep work waiting in a table (deals, expenses) judge it again on a timer, and
only for the partitions this worker owns. The consumer's assignment is read once per tick,
not once per check: the stage's `owns` answers from the tick's copy, and is asked only
inside the tick, before its first await.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import faust
from faust.types import TP


class Owned:
    """`owns(partition)` as of the last tick; nothing is owned before the first."""

    def __init__(self) -> None:
        self.partitions: frozenset[int] = frozenset()

    def __call__(self, partition: int) -> bool:
        return partition in self.partitions


def every(
    app: faust.App,
    name: str,
    interval: float,
    topic: Callable[[], str],
    owned: Owned,
    tick: Callable[[frozenset[int]], Awaitable[None]],
) -> None:
    """Call `tick` with the partitions of `topic()` owned, every `interval` seconds, while the
    app is neither rebalancing nor restoring its tables (nothing to judge against yet)."""

    async def timer() -> None:
        if app.rebalancing or app.in_recovery:
            return
        tps: set[TP] = app.consumer.assignment()
        want = topic()
        owned.partitions = frozenset(tp.partition for tp in tps if tp.topic == want)
        await tick(owned.partitions)

    app.timer(interval=interval, name=name)(timer)
