"""The partitions a stage's timer owns: read once a tick, only of its topic, and not while the
app is rebalancing or restoring its tables."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from faust.types import TP

from streams.agents.owned import Owned, every


class App:
    """Stands in for the Faust app: the timer it registers, its state, its assignment."""

    def __init__(self) -> None:
        self.rebalancing = False
        self.in_recovery = False
        self.timers: dict[str, Callable[[], Awaitable[None]]] = {}
        self.reads = 0
        self.tps = {TP("deals", 0), TP("deals", 2), TP("other", 1)}
        self.consumer = self

    def assignment(self) -> set[TP]:
        self.reads += 1
        return set(self.tps)

    def timer(self, interval: float, name: str) -> Callable[[Any], Any]:
        def register(fun: Callable[[], Awaitable[None]]) -> Any:
            self.timers[name] = fun
            return fun

        return register


def test_tick_gets_the_owned_partitions_of_its_topic_and_owns_answers_from_them() -> None:
    app, owned = App(), Owned()
    seen: list[frozenset[int]] = []
    checks: list[bool] = []

    async def tick(partitions: frozenset[int]) -> None:
        seen.append(partitions)
        checks.extend(owned(p) for p in range(4))

    assert not owned(0)  # nothing owned before the first tick
    every(app, "judge", 1.0, lambda: "deals", owned, tick)  # type: ignore[arg-type]
    asyncio.run(app.timers["judge"]())
    assert seen == [frozenset({0, 2})]
    assert checks == [True, False, True, False]
    assert app.reads == 1  # once a tick, however many checks

    app.tps = {TP("deals", 1)}  # a rebalance moved the partitions
    asyncio.run(app.timers["judge"]())
    assert seen[-1] == frozenset({1}) and owned(1) and not owned(0)


def test_no_tick_while_rebalancing_or_restoring() -> None:
    app, owned = App(), Owned()
    seen: list[frozenset[int]] = []

    async def tick(partitions: frozenset[int]) -> None:
        seen.append(partitions)

    every(app, "judge", 1.0, lambda: "deals", owned, tick)  # type: ignore[arg-type]
    for rebalancing, recovering in [(True, False), (False, True)]:
        app.rebalancing, app.in_recovery = rebalancing, recovering
        asyncio.run(app.timers["judge"]())
    assert seen == [] and app.reads == 0
