"""Reading topics from the beginning, for assertions."""

from __future__ import annotations

import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from streams.security import kafka_config
from streams.settings import Settings


def read_all(settings: Settings, topic: str, timeout: float = 10.0) -> list[Message]:
    """Every message currently in `topic` (all partitions), in partition/offset order."""
    consumer = Consumer(
        kafka_config(
            settings, **{"group.id": f"assert-{uuid.uuid4()}", "enable.auto.commit": False}
        )
    )
    try:
        md = consumer.list_topics(topic, timeout=timeout).topics[topic]
        ends = {}
        for p in md.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
        out: list[Message] = []
        remaining = {p for p, high in ends.items() if high > 0}
        while remaining:
            msg = consumer.poll(timeout)
            if msg is None:
                raise AssertionError(f"{topic}: no message within {timeout}s, missing {remaining}")
            if msg.error():
                continue
            out.append(msg)
            if (msg.offset() or 0) + 1 >= ends[msg.partition()]:
                remaining.discard(msg.partition())
        return out
    finally:
        consumer.close()
