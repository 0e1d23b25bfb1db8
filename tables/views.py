"""Compacted topics read whole by every worker, like a Kafka Streams GlobalKTable.

A view holds the latest value of every key of one topic: customers, reference sets. Each
worker reads all partitions itself, from the beginning, with its own consumer (no group,
nothing committed), so any worker can look any key up whatever partitions it owns. The
records are decoded through the registry and adapted to the few fields their reader needs;
a tombstone (or an event whose data is null) deletes the key.

One reader (`ViewReader`) follows every view of a worker with one consumer on its own
thread: decoding and fetching never block the event loop, and lookups are plain dictionary
reads. A view is `ready` once it has read up to the end offsets its topic had when the
reader started; it keeps following the topic afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from streams.security import kafka_config
from streams.settings import Settings

log = logging.getLogger(__name__)

V = TypeVar("V")
# Decoded record -> the value kept, or None when the record deletes its key.
Adapt = Callable[[str, dict[str, Any]], V | None]
Decode = Callable[[bytes], dict[str, Any]]
Aliases = Callable[[str, V], Iterable[str]]


class View(Generic[V]):
    """The latest value per key of one compacted topic, followed on a thread."""

    def __init__(
        self,
        topic: str,
        decode: Decode,
        adapt: Adapt[V],
        aliases: Aliases[V] | None = None,
    ) -> None:
        self.topic = topic
        self.decode = decode
        self.adapt = adapt
        self.aliases = aliases
        self.ready = threading.Event()
        # Grows on every change: readers can tell cheaply whether anything moved.
        self.version = 0
        self.errors = 0
        self._data: dict[str, V] = {}
        self._alias: dict[str, str] = {}

    # -- lookups (any thread) --------------------------------------------------------------

    def get(self, key: str) -> V | None:
        found = self._data.get(key)
        if found is None and key in self._alias:
            found = self._data.get(self._alias[key])
        return found

    def values(self) -> list[V]:
        return list(self._data.values())

    def items(self) -> list[tuple[str, V]]:
        return list(self._data.items())

    def __len__(self) -> int:
        return len(self._data)

    # -- what one record does ------------------------------------------------------------

    def apply(self, key: str, value: bytes | None) -> None:
        """Take one record into the view (the reading thread calls it; tests may too)."""
        adapted: V | None = None
        if value is not None:
            adapted = self.adapt(key, self.decode(value))
        old = self._data.get(key)
        if old is not None and self.aliases is not None:
            for alias in self.aliases(key, old):
                if self._alias.get(alias) == key:
                    del self._alias[alias]
        if adapted is None:
            self._data.pop(key, None)
        else:
            self._data[key] = adapted
            if self.aliases is not None:
                for alias in self.aliases(key, adapted):
                    if alias != key:
                        self._alias[alias] = key
        self.version += 1

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """True once caught up with the end offsets seen at start (False on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.ready.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def take(self, msg: Message) -> None:
        """Take one fetched record; a record that cannot be read is counted and skipped."""
        raw_key = msg.key()
        if raw_key is None:
            return
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        try:
            self.apply(key, msg.value())
        except Exception as exc:  # noqa: BLE001 - one bad record must not blind the view
            self.errors += 1
            log.warning(
                "view of %s: record %s@%s skipped: %s",
                self.topic,
                msg.partition(),
                msg.offset(),
                exc,
            )


class ViewReader:
    """Follows a set of views with one consumer (no group, nothing committed) on a thread."""

    def __init__(
        self, settings: Settings, views: Iterable[View[Any]], poll_timeout: float = 0.5
    ) -> None:
        self.settings = settings
        self.views = {v.topic: v for v in views}
        self.poll_timeout = poll_timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self.views:
            self._thread = threading.Thread(target=self._run, name="views", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def stop_on_shutdown(self, app: Any) -> None:
        """Stop the reading thread when the Faust app shuts down (off the event loop)."""

        async def stop_views(sender: Any, /, *args: Any, **kwargs: Any) -> None:
            await asyncio.to_thread(self.stop)

        app.on_before_shutdown.connect(stop_views)

    def load(self, timeout: float = 30.0) -> None:
        """Read the views' topics up to their current ends on the calling thread (tools).

        A topic that does not exist reads as empty.
        """
        consumer = self._consumer()
        try:
            self._read(consumer, follow=False, stall_timeout=timeout)
        finally:
            consumer.close()

    def _consumer(self) -> Consumer:
        # A group id is required by the client; nothing joins a group or commits (assign).
        return Consumer(
            kafka_config(
                self.settings,
                **{
                    "group.id": f"pssync-views-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                },
            )
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            consumer = self._consumer()
            try:
                self._read(consumer, follow=True, stall_timeout=None)
                return
            except KafkaException as exc:
                log.warning("views: %s; reading them again from the start", exc)
            except Exception:  # the views must keep trying, never die silently
                log.exception("views failed; reading them again from the start")
            finally:
                consumer.close()
            self._stop.wait(2.0)

    def _partitions(self, consumer: Consumer, follow: bool) -> dict[str, list[int]]:
        """Partitions per view topic. Following, wait (and say so) for missing topics;
        loading once, a missing topic has none."""
        warned: set[str] = set()
        while not self._stop.is_set():
            found: dict[str, list[int]] = {}
            missing = []
            for topic in self.views:
                md = consumer.list_topics(topic, timeout=10).topics.get(topic)
                if md is not None and md.error is None and md.partitions:
                    found[topic] = sorted(md.partitions)
                else:
                    missing.append(topic)
            if not missing or not follow:
                return found
            for topic in set(missing) - warned:
                log.warning("view: topic %s does not exist yet; waiting for it", topic)
            warned.update(missing)
            self._stop.wait(1.0)
        return {}

    def _read(self, consumer: Consumer, follow: bool, stall_timeout: float | None) -> None:
        partitions = self._partitions(consumer, follow)
        # What each view still has to read before it is ready: (partition -> end offset).
        todo: dict[str, dict[int, int]] = {t: {} for t in self.views}
        for topic, parts in partitions.items():
            for p in parts:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    todo[topic][p] = high
        for topic, ends in todo.items():
            if not ends:
                self.views[topic].ready.set()
        assignment = [
            TopicPartition(topic, p, OFFSET_BEGINNING)
            for topic, parts in partitions.items()
            for p in parts
        ]
        if not assignment:
            return
        consumer.assign(assignment)
        stalled_at = None if stall_timeout is None else time.monotonic() + stall_timeout
        while not self._stop.is_set():
            if not follow and not any(todo.values()):
                return
            msg = consumer.poll(self.poll_timeout)
            if msg is None:
                # Compaction may leave no record just before an end offset.
                waiting = [TopicPartition(t, p) for t, ends in todo.items() for p in ends]
                if waiting:
                    for tp in consumer.position(waiting):
                        if tp.offset >= todo[tp.topic].get(tp.partition, 0):
                            self._done(todo, tp.topic, tp.partition)
                if stalled_at is not None and time.monotonic() > stalled_at:
                    raise KafkaException(f"reading {sorted(todo)}: nothing received in time")
                continue
            if msg.error():
                continue
            if stall_timeout is not None:
                stalled_at = time.monotonic() + stall_timeout
            topic = msg.topic() or ""
            view = self.views.get(topic)
            if view is None:
                continue
            view.take(msg)
            p, offset = msg.partition() or 0, msg.offset() or 0
            end = todo[topic].get(p)
            if end is not None and offset + 1 >= end:
                self._done(todo, topic, p)

    def _done(self, todo: dict[str, dict[int, int]], topic: str, partition: int) -> None:
        ends = todo[topic]
        if ends.pop(partition, None) is not None and not ends:
            self.views[topic].ready.set()


class GroupedView(View[V]):
    """A view whose values are also found by a group they name: e.g. every cost price row of
    one employee (a history), where the topic is keyed by row."""

    def __init__(
        self,
        topic: str,
        decode: Decode,
        adapt: Adapt[V],
        group: Callable[[V], str | None],
    ) -> None:
        super().__init__(topic, decode, adapt)
        self.group_of = group
        self._groups: dict[str, dict[str, V]] = {}

    def apply(self, key: str, value: bytes | None) -> None:
        old = self._data.get(key)
        super().apply(key, value)
        old_name = None if old is None else self.group_of(old)
        if old_name is not None:
            members = self._groups.get(old_name, {})
            members.pop(key, None)
            if not members:
                self._groups.pop(old_name, None)
        new = self._data.get(key)
        name = None if new is None else self.group_of(new)
        if new is not None and name is not None:
            self._groups.setdefault(name, {})[key] = new

    def group(self, name: str) -> list[V]:
        """The values of one group (none when the group is unknown)."""
        return list(self._groups.get(name, {}).values())


def read_latest(
    settings: Settings, topic: str, decode: Decode, timeout: float = 30.0
) -> dict[str, dict[str, Any]]:
    """Every key's latest decoded value of a compacted topic, read now (for tools)."""
    view: View[dict[str, Any]] = View(topic, decode, lambda _k, record: record)
    ViewReader(settings, [view]).load(timeout)
    return dict(view.items())


Fold = Callable[[V | None, str, dict[str, Any]], V | None]


def folded_view(topic: str, decode: Decode, fold: Fold[V]) -> View[V]:
    """A view whose value per key folds every record read, oldest first, instead of keeping
    only the latest: e.g. since when an opportunity has been closed-won. A key's records share
    a partition, so they arrive in order; a tombstone still deletes the key."""
    view: View[V]

    def adapt(key: str, record: dict[str, Any]) -> V | None:
        return fold(view.get(key), key, record)

    view = View(topic, decode, adapt)
    return view
