"""Bounded reads of whole topics or single records: assign + seek, no group, no commits."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from types import TracebackType

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from streams.deadletters.model import DeadLetter, Ref
from streams.errors import DeadLetterError, PssyncError
from streams.security import kafka_config
from streams.settings import Settings


def _letter(msg: Message) -> DeadLetter:
    _, ts = msg.timestamp()
    ref = Ref(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
    return DeadLetter.of(ref, msg.key(), msg.value(), msg.headers(), ts)


class TopicReader:
    """Reads topics from their start to the end offsets seen when the read began."""

    def __init__(self, settings: Settings, timeout: float = 30.0) -> None:
        self.bootstrap = settings.kafka_bootstrap
        self.timeout = timeout
        # A group id is required by the client, but nothing joins or commits: assign() only.
        self._consumer = Consumer(
            kafka_config(
                settings,
                **{
                    "group.id": f"pssync-dlq-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                },
            )
        )

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

    def partitions(self, topic: str) -> list[int] | None:
        """Partitions of `topic`, or None if it does not exist."""
        try:
            md = self._consumer.list_topics(topic, timeout=self.timeout).topics.get(topic)
        except KafkaException as exc:
            raise PssyncError(
                f"cannot reach Kafka at {self.bootstrap} ({exc}); check PSSYNC_KAFKA_BOOTSTRAP "
                "and PSSYNC_KAFKA_SECURITY_PROTOCOL (and its credentials)"
            ) from exc
        if md is None or md.error is not None or not md.partitions:
            return None
        return sorted(md.partitions)

    def require(self, topic: str, hint: str) -> list[int]:
        parts = self.partitions(topic)
        if parts is None:
            raise DeadLetterError(f"topic {topic!r} does not exist; {hint}")
        return parts

    def _bounds(self, topic: str, partition: int) -> tuple[int, int]:
        low, high = self._consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=self.timeout
        )
        return int(low), int(high)

    def scan(self, topic: str, hint: str = "check the name") -> Iterator[DeadLetter]:
        """Every record of an existing topic up to its end offsets when the scan began.

        Offset order within a partition. Fails when no record arrives for `timeout`
        seconds, however long the whole topic takes.
        """
        parts = self.require(topic, hint)
        ends = {p: self._bounds(topic, p) for p in parts}
        todo = {p: high for p, (low, high) in ends.items() if high > low}
        if not todo:
            return
        self._consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in todo])
        stalled_at = time.monotonic() + self.timeout
        try:
            while todo:
                if time.monotonic() > stalled_at:
                    raise DeadLetterError(
                        f"reading {topic}: nothing received for {self.timeout:.0f}s, still "
                        f"missing partitions {sorted(todo)}; check the Kafka brokers"
                    )
                msg = self._consumer.poll(0.5)
                if msg is None:
                    # Compaction or aborted transactions may leave no record at high - 1.
                    for tp in self._consumer.position([TopicPartition(topic, p) for p in todo]):
                        if tp.offset >= todo.get(tp.partition, 0):
                            todo.pop(tp.partition, None)
                    continue
                if msg.error():
                    continue
                stalled_at = time.monotonic() + self.timeout
                p, offset = msg.partition() or 0, msg.offset() or 0
                if p not in todo or offset >= todo[p]:
                    continue  # written after the scan began: not part of this snapshot
                yield _letter(msg)
                if offset + 1 >= todo[p]:
                    del todo[p]
        finally:
            self._consumer.unassign()

    def read_one(self, ref: Ref) -> DeadLetter:
        parts = self.require(ref.topic, "check the dead letter's topic name (pssync dlq list)")
        if ref.partition not in parts:
            raise DeadLetterError(
                f"{ref}: topic {ref.topic} has partitions {parts}, not {ref.partition}"
            )
        low, high = self._bounds(ref.topic, ref.partition)
        if not low <= ref.offset < high:
            held = f"offsets {low}..{high - 1}" if high > low else "no records"
            raise DeadLetterError(
                f"{ref}: no such record, partition {ref.partition} of {ref.topic} holds {held}"
            )
        self._consumer.assign([TopicPartition(ref.topic, ref.partition, ref.offset)])
        deadline = time.monotonic() + self.timeout
        try:
            while time.monotonic() < deadline:
                msg = self._consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                if msg.offset() == ref.offset:
                    return _letter(msg)
                break  # the offset was compacted or deleted away
        finally:
            self._consumer.unassign()
        raise DeadLetterError(f"{ref}: no record at that offset (removed by retention?)")
