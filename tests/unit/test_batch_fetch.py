"""The batch path's poll: stage topics a partition at a time, Faust's own topics in slices."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from faust.types import TP

from streams.agents import batching
from streams.agents.batching import BatchConsumer

STAGE = "canonical.opportunity"
CHANGELOG = "app-dedupe-positions-changelog"


@dataclass
class Record:
    topic: str
    partition: int
    offset: int


@dataclass
class Monitor:
    ends: list[tuple[TP, int]] = field(default_factory=list)

    def track_tp_end_offset(self, tp: TP, offset: int) -> None:
        self.ends.append((tp, offset))


@dataclass
class App:
    monitor: Monitor
    consumer_generation_id: int = 1


class Poll:
    """Just what `_fetched` reads of a consumer, with one poll's records."""

    def __init__(self, records: dict[TP, list[Record]], active: set[TP] | None = None) -> None:
        self.runners = {STAGE: object()}
        self.records = records
        self.active = active
        self.app = App(Monitor())
        self.flow_active = True
        self.should_stop = False
        self._buffered_partitions: set[TP] = set()
        self.seeks = 0

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        return self.records, self.active

    async def perform_seek(self) -> None:
        self.seeks += 1

    def highwater(self, tp: TP) -> int:
        return 100

    def _to_message(self, tp: TP, record: Record) -> tuple[str, int, int, int]:
        return (tp.topic, tp.partition, record.offset, self.app.consumer_generation_id)


def fetched(poll: Poll, on_each: Any = None) -> list[tuple[TP, list[Any]]]:
    async def run() -> list[tuple[TP, list[Any]]]:
        out = []
        async for tp, messages in BatchConsumer._fetched(cast(Any, poll), 1.0):
            out.append((tp, messages))
            if on_each is not None:
                on_each(poll, tp)
        return out

    return asyncio.run(run())


def records(topic: str, partition: int, *offsets: int) -> list[Record]:
    return [Record(topic, partition, o) for o in offsets]


def test_a_stage_partition_comes_as_one_list_and_a_changelog_in_slices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batching, "OWN_SLICE", 2)
    stage0, stage1, log0 = TP(STAGE, 0), TP(STAGE, 1), TP(CHANGELOG, 0)
    poll = Poll(
        {
            stage0: records(STAGE, 0, 5, 6, 7),
            log0: records(CHANGELOG, 0, 1, 2, 3),
            stage1: records(STAGE, 1, 9),
        }
    )
    got = fetched(poll)
    assert got == [
        (stage0, [(STAGE, 0, 5, 1), (STAGE, 0, 6, 1), (STAGE, 0, 7, 1)]),
        (log0, [(CHANGELOG, 0, 1, 1), (CHANGELOG, 0, 2, 1)]),
        (log0, [(CHANGELOG, 0, 3, 1)]),
        (stage1, [(STAGE, 1, 9, 1)]),
    ]
    # The end offset is tracked once per stage partition, per slice otherwise.
    assert poll.app.monitor.ends == [(stage0, 100), (log0, 100), (log0, 100), (stage1, 100)]


def test_the_rest_of_a_poll_is_dropped_when_the_generation_changes_in_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batching, "OWN_SLICE", 1)
    log0, stage0 = TP(CHANGELOG, 0), TP(STAGE, 0)
    poll = Poll({log0: records(CHANGELOG, 0, 1, 2), stage0: records(STAGE, 0, 5, 6)})

    def rebalance(p: Poll, tp: TP) -> None:
        p.app.consumer_generation_id += 1  # while the changelog record was applied

    assert fetched(poll, rebalance) == [(log0, [(CHANGELOG, 0, 1, 1)])]


def test_a_slice_goes_to_the_callback_in_order_yielding_to_the_loop_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batching, "YIELD_EVERY", 3)
    seen: list[tuple[str, int]] = []

    async def callback(message: Any) -> None:
        seen.append(("record", message))

    async def other() -> None:
        # Runs whenever the hand-over yields: after every YIELD_EVERY records.
        while (done := len([s for s in seen if s[0] == "record"])) < 7:
            seen.append(("loop", done))
            await asyncio.sleep(0)

    async def run() -> None:
        side = asyncio.ensure_future(other())
        await asyncio.sleep(0)
        hand: Awaitable[None] = batching._hand_over(callback, cast(Any, list(range(7))), handed)
        await hand
        await side

    handed: list[Any] = []
    asyncio.run(run())
    assert [m for kind, m in seen if kind == "record"] == list(range(7)) == handed
    # The other task ran before the first record and once after each third one.
    assert [n for kind, n in seen if kind == "loop"] == [0, 3, 6]


def test_the_rest_of_a_poll_is_dropped_when_flow_stops_in_between() -> None:
    stage0, stage1 = TP(STAGE, 0), TP(STAGE, 1)
    poll = Poll({stage0: records(STAGE, 0, 5), stage1: records(STAGE, 1, 9)})

    def stop(p: Poll, tp: TP) -> None:
        p.flow_active = False

    assert fetched(poll, stop) == [(stage0, [(STAGE, 0, 5, 1)])]


def test_partitions_no_longer_active_are_skipped_unless_buffered() -> None:
    stage0, stage1, stage2 = TP(STAGE, 0), TP(STAGE, 1), TP(STAGE, 2)
    poll = Poll(
        {
            stage0: records(STAGE, 0, 1),
            stage1: records(STAGE, 1, 2),
            stage2: records(STAGE, 2, 3),
        },
        active={stage0},
    )
    poll._buffered_partitions = {stage2}
    assert [tp for tp, _ in fetched(poll)] == [stage0, stage2]


def test_a_poll_that_returns_after_flow_stopped_seeks_back_and_yields_nothing() -> None:
    poll = Poll({TP(STAGE, 0): records(STAGE, 0, 1)})
    poll.flow_active = False
    assert fetched(poll) == []
    assert poll.seeks == 1


def test_no_commit_is_queued_to_a_consumer_thread_that_has_stopped() -> None:
    # A crash stops the consumer's thread first; a call queued to it then is never answered
    # and the worker would never exit. The commit is skipped (records are processed again).
    hooks: list[str] = []

    async def hook() -> None:
        hooks.append("flushed")

    class Stopped:
        should_stop = True

    class Consumer:
        _thread = Stopped()
        before_commit = (hook,)

    tp = TP(STAGE, 0)
    done = asyncio.run(BatchConsumer._commit(cast(Any, Consumer()), {tp: 10}))
    assert done is False and hooks == []


def test_a_hand_over_cut_short_tells_which_records_the_callback_took() -> None:
    async def callback(message: Any) -> None:
        if message == 3:
            await asyncio.Event().wait()  # a full queue when the flow stops

    async def run() -> list[Any]:
        handed: list[Any] = []
        task = asyncio.ensure_future(
            batching._hand_over(callback, cast(Any, [0, 1, 2, 3, 4]), handed)
        )
        for _ in range(3):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return handed

    assert asyncio.run(run()) == [0, 1, 2]
