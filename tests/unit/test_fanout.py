"""Several stages on one topic: each sees its own topics' records, all run per batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
import pytest

from streams.agents.batching import batch_stage, bytes_topic
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
    asyncio.run(fan.process([Msg("saga.results", 8)]))  # type: ignore[arg-type]
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
    shared.release()
    asyncio.run(fan.process(cast(Any, batch[:1])))
    assert counting.calls == 4  # a released batch is decoded again
    with pytest.raises(SerdeError, match="tombstone"):
        shared.decode(cast(Any, batch[3]))
