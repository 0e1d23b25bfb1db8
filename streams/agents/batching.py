"""The one way pssync runs a stage: whole fetched batches, below Faust's per-message streams.

Faust delivers records one at a time: per record its fetch loop starts a task and waits on
it, then the record crosses a queue into a stream that builds an event for it. Measured on
this job that bookkeeping cost several times the work itself. Here the fetch loop hands
each stage everything one poll returned, as one list; the stage processes it as a batch and
acknowledges the records to Faust's consumer afterwards.

Faust keeps what it is good at: group membership, partition assignment, table recovery,
offset commits from acknowledged records, and rebalances. The batch path takes part in
them the way Faust's streams do: records are tracked as pending when delivered, so a
rebalance waits until every delivered record is processed and acknowledged before it
commits and gives partitions away; a fetch made while the consumer's flow is stopped is
dropped before any offset moves (Faust seeks back to the committed offsets before flow
resumes), exactly like Faust's per-record delivery. Unlike Faust's stream queues, the
stage queues are never cleared: a record is processed or fetched again, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, cast

import faust
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, Message, TopicT
from mode import Service, ServiceT

from streams.errors import ConfigError
from streams.settings import Settings

log = logging.getLogger(__name__)


class BatchStage(Protocol):
    async def prepare(self) -> None: ...

    async def process(self, messages: Sequence[Message]) -> None: ...


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


class StageRunner(Service):
    """Feeds one stage its batches, in fetch order, and acknowledges them when done."""

    def __init__(self, app: faust.App, name: str, stage: BatchStage, settings: Settings) -> None:
        self.app = app
        self.name = name
        self.stage = stage
        self.batch_size = settings.batch_size
        # A few fetches of look-ahead; beyond that the fetch loop waits (backpressure).
        # Never cleared behind the stage's back: Faust clears its stream queues whenever it
        # resumes flow, also after it has sought to the committed offsets, and a record
        # dropped then is never fetched again. Queued records are tracked, so a rebalance
        # waits until they are processed and acknowledged; at worst they are seen twice.
        self.queue: asyncio.Queue[list[Message]] = asyncio.Queue(maxsize=4)
        super().__init__()

    async def deliver(self, messages: list[Message]) -> None:
        await self.queue.put(messages)

    @Service.task
    async def _run(self) -> None:
        try:
            await self.stage.prepare()
            while not self.should_stop:
                batch = await self.queue.get()
                # Take whatever else is already waiting, up to the batch size: a batch closes
                # when the stream runs dry, never on a timer.
                while len(batch) < self.batch_size and not self.queue.empty():
                    batch = batch + self.queue.get_nowait()
                await self.stage.process(batch)
                consumer = self.app.consumer
                for message in batch:
                    consumer.ack(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any crash must stop the worker
            # Nothing of the failed batch was acknowledged: it is processed again after a
            # restart. Stop the worker rather than carry on past it.
            log.error("stage %s crashed: %r", self.name, exc)
            await self.app.crash(exc)


class BatchConsumer(AIOKafkaConsumer):
    """Faust's Kafka consumer with a fetch loop that delivers whole batches to stages."""

    runners: ClassVar[dict[str, StageRunner]] = {}
    # Awaited before offsets are committed: what stages produced after acknowledging a batch
    # (dedupe changelog records) is in Kafka before the offsets that depend on it.
    before_commit: ClassVar[list[Callable[[], Awaitable[None]]]] = []

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        for hook in self.before_commit:
            await hook()
        committed: bool = await super()._commit(offsets)
        return committed

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        runners = self.runners
        callback = self.callback
        while not (consumer_should_stop() or fetcher_should_stop()):
            batches: dict[StageRunner, list[Message]] = {}
            first: dict[TP, int] = {}
            last: dict[TP, int] = {}
            async for tp, message in self.getmany(timeout=1.0):
                offset = message.offset
                known = last.get(tp, read_offset.get(tp))
                if known is not None and offset < known:
                    continue  # already delivered (Faust's own loop drops these too)
                if known and offset - known > 1 and acks_enabled_for(message.topic):
                    # Compacted or transactional topics skip offsets; commits must too.
                    await self._add_gap(tp, known + 1, offset)
                last[tp] = offset
                runner = runners.get(message.topic)
                if runner is None:
                    # Faust's own topics (table changelogs): its per-record path, unchanged.
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                    continue
                first.setdefault(tp, offset)
                self.track_message(message)
                batches.setdefault(runner, []).append(message)
            undelivered: list[Message] = []
            for runner, messages in batches.items():
                if undelivered or not await self._deliver(runner, messages):
                    undelivered += messages
            if undelivered:
                # Flow stopped for a rebalance. Read offsets must not move past these, or the
                # next fetch would look like a gap that commits skip: fetch them again.
                for tp in {m.tp for m in undelivered}:
                    last.pop(tp, None)
                    await self._rewind(tp, first[tp])
            read_offset.update(last)
            if not batches:
                await asyncio.sleep(0)
            elif self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()

    async def _rewind(self, tp: TP, offset: int) -> None:
        if tp in self.assignment():
            await self.seek(tp, offset)
        else:
            read_offset = self._read_offset
            read_offset.pop(tp, None)  # revoked: its new owner starts from the commit

    async def _deliver(self, runner: StageRunner, messages: list[Message]) -> bool:
        put = asyncio.ensure_future(runner.deliver(messages))
        stopped = asyncio.ensure_future(self.suspend_flow.wait())
        await asyncio.wait({put, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if put.done():
            put.result()
            return True
        put.cancel()
        return False


def install(
    app: faust.App,
    runners: dict[str, StageRunner],
    before_commit: list[Callable[[], Awaitable[None]]],
) -> None:
    """Make `app` fetch with the batch path; `runners` maps topic names to their stage."""
    consumer_class = type(
        "PssyncBatchConsumer",
        (BatchConsumer,),
        {"runners": runners, "before_commit": before_commit},
    )
    transport: Any = app.transport
    transport.Consumer = consumer_class


def batch_stage(
    app: faust.App,
    runners: dict[str, StageRunner],
    topic: TopicT,
    name: str,
    stage: BatchStage,
    settings: Settings,
) -> StageRunner:
    """Run `stage` on every batch fetched from `topic`'s topics."""
    taken = sorted(t for t in topic.topics if t in runners)
    if taken:
        # One runner per topic: a second one would silently take the topic from the first.
        raise ConfigError(
            f"stage {name} reads {', '.join(taken)}, which another stage already reads; "
            "register it with streams.agents.fanout.attach to share the topic"
        )
    runner = StageRunner(app, name, stage, settings)
    for topic_name in topic.topics:
        runners[topic_name] = runner
    app.topics.add(topic)  # subscribe
    app.add_dependency(runner)  # started and stopped with the app
    return runner
