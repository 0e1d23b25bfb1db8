"""Compacted topics read whole by every worker, like a Kafka Streams GlobalKTable.

A view holds the latest value of every key of one topic: customers, reference sets. Each
worker reads all partitions itself, from the beginning, with its own consumer (no group,
nothing committed), so any worker can look any key up whatever partitions it owns. The
records are decoded through the registry and adapted to the few fields their reader needs;
a tombstone (or an event whose data is null) deletes the key.

The consumer runs on its own thread: decoding and fetching never block the event loop, and
lookups are plain dictionary reads. A view is `ready` once it has read up to the end offsets
the topic had when it started; it keeps following the topic afterwards.
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
        settings: Settings,
        topic: str,
        decode: Decode,
        adapt: Adapt[V],
        aliases: Aliases[V] | None = None,
        poll_timeout: float = 0.5,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.decode = decode
        self.adapt = adapt
        self.aliases = aliases
        self.poll_timeout = poll_timeout
        self.ready = threading.Event()
        # Grows on every change: readers can tell cheaply whether anything moved.
        self.version = 0
        self.errors = 0
        self._data: dict[str, V] = {}
        self._alias: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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

    # -- the reading thread --------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"view {self.topic}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """True once caught up with the end offsets seen at start (False on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.ready.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def load(self, timeout: float = 30.0) -> None:
        """Read the topic up to its current end on the calling thread, then stop (tools).

        A topic that does not exist reads as empty.
        """
        consumer = self._consumer()
        try:
            md = consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
            if md is None or md.error is not None or not md.partitions:
                self.ready.set()
                return
            self._read(consumer, follow=False, stall_timeout=timeout)
        finally:
            consumer.close()

    def _consumer(self) -> Consumer:
        # A group id is required by the client; nothing joins a group or commits (assign).
        return Consumer(
            kafka_config(
                self.settings,
                **{
                    "group.id": f"pssync-view-{uuid.uuid4().hex}",
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
                log.warning("view of %s: %s; reading it again from the start", self.topic, exc)
            except Exception:
                log.exception("view of %s failed; reading it again from the start", self.topic)
            finally:
                consumer.close()
            self._stop.wait(2.0)

    def _partitions(self, consumer: Consumer) -> list[int]:
        """Partitions of the topic, waiting (and saying so) while it does not exist."""
        warned = False
        while not self._stop.is_set():
            md = consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
            if md is not None and md.error is None and md.partitions:
                return sorted(md.partitions)
            if not warned:
                log.warning("view: topic %s does not exist yet; waiting for it", self.topic)
                warned = True
            self._stop.wait(1.0)
        return []

    def _read(self, consumer: Consumer, follow: bool, stall_timeout: float | None) -> None:
        partitions = self._partitions(consumer)
        if not partitions:
            return
        ends: dict[int, int] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        if not ends:
            self.ready.set()
        stalled_at = None if stall_timeout is None else time.monotonic() + stall_timeout
        while not self._stop.is_set():
            msg = consumer.poll(self.poll_timeout)
            if msg is None:
                if ends:
                    # Compaction may leave no record just before the end offset.
                    positions = consumer.position([TopicPartition(self.topic, p) for p in ends])
                    for tp in positions:
                        if tp.offset >= ends.get(tp.partition, 0):
                            ends.pop(tp.partition, None)
                    if not ends:
                        self.ready.set()
                if not follow and self.ready.is_set():
                    return
                if stalled_at is not None and time.monotonic() > stalled_at:
                    raise KafkaException(f"reading {self.topic}: nothing received in time")
                continue
            if msg.error():
                continue
            if stalled_at is not None and stall_timeout is not None:
                stalled_at = time.monotonic() + stall_timeout
            self._take(msg)
            p, offset = msg.partition() or 0, msg.offset() or 0
            if p in ends and offset + 1 >= ends[p]:
                del ends[p]
                if not ends:
                    self.ready.set()
                    if not follow:
                        return

    def _take(self, msg: Message) -> None:
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


def read_latest(
    settings: Settings, topic: str, decode: Decode, timeout: float = 30.0
) -> dict[str, dict[str, Any]]:
    """Every key's latest decoded value of a compacted topic, read now (for tools)."""
    view: View[dict[str, Any]] = View(settings, topic, decode, lambda _k, record: record)
    view.load(timeout)
    return dict(view.items())
