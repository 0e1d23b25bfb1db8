"""Several stages reading one topic in one consumer group.

The batch path (streams/agents/batching.py) hands each topic's records to one runner, which
acknowledges them when its stage is done. When a second stage needs a topic another stage
already reads (the deal stage and the sink both read canonical.opportunity), both run under
the first one's runner: each batch goes to every stage, each seeing the records of its own
topics, and the records are acknowledged once all of them are done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import faust
from faust.types import Message, TopicT

from streams.agents.batching import BatchStage, StageRunner, batch_stage
from streams.settings import Settings


class Fanout:
    """A batch stage that runs several stages, each on the records of its topics."""

    def __init__(self) -> None:
        self.stages: list[tuple[BatchStage, frozenset[str]]] = []

    def add(self, stage: BatchStage, topics: set[str]) -> None:
        self.stages.append((stage, frozenset(topics)))

    async def prepare(self) -> None:
        await asyncio.gather(*(stage.prepare() for stage, _ in self.stages))

    async def process(self, messages: Sequence[Message]) -> None:
        work = []
        for stage, topics in self.stages:
            mine = [m for m in messages if m.topic in topics]
            if mine:
                work.append(stage.process(mine))
        await asyncio.gather(*work)


class _Idle:
    """What a runner whose topics moved to another runner runs: nothing."""

    async def prepare(self) -> None:
        return None

    async def process(self, messages: Sequence[Message]) -> None:
        return None


def attach(
    app: faust.App,
    runners: dict[str, StageRunner],
    topic: TopicT,
    name: str,
    stage: BatchStage,
    settings: Settings,
) -> StageRunner:
    """Run `stage` on `topic`'s topics, sharing a runner with stages already reading any."""
    names = set(topic.topics)
    shared = []
    for n in sorted(names):
        runner = runners.get(n)
        if runner is not None and runner not in shared:
            shared.append(runner)
    if not shared:
        return batch_stage(app, runners, topic, name, stage, settings)
    host = shared[0]
    fan = host.stage if isinstance(host.stage, Fanout) else None
    if fan is None:
        fan = Fanout()
        fan.add(host.stage, {t for t, r in runners.items() if r is host})
        host.stage = fan
    for other in shared[1:]:
        # Its topics move to the host; it stays a (silent) dependency of the app.
        fan.add(other.stage, {t for t, r in runners.items() if r is other})
        for t, r in list(runners.items()):
            if r is other:
                runners[t] = host
        other.stage = _Idle()
    fan.add(stage, names)
    for n in names:
        runners[n] = host
    host.name = f"{host.name}+{name}"
    app.topics.add(topic)
    return host
