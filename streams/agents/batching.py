"""The one way pssync runs a stage as a Faust agent: raw bytes in, whole batches out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import faust
from faust.types import EventT, TopicT
from mode import CrashingSupervisor

from streams.settings import Settings


class BatchStage(Protocol):
    async def prepare(self) -> None: ...

    async def process(self, events: Sequence[EventT[Any]]) -> None: ...


def bytes_topic(app: faust.App, *names: str) -> TopicT:
    # Stages decode themselves (per batch, with caches); tombstones must reach them too.
    return app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )


def batch_agent(
    app: faust.App, topic: TopicT, name: str, stage: BatchStage, settings: Settings
) -> None:
    # A crash stops the worker instead of restarting the agent past unacknowledged events.
    @app.agent(topic, name=name, supervisor_strategy=CrashingSupervisor)
    async def run(stream: faust.StreamT[Any]) -> AsyncIterator[None]:
        await stage.prepare()
        async for events in stream.take_events(  # type: ignore[attr-defined]
            settings.batch_size, within=settings.batch_within
        ):
            await stage.process(events)
            yield None
