"""The one way pssync runs a stage: whole fetched batches, below Faust's per-message streams.

Faust delivers records one at a time: per record its fetch loop starts a task and waits on
it, then the record crosses a queue into a stream that builds an event for it. Measured on
this job that bookkeeping cost several times the work itself. Here the fetch loop hands
each stage everything one poll returned, as one list; the stage processes it as a batch and
acknowledges the records to Faust's consumer afterwards.

Faust keeps what it is good at: group membership, partition assignment, table recovery,
the commit schedule, and rebalances. The batch path takes part in them the way Faust's
streams do: records are tracked as pending when delivered, so a rebalance waits until every
delivered record is processed and acknowledged before it commits and gives partitions away;
a fetch made while the consumer's flow is stopped is fetched again. What may be committed
is the batch path's own bookkeeping (streams/agents/progress.py): only offsets a stage has
processed, without a hole. Unlike Faust's stream queues, the stage queues are never
cleared: a record is processed or fetched again, never dropped.

A stopping worker does not work through its queues: batches not started are left for the
next run (uncommitted, so fetched again), and so is the batch in progress of a stage that
applies it item by item to a slow application (`interruptible`); the others finish theirs.
A backlog of commands behind an application's rate limit would otherwise hold a stop for
minutes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Protocol, cast

import faust
from faust.transport.consumer import ensure_TP
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, Message, TopicT
from mode import Service, ServiceT
from mode.utils.futures import notify

from streams.agents.progress import REFETCH, Progress
from streams.errors import ConfigError
from streams.settings import Settings

log = logging.getLogger(__name__)

# (partition, first offset, offset after the last): the part of a partition's log a delivered
# batch covers. The first offset is where the fetch began, which a compacted log may not hold.
Span = tuple[TP, int, int]
# Records of Faust's own topics (table changelogs) handed to its callback at a time, and
# between yields to the event loop.
OWN_SLICE = 1024
YIELD_EVERY = 256


class BatchStage(Protocol):
    # A stage may declare `interruptible = True` when a batch cut short is safe to process
    # again from its start (each item is applied idempotently): a stop then cancels it.
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

    # A stage that may wait long on an application (the ERP posting queue under its rate)
    # defers: while its queue is full its partitions are paused and fetched again later,
    # instead of holding up the fetch loop, and with it every other stage of the worker.
    defer_when_full: bool = False

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
        self.queue: asyncio.Queue[tuple[list[Message], list[Span]]] = asyncio.Queue(maxsize=4)
        # Run after every batch, done or failed, with its records (e.g. forget what was
        # decoded for them).
        self.after_batch: list[Callable[[Sequence[Message]], None]] = []
        # Work a stage may do on the next fetch while the current batch waits on its target
        # or on Kafka (decoding ahead): it only prepares, the batch itself still decides.
        self.ahead: list[Callable[[Sequence[Message]], Awaitable[None]]] = []
        # How many queued records may be prepared ahead (PSSYNC_AHEAD_RECORDS).
        self.ahead_records = settings.ahead_records
        self._busy = False
        self._ahead_task: asyncio.Future[Any] | None = None
        self._queued: deque[list[Message]] = deque()  # the queue's records, in its order
        self._task: asyncio.Task[Any] | None = None  # the one running _run
        self._in_batch: list[Message] | None = None  # the batch the stage is on
        self._stopping = False
        self._interrupted = False
        super().__init__()

    def stop_taking(self) -> list[Message]:
        """The worker is stopping: start no other batch, and cancel the one in progress if the
        stage is interruptible. Returns the records left unprocessed (not acknowledged, not
        committed: the next run fetches them again)."""
        self._stopping = True
        self._stop_ahead()
        left: list[Message] = []
        while not self.queue.empty():
            left += self.queue.get_nowait()[0]
        self._queued.clear()
        batch, task = self._in_batch, self._task
        if batch is not None and task is not None and getattr(self.stage, "interruptible", False):
            self._interrupted = True
            task.cancel()
            left += batch
        return left

    async def deliver(self, messages: list[Message], spans: list[Span]) -> None:
        await self.queue.put((messages, spans))
        self._queued.append(messages)
        self._start_ahead()

    def _take(self) -> tuple[list[Message], list[Span]]:
        self._queued.popleft()
        return self.queue.get_nowait()

    def _start_ahead(self) -> None:
        if (
            self.ahead_records
            and self.ahead
            and self._busy
            and self._ahead_task is None
            and self._queued
        ):
            self._ahead_task = asyncio.ensure_future(self._prepare_ahead())

    async def _prepare_ahead(self) -> None:
        # The queued records in order, up to `ahead_records` of them, fetches that arrive
        # meanwhile included; the work itself skips what it prepared already (cheaply), so
        # a fetch arriving after this ended starts it over. The queue is not taken from while
        # this runs: a batch stops it first, with no await in between (_run).
        budget, i = self.ahead_records, 0
        while budget > 0 and i < len(self._queued):
            part = self._queued[i][:budget]
            for work in self.ahead:
                await work(part)
            budget -= len(part)
            i += 1
        if self._ahead_task is asyncio.current_task():
            self._ahead_task = None

    def _stop_ahead(self) -> None:
        if self._ahead_task is not None:
            self._ahead_task.cancel()
            self._ahead_task = None

    @Service.task
    async def _run(self) -> None:
        self._task = asyncio.current_task()
        try:
            await self.stage.prepare()
            while not (self.should_stop or self._stopping):
                batch, spans = await self.queue.get()
                self._queued.popleft()
                # Take whatever else is already waiting, up to the batch size: a batch closes
                # when the stream runs dry, never on a timer.
                while len(batch) < self.batch_size and not self.queue.empty():
                    more, more_spans = self._take()
                    batch = batch + more
                    spans = spans + more_spans
                # What was prepared ahead is this batch's; the rest it does itself.
                self._stop_ahead()
                self._busy = True
                self._start_ahead()
                self._in_batch = batch
                try:
                    await self.stage.process(batch)
                finally:
                    self._in_batch = None
                    self._busy = False
                    for hook in self.after_batch:
                        hook(batch)
                cast(BatchConsumer, self.app.consumer).processed(batch, spans)
        except asyncio.CancelledError:
            self._stop_ahead()
            if self._interrupted:  # by stop_taking: nothing of the batch acknowledged
                cast(asyncio.Task[Any], self._task).uncancel()
                return
            raise
        except Exception as exc:  # noqa: BLE001 - any crash must stop the worker
            self._stop_ahead()
            # Nothing of the failed batch was acknowledged: it is processed again after a
            # restart. Stop the worker rather than carry on past it.
            log.error("stage %s crashed: %r", self.name, exc)
            await self.app.crash(exc)


class _FetchThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, with the broker's wait for data (fetch.max.wait.ms) ours."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust fixes it at 1.5 s. A partition with fetched records not yet taken is left out
        # of the next fetch, and the one fetch a broker may have in flight then holds only
        # idle partitions: the broker keeps it the whole wait, and the busy partition's next
        # fetch waits behind it. A worker fallen behind live input idled half of the time.
        # aiokafka reads this when the consumer starts (it builds its fetcher then).
        consumer._fetch_max_wait_ms = cast(BatchConsumer, self.consumer).fetch_max_wait_ms
        return consumer


class BatchConsumer(AIOKafkaConsumer):
    """Faust's Kafka consumer with a fetch loop that delivers whole batches to stages.

    Offsets of stage topics are committed from this class's own bookkeeping, not from
    Faust's acknowledgement lists. Faust commits past any offsets it believes the log skips
    (compaction), and it also drops the rest of a fetch when the group generation changes in
    the middle of a `getmany`; the records it dropped then look exactly like a skip, and were
    committed over without ever being processed. Here a partition's commit position moves
    only over offsets a stage has processed, contiguously from where the partition was
    sought; a fetch that resumes beyond the last delivered offset is fetched again from there.
    """

    runners: ClassVar[dict[str, StageRunner]] = {}
    # Awaited before offsets are committed: what stages produced after acknowledging a batch
    # (dedupe changelog records) is in Kafka before the offsets that depend on it.
    before_commit: ClassVar[list[Callable[[], Awaitable[None]]]] = []

    # The broker's longest wait for data per fetch (PSSYNC_FETCH_MAX_WAIT_MS; aiokafka's
    # own default until install sets it).
    fetch_max_wait_ms: ClassVar[int] = 500

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.progress: Progress[TP] = Progress()
        # Partitions paused because their deferring stage's queue was full.
        self._deferred: dict[StageRunner, set[TP]] = {}

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _FetchThread(self, loop=self.loop, beacon=self.beacon)

    def _resume_deferred(self) -> None:
        for runner, tps in list(self._deferred.items()):
            if not runner.queue.full():
                del self._deferred[runner]
                assigned = {ensure_TP(tp) for tp in self.assignment()}
                self.resume_partitions({tp for tp in tps if tp in assigned})

    async def wait_empty(self) -> None:
        if cast(Service, self.app).should_stop:  # the worker stops (not a rebalance)
            left = 0
            for runner in {id(r): r for r in self.runners.values()}.values():
                unprocessed = runner.stop_taking()
                for message in unprocessed:
                    self._unacked_messages.discard(message)
                left += len(unprocessed)
            if left:
                log.info(
                    "stopping: %d fetched records left unprocessed and uncommitted; "
                    "the next run fetches them again",
                    left,
                )
        await super().wait_empty()

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        if cast(Service, self._thread).should_stop:
            # A crash stops the consumer's thread at once, and a call queued to a stopped
            # thread is never answered: the last commit on the way down would hang the
            # worker's exit. Nothing is lost by not committing; what was processed since
            # the last commit is processed again after the restart.
            log.warning(
                "offsets not committed: the Kafka consumer has already stopped; "
                "records since the last commit will be processed again after a restart"
            )
            return False
        for hook in self.before_commit:
            await hook()
        committed: bool = await super()._commit(offsets)
        return committed

    # -- positions: every seek of a stage partition is known to the progress ----------

    async def seek_to_committed(self) -> Mapping[TP, int]:
        offsets = await super().seek_to_committed()
        for tp, offset in offsets.items():
            tp = ensure_TP(tp)
            if tp.topic in self.runners:
                self.progress.anchor(tp, offset)
        return offsets

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        tp = ensure_TP(partition)
        if tp.topic in self.runners:
            self.progress.seek(tp, offset)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        await super().on_partitions_revoked(revoked)  # processes, acknowledges and commits
        for tp in revoked:
            self.progress.forget(tp)
        gone = {ensure_TP(tp) for tp in revoked}
        for tps in self._deferred.values():
            # Paused by a deferral: unpaused, so the partition fetches if it comes back.
            self._paused_partitions.difference_update(tps & gone)
            tps.difference_update(gone)

    # -- commits -----------------------------------------------------------------------

    def processed(self, messages: Sequence[Message], spans: Sequence[Span]) -> None:
        """A stage finished `messages`; `spans` say which log ranges they cover, in order."""
        for tp, start, end in spans:
            self.progress.processed(tp, start, end)
        unacked = self._unacked_messages
        for message in messages:
            message.acked = True
            unacked.discard(message)
        self._n_acked += len(messages)
        notify(self._waiting_for_ack)

    def _new_offset(self, tp: TP) -> int | None:
        if tp.topic in self.runners:
            return self.progress.committable(tp)
        offset: int | None = super()._new_offset(tp)
        return offset

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        yield from super()._filter_tps_with_pending_acks(topics)
        for tp in self.progress.partitions():
            if topics is None or tp in topics or tp.topic in topics:
                yield tp

    # -- the fetch loop ----------------------------------------------------------------

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        runners = self.runners
        callback = self.callback
        progress = self.progress
        while not (consumer_should_stop() or fetcher_should_stop()):
            self._resume_deferred()
            # Seeks made before this fetch: its records start there, whatever their offsets.
            sought = progress.take_sought()
            chunks: dict[TP, list[Message]] = {}
            last: dict[TP, int] = {}
            async for tp, fetched in self._fetched(timeout=1.0):
                if tp.topic in runners:
                    chunks[tp] = fetched
                    continue
                # Faust's own topics (table changelogs) go through its callback record by
                # record, with its offset and gap bookkeeping.
                own: list[Message] = []
                known = last.get(tp, read_offset.get(tp))
                for message in fetched:
                    offset = message.offset
                    if known is not None and offset < known:
                        continue
                    if known and offset - known > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, known + 1, offset)
                    known = offset
                    own.append(message)
                if own:
                    # One race against a flow stop per slice, not per record: a rebalance
                    # cuts the hand-over short; what is left is fetched again after its seek.
                    handed: list[Message] = []
                    await self.wait_first(
                        _hand_over(callback, own, handed), self.suspend_flow.wait()
                    )
                    if handed:  # read up to the last record the callback took
                        last[tp] = handed[-1].offset
            read_offset.update(last)
            batches: dict[StageRunner, tuple[list[Message], list[Span]]] = {}
            for tp, chunk in chunks.items():
                start = progress.admit(tp, chunk[0].offset, sought.get(tp))
                if start == REFETCH:
                    # Records between were fetched and lost before they reached us.
                    expected = progress.delivered[tp]
                    log.info(
                        "fetching %s again from %d (fetch resumed at %d)",
                        tp,
                        expected,
                        chunk[0].offset,
                    )
                    await self.seek(tp, expected)
                    continue
                if chunk[0].offset < start:
                    chunk = [m for m in chunk if m.offset >= start]  # delivered already
                    if not chunk:
                        continue
                end = chunk[-1].offset + 1
                messages, spans = batches.setdefault(runners[tp.topic], ([], []))
                messages += chunk
                spans.append((tp, start, end))
                for message in chunk:
                    self.track_message(message)
            undelivered: list[Span] = []
            deferred: list[Span] = []
            for runner, (messages, spans) in batches.items():
                if not undelivered and runner.defer_when_full and runner.queue.full():
                    # Fetched again once the stage has room; the others go on meanwhile.
                    deferred += spans
                    for message in messages:
                        self._unacked_messages.discard(message)
                    tps = {ensure_TP(tp) for tp, _start, _end in spans}
                    self._deferred.setdefault(runner, set()).update(tps)
                    self.pause_partitions(tps)
                    continue
                if undelivered or not await self._deliver(runner, messages, spans):
                    undelivered += spans
                    for message in messages:
                        self._unacked_messages.discard(message)
                    continue
                for tp, _start, end in spans:
                    progress.delivered_up_to(tp, end)
                    read_offset[tp] = end - 1
            for tp, start, _end in undelivered + deferred:
                # Flow stopped for a rebalance, or the stage is full: fetch these again (or
                # let the new owner).
                await self._rewind(tp, start)
            if not chunks and not last:
                await self._refetch_lost_tails()
            if not batches:
                await asyncio.sleep(0)
            elif self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()

    async def _fetched(self, timeout: float) -> AsyncIterator[tuple[TP, list[Message]]]:
        """What one poll returned, a partition at a time: Faust's `getmany` without its
        per-record bookkeeping for stage topics, whose records come as one list (the
        partition's highwater read once, not per record), and Faust's own topics in slices
        of OWN_SLICE. As in `getmany`, the rest of a poll is dropped when flow stops or the
        group generation changes in between (the progress fetches it again).
        """
        records, active = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            try:
                await self.perform_seek()  # flow stopped while polling: back to the commits
            except Exception as exc:  # noqa: BLE001 - as Faust: the next poll tries again
                log.warning("seek after a poll without flow failed: %r", exc)
            return
        app = self.app
        generation = app.consumer_generation_id
        to_message = self._to_message
        track_end = app.monitor.track_tp_end_offset
        buffered = self._buffered_partitions
        for tp, batch in records.items():
            if active is not None and tp not in active and tp not in buffered:
                continue
            if tp.topic in self.runners:
                if not self.flow_active or app.consumer_generation_id != generation:
                    return
                track_end(tp, self.highwater(tp))
                yield tp, [to_message(tp, record) for record in batch]
                continue
            # Faust's own topics, in slices: a changelog fetch holds tens of thousands of
            # small records, and their messages need not all exist at once.
            for i in range(0, len(batch), OWN_SLICE):
                if not self.flow_active or app.consumer_generation_id != generation:
                    return
                track_end(tp, self.highwater(tp))
                yield tp, [to_message(tp, record) for record in batch[i : i + OWN_SLICE]]

    async def _refetch_lost_tails(self) -> None:
        # Idle: records lost at the very end of a partition show no jump until more arrive.
        if not self.flow_active:
            return
        for tp in self.progress.partitions():
            if tp in self.assignment():
                try:
                    position = await asyncio.wait_for(self.position(tp), timeout=1.0)
                except Exception:  # noqa: BLE001 - being reset or revoked: ask next time
                    continue
                behind = self.progress.lost_tail(tp, position)
                if behind is not None:
                    log.info("fetching %s again from %d (records were lost)", tp, behind)
                    await self.seek(tp, behind)

    async def _rewind(self, tp: TP, offset: int) -> None:
        if tp in self.assignment():
            await self.seek(tp, offset)
        else:
            self._read_offset.pop(tp, None)  # revoked: its new owner starts from the commit
            self.progress.forget(tp)

    async def _deliver(
        self, runner: StageRunner, messages: list[Message], spans: list[Span]
    ) -> bool:
        put = asyncio.ensure_future(runner.deliver(messages, spans))
        stopped = asyncio.ensure_future(self.suspend_flow.wait())
        await asyncio.wait({put, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if put.done():
            put.result()
            return True
        put.cancel()
        return False


async def _hand_over(
    callback: Callable[[Message], Awaitable[None]], own: list[Message], handed: list[Message]
) -> None:
    """Faust's own records to its callback, in fetch order; `handed` gets each one the
    callback took, also when a flow stop cancels the rest. The callback rarely waits, so the
    loop yields now and then to let the tasks it feeds (table recovery) run."""
    for i, message in enumerate(own, 1):
        await callback(message)
        handed.append(message)
        if not i % YIELD_EVERY:
            await asyncio.sleep(0)


def install(
    app: faust.App,
    runners: dict[str, StageRunner],
    before_commit: list[Callable[[], Awaitable[None]]],
    fetch_max_wait_ms: int,
) -> None:
    """Make `app` fetch with the batch path; `runners` maps topic names to their stage."""
    consumer_class = type(
        "PssyncBatchConsumer",
        (BatchConsumer,),
        {
            "runners": runners,
            "before_commit": before_commit,
            "fetch_max_wait_ms": fetch_max_wait_ms,
        },
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
