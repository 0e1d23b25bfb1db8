"""A stopping worker leaves queued batches (and an interruptible stage's batch in progress)
unprocessed and unacknowledged, instead of working through a backlog before it exits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.agents.batching import Span, StageRunner
from streams.settings import Settings

URL = "postgresql+psycopg://nobody@127.0.0.1:1/none"
TOPIC = TP("saga.commands.crm", 0)


@dataclass
class Consumer:
    acked: list[int] = field(default_factory=list)

    def processed(self, messages: list[int], spans: list[Span]) -> None:
        self.acked += messages


@dataclass
class App:
    consumer: Consumer = field(default_factory=Consumer)

    async def crash(self, exc: BaseException) -> None:
        raise AssertionError(f"the stage must not crash: {exc!r}")


class Stage:
    """Applies one item per tick; `gate` holds it mid-batch after `before_hold` items."""

    def __init__(self, interruptible: bool, before_hold: int) -> None:
        self.interruptible = interruptible
        self.applied: list[int] = []
        self.before_hold = before_hold
        self.held = asyncio.Event()
        self.gate = asyncio.Event()

    async def prepare(self) -> None:
        pass

    async def process(self, messages: list[int]) -> None:
        for item in messages:
            if len(self.applied) == self.before_hold:
                self.held.set()
                await self.gate.wait()
            self.applied.append(item)
            await asyncio.sleep(0)


async def scenario(
    batches: list[int], interruptible: bool, hold_at: int
) -> tuple[list[int], list[int], list[int], list[int]]:
    """Deliver `batches` (their sizes), stop while the stage is held mid-way; returns
    (delivered, applied, acknowledged, left unprocessed)."""
    settings_ = Settings.from_env({"PSSYNC_TARGET_URL": URL, "PSSYNC_BATCH_SIZE": "3"})
    stage = Stage(interruptible, hold_at)
    app = App()
    runner = StageRunner(cast(Any, app), "commands", cast(Any, stage), settings_)
    delivered: list[int] = []
    await runner.start()
    n = 0
    for size in batches[: runner.queue.maxsize]:  # no wait: the stage has not started yet
        batch = list(range(n, n + size))
        n += size
        delivered += batch
        await runner.deliver(cast(Any, batch), [(TOPIC, batch[0], batch[-1] + 1)])
    await asyncio.wait_for(stage.held.wait(), 5)
    left = cast(list[int], runner.stop_taking())
    stage.gate.set()  # a stage that is not interrupted finishes its batch
    for _ in range(50):
        await asyncio.sleep(0)
    await runner.stop()
    return delivered, stage.applied, app.consumer.acked, left


def test_an_interruptible_stage_stops_mid_batch_and_acknowledges_nothing_of_it() -> None:
    _, applied, acked, left = asyncio.run(scenario([3, 3, 3], True, 4))
    # Batch 0-2 done; batch 3-5 cut after item 3; 6-8 never started.
    assert acked == [0, 1, 2] and applied == [0, 1, 2, 3]
    assert sorted(left) == [3, 4, 5, 6, 7, 8]


def test_other_stages_finish_the_batch_in_progress_and_leave_the_queue() -> None:
    _, applied, acked, left = asyncio.run(scenario([3, 3, 3], False, 4))
    assert acked == applied == [0, 1, 2, 3, 4, 5]
    assert left == [6, 7, 8]


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(st.integers(1, 4), min_size=1, max_size=6),
    interruptible=st.booleans(),
    hold=st.integers(0, 20),
)
def test_every_delivered_record_is_either_acknowledged_in_order_or_left_for_the_next_run(
    batches: list[int], interruptible: bool, hold: int
) -> None:
    hold = min(hold, sum(batches[:4]) - 1)  # the queue holds 4 batches
    delivered, applied, acked, left = asyncio.run(scenario(batches, interruptible, hold))
    # Nothing lost: each record acknowledged or left; nothing doubled; order kept.
    assert sorted(acked + left) == delivered
    assert acked == delivered[: len(acked)]
    # Acknowledged means applied whole; a stop never waits past the batch in progress.
    assert set(acked) <= set(applied)
    if interruptible:
        assert len(acked) <= hold
