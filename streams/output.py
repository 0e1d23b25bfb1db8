"""Writes records to Kafka per batch: produce without awaiting, flush once before acking."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas.conventions import PARTITIONER
from streams.errors import DeliveryError
from streams.security import kafka_config
from streams.settings import Settings

Headers = list[tuple[str, str | bytes | None]]


class Output:
    def __init__(self, settings: Settings, client_id: str = "pssync") -> None:
        self._producer = Producer(
            kafka_config(
                settings,
                **{
                    "client.id": client_id,
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    "compression.type": "lz4",
                    "batch.num.messages": 10000,
                    # Named, not defaulted: schemas.conventions.partition_for mirrors it.
                    "partitioner": PARTITIONER,
                },
            )
        )
        self._errors: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
        on_delivery: Callable[[Message], None] | None = None,
    ) -> None:
        """Queue one record; `on_delivery` runs (on the flushing thread) once it is acked."""
        callback = self._on_delivery
        if on_delivery is not None:

            def callback(err: KafkaError | None, msg: Message) -> None:
                self._on_delivery(err, msg)
                if err is None:
                    on_delivery(msg)

        kwargs: dict[str, Any] = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=callback, **kwargs
                )
                return
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain

    def partitions(self, topic: str, timeout: float = 10.0) -> int:
        """How many partitions `topic` has, from the producer's metadata (a broker request)."""
        try:
            meta = self._producer.list_topics(topic, timeout=timeout).topics.get(topic)
        except KafkaException as exc:
            raise DeliveryError(f"cannot read the metadata of topic {topic} ({exc})") from exc
        if meta is None or meta.error is not None or not meta.partitions:
            raise DeliveryError(
                f"topic {topic} has no partitions in the cluster's metadata "
                f"({meta.error if meta is not None else 'unknown topic'}); create it with "
                "`pssync topics`"
            )
        return len(meta.partitions)

    async def flush(self, timeout: float = 120.0) -> None:
        """Wait until every record of this batch is acknowledged by the brokers."""
        left = await asyncio.to_thread(self._producer.flush, timeout)
        if left or self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryError(
                f"{left} record(s) undelivered after {timeout}s, errors: {errors[:5]}; "
                "check the Kafka brokers; the batch will be reprocessed after restart"
            )


def produce_sync(
    settings: Settings,
    records: list[tuple[str, bytes | None, bytes | None]],
    extra: dict[str, Any] | None = None,
) -> None:
    """Small helper for tools and tests: produce and wait."""
    p = Producer(kafka_config(settings, **(extra or {})))
    for topic, key, value in records:
        p.produce(topic, key=key, value=value)
    if p.flush(30):
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT))
