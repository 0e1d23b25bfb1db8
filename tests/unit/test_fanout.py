"""Several stages on one topic: each sees its own topics' records, all run per batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust
import pytest

from streams.agents.batching import batch_stage, bytes_topic
from streams.agents.fanout import Fanout, attach
from streams.errors import ConfigError
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
