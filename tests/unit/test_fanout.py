"""Several stages on one topic: each sees its own topics' records, all run per batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.agents.batching import StageRunner, batch_stage, bytes_topic
from streams.agents.fanout import Fanout, attach
from streams.agents.shared_decode import SharedDecoder
from streams.errors import ConfigError, SerdeError
from streams.settings import Settings


@dataclass
class Msg:
    topic: str
    offset: int


class Recorder:
    def __init__(self) -> None:
        self.prepared = False
        self.seen: list[list[tuple[str, int]]] = []

    async def prepare(self) -> None:
        self.prepared = True

    async def process(self, messages: Sequence[Any]) -> None:
        self.seen.append([(m.topic, m.offset) for m in messages])


def test_each_stage_gets_the_records_of_its_topics_in_order() -> None:
    sink, deal = Recorder(), Recorder()
    fan = Fanout()
    fan.add(sink, {"canonical.opportunity"})
    fan.add(deal, {"canonical.opportunity", "saga.results"})
    batch = [
        Msg("canonical.opportunity", 1),
        Msg("saga.results", 7),
        Msg("canonical.opportunity", 2),
    ]
    asyncio.run(fan.prepare())
    asyncio.run(fan.process(batch))  # type: ignore[arg-type]
    assert sink.prepared and deal.prepared
    assert sink.seen == [[("canonical.opportunity", 1), ("canonical.opportunity", 2)]]
    assert deal.seen == [
        [("canonical.opportunity", 1), ("saga.results", 7), ("canonical.opportunity", 2)]
    ]
    asyncio.run(fan.process([Msg("saga.results", 8)]))  # type: ignore[list-item]
    assert len(sink.seen) == 1  # nothing for it: not called


def test_attach_shares_the_runner_and_batch_stage_refuses_a_taken_topic() -> None:
    app = faust.App("fanout-test", autodiscover=False)
    runners: dict[str, Any] = {}
    sink, deal = Recorder(), Recorder()
    first = batch_stage(
        app, runners, bytes_topic(app, "canonical.opportunity"), "sink", sink, Settings()
    )
    shared = attach(
        app,
        runners,
        bytes_topic(app, "canonical.opportunity", "saga.results"),
        "deal",
        deal,
        Settings(),
    )
    assert shared is first and runners["saga.results"] is first
    assert isinstance(first.stage, Fanout)
    with pytest.raises(ConfigError, match=r"fanout\.attach"):
        batch_stage(app, runners, bytes_topic(app, "saga.results"), "other", Recorder(), Settings())


@dataclass
class Record:
    topic: str
    offset: int
    value: bytes | None


class CountingDecoder:
    def __init__(self) -> None:
        self.calls = 0

    def decode(self, data: bytes) -> dict[str, Any]:
        self.calls += 1
        return {"v": data.decode()}


class Reader:
    def __init__(self, shared: SharedDecoder) -> None:
        self.shared = shared
        self.records: list[dict[str, Any]] = []

    async def prepare(self) -> None:
        return None

    async def process(self, messages: Sequence[Any]) -> None:
        self.records += [self.shared.decode(m) for m in messages if m.value is not None]
        await asyncio.sleep(0)  # the other stage runs in between


def test_stages_of_one_runner_decode_each_record_once_per_batch() -> None:
    counting = CountingDecoder()
    shared = SharedDecoder(cast(Any, counting))
    sink, deal = Reader(shared), Reader(shared)
    fan = Fanout()
    fan.add(sink, {"canonical.opportunity"})
    fan.add(deal, {"canonical.opportunity"})
    batch = [Record("canonical.opportunity", i, f"r{i}".encode()) for i in range(3)]
    batch.append(Record("canonical.opportunity", 3, None))
    asyncio.run(fan.process(cast(Any, batch)))
    assert counting.calls == 3
    assert sink.records == deal.records == [{"v": "r0"}, {"v": "r1"}, {"v": "r2"}]
    assert sink.records[0] is deal.records[0]  # shared, read-only
    shared.release(cast(Any, batch))
    asyncio.run(fan.process(cast(Any, batch[:1])))
    assert counting.calls == 4  # a released batch is decoded again
    with pytest.raises(SerdeError, match="tombstone"):
        shared.decode(cast(Any, batch[3]))


def test_release_forgets_its_batch_and_keeps_what_was_decoded_ahead() -> None:
    counting = CountingDecoder()
    shared = SharedDecoder(cast(Any, counting))
    now = [Record("canonical.opportunity", i, f"r{i}".encode()) for i in range(3)]
    later = [Record("canonical.opportunity", i, f"r{i}".encode()) for i in range(3, 6)]
    later.append(Record("canonical.opportunity", 6, None))
    for m in now:
        shared.decode(cast(Any, m))
    asyncio.run(shared.ahead(cast(Any, later)))
    assert counting.calls == 6  # the tombstone has nothing to decode
    shared.release(cast(Any, now))
    assert [shared.decode(cast(Any, m)) for m in later[:3]] == [
        {"v": "r3"},
        {"v": "r4"},
        {"v": "r5"},
    ]
    assert counting.calls == 6
    shared.decode(cast(Any, now[0]))
    assert counting.calls == 7  # released: decoded again


class FailingDecoder(CountingDecoder):
    def decode(self, data: bytes) -> dict[str, Any]:
        if data == b"poison":
            raise SerdeError("not Avro")
        return super().decode(data)


def test_a_record_that_fails_ahead_is_left_to_its_stage() -> None:
    shared = SharedDecoder(cast(Any, FailingDecoder()))
    batch = [
        Record("canonical.opportunity", 0, b"poison"),
        Record("canonical.opportunity", 1, b"ok"),
    ]
    asyncio.run(shared.ahead(cast(Any, batch)))
    with pytest.raises(SerdeError, match="not Avro"):
        shared.decode(cast(Any, batch[0]))
    assert shared.decode(cast(Any, batch[1])) == {"v": "ok"}


class GatedReader(Reader):
    """Reads its batches, then waits on its target: the first batch until the gate opens."""

    def __init__(self, shared: SharedDecoder, counting: CountingDecoder) -> None:
        super().__init__(shared)
        self.counting = counting
        self.gate = asyncio.Event()
        self.batches: list[list[int]] = []
        self.decoded_before: list[int] = []  # records decoded when each batch began

    async def process(self, messages: Sequence[Any]) -> None:
        self.batches.append([m.offset for m in messages])
        self.decoded_before.append(self.counting.calls)
        self.records += [self.shared.decode(m) for m in messages if m.value is not None]
        if len(self.batches) == 1:
            await self.gate.wait()
        for _ in range(3):
            await asyncio.sleep(0)


class Acks:
    def __init__(self) -> None:
        self.done: list[list[int]] = []

    def processed(self, messages: Sequence[Any], spans: Sequence[Any]) -> None:
        self.done.append([m.offset for m in messages])


def gated_runner(
    config: Settings,
) -> tuple[StageRunner, GatedReader, CountingDecoder, SharedDecoder, Acks]:
    """A sink runner on canonical.opportunity whose first batch waits at its reader's gate,
    decoding through a shared, counting decoder attached to it."""
    counting = CountingDecoder()
    shared = SharedDecoder(cast(Any, counting))
    reader = GatedReader(shared, counting)
    app = faust.App("ahead-test", autodiscover=False)
    acks = Acks()
    app.consumer = cast(Any, acks)
    topic = bytes_topic(app, "canonical.opportunity")
    runner = batch_stage(app, {}, topic, "sink", reader, config)
    shared.attach(runner)
    return runner, reader, counting, shared, acks


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


@pytest.mark.parametrize("batch_size", [3, 1000])
def test_the_runner_decodes_queued_fetches_while_a_batch_waits_up_to_its_budget(
    batch_size: int,
) -> None:
    async def scenario() -> tuple[GatedReader, CountingDecoder, SharedDecoder, Acks]:
        runner, reader, counting, shared, acks = gated_runner(
            Settings(batch_size=batch_size, ahead_records=5)
        )
        shared.attach(runner)  # once per runner, however many stages share it
        assert runner.ahead == [shared.ahead]  # 5 records ahead: a fetch, 2/3 of the next

        def fetch(first: int) -> list[Record]:
            return [
                Record("canonical.opportunity", i, f"r{i}".encode())
                for i in range(first, first + 3)
            ]

        task = asyncio.ensure_future(runner._run(runner))
        await runner.deliver(cast(Any, fetch(0)), [])
        await _settle()
        assert reader.batches == [[0, 1, 2]] and counting.calls == 3  # waiting at the gate
        await runner.deliver(cast(Any, fetch(3)), [])
        await _settle()
        assert counting.calls == 6  # the next fetch, decoded while the batch waits
        await runner.deliver(cast(Any, fetch(6)), [])
        await _settle()
        assert counting.calls == 8  # and the one after, up to the budget of 5 records
        await runner.deliver(cast(Any, fetch(9)), [])
        await _settle()
        assert counting.calls == 8  # no more
        reader.gate.set()
        await _settle()
        await _settle()
        task.cancel()
        return reader, counting, shared, acks

    reader, counting, shared, acks = asyncio.run(scenario())
    if batch_size == 3:
        assert reader.batches == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
        # Each batch's wait decoded what followed it, up to the budget.
        assert reader.decoded_before == [0, 8, 11, 12]
    else:
        assert reader.batches == [[0, 1, 2], [3, 4, 5, 6, 7, 8, 9, 10, 11]]
        assert reader.decoded_before == [0, 8]
    assert counting.calls == 12  # every record decoded once
    assert reader.records == [{"v": f"r{i}"} for i in range(12)]
    assert acks.done == reader.batches
    assert shared._records == {}  # every batch released


@settings(max_examples=60, deadline=None)
@given(
    budget=st.integers(1, 900),
    fetches=st.lists(st.tuples(st.integers(1, 700), st.integers(0, 3)), min_size=2, max_size=5),
)
def test_records_decoded_ahead_fill_the_budget_whenever_their_fetches_arrive(
    budget: int, fetches: list[tuple[int, int]]
) -> None:
    """Fetches delivered at any point of a pass ahead (decoding yields every 256 records)
    are decoded ahead too, up to the budget; each record is decoded once, batches in order."""

    async def scenario() -> tuple[GatedReader, CountingDecoder, SharedDecoder, Acks, int]:
        runner, reader, counting, shared, acks = gated_runner(
            Settings(batch_size=1, ahead_records=budget)  # a batch per fetch
        )
        task = asyncio.ensure_future(runner._run(runner))
        first = 0
        for size, steps in fetches:
            batch = [
                Record("canonical.opportunity", i, f"r{i}".encode())
                for i in range(first, first + size)
            ]
            await runner.deliver(cast(Any, batch), [])
            first += size
            for _ in range(steps):
                await asyncio.sleep(0)
        for _ in range(40):
            await asyncio.sleep(0)
        ahead = counting.calls - fetches[0][0]  # the first batch waits at its gate
        reader.gate.set()
        for _ in range(1000):
            if len(acks.done) == len(fetches):
                break
            await asyncio.sleep(0)
        task.cancel()
        return reader, counting, shared, acks, ahead

    reader, counting, shared, acks, ahead = asyncio.run(scenario())
    total = sum(size for size, _ in fetches)
    assert ahead == min(budget, total - fetches[0][0])
    assert counting.calls == total
    assert reader.records == [{"v": f"r{i}"} for i in range(total)]
    assert acks.done == reader.batches
    assert shared._records == {}
