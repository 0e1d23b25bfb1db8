"""Reads one deal's records for its trace (`pssync trace`), without a consumer group.

Every saga topic is keyed by the saga key and produced with pssync's partitioner, so only the
deal's partition of each topic is read (schemas.conventions.partition_for).
"""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from schemas.conventions import partition_for
from schemas.registry import Registry
from schemas.serde import Decoder
from streams.deals import exceptions
from streams.deals.trace import FLOWS, Trace, assemble
from streams.errors import KafkaUnavailableError, NotFoundError
from streams.mappings.crm import opportunity_key
from streams.mappings.envelope import correlation_id
from streams.security import kafka_config
from streams.settings import COMMAND_TARGETS, Settings
from streams.topology import topology
from tables.views import Decode, read_latest


def saga_key_of(deal: str) -> str:
    """The saga key of a deal named by its CRM id (006...) or already by its saga key."""
    return deal if deal.startswith("crm:") else opportunity_key(deal)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def resolve(settings: Settings, name: str, decode: Decode, timeout: float = 15.0) -> str:
    """The saga key of a deal named by its CRM opportunity id, saga key, correlation id or
    ERP project code (looked up in canonical.opportunity / canonical.project)."""
    if name.startswith("crm:"):
        return name
    topo = topology(settings)
    if _is_uuid(name):
        for key, record in read_latest(
            settings, topo.canonical("opportunity"), decode, timeout
        ).items():
            if str((record.get("envelope") or {}).get("correlation_id")) == name:
                return key
        raise NotFoundError(
            f"no deal has correlation id {name} in {topo.canonical('opportunity')}; check the id "
            "(pssync trace also takes the CRM opportunity id or the ERP project code)"
        )
    project = read_latest(settings, topo.canonical("project"), decode, timeout).get(name)
    data = (project or {}).get("data") or {}
    if data.get("opportunity_id"):
        return str(data["opportunity_id"])
    return saga_key_of(name)


def _read_key(settings: Settings, topic: str, key: bytes, timeout: float) -> list[bytes]:
    """The values of `key` on its partition of `topic`, oldest first (none if no topic)."""
    consumer = Consumer(
        kafka_config(
            settings, **{"group.id": f"pssync-trace-{uuid.uuid4()}", "enable.auto.commit": False}
        )
    )
    try:
        try:
            md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        except Exception as exc:  # librdkafka raises KafkaException
            raise KafkaUnavailableError(f"cannot list {topic}: {exc}") from exc
        if md is None or md.error is not None or not md.partitions:
            return []
        partition = partition_for(key, len(md.partitions))
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=timeout
        )
        if high <= low:
            return []
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        values: list[bytes] = []
        while True:
            msg = consumer.poll(timeout)
            if msg is None:
                raise KafkaUnavailableError(
                    f"{topic}[{partition}]: nothing read within {timeout:.0f}s before offset "
                    f"{high}; is Kafka up (PSSYNC_KAFKA_BOOTSTRAP)?"
                )
            if msg.error():
                continue
            value = msg.value()
            if msg.key() == key and value is not None:
                values.append(value)
            if (msg.offset() or 0) + 1 >= high:
                return values
    finally:
        consumer.close()


def read_trace(settings: Settings, deal: str, timeout: float = 15.0) -> Trace:
    """The trace of a deal (CRM id, saga key, correlation id or project code) from what
    pssync's topics hold now."""
    decoder = Decoder(Registry(settings).schema_by_id)
    key = resolve(settings, deal, decoder.decode, timeout)
    raw = key.encode()
    topo = topology(settings)

    def decoded(topic: str) -> list[dict[str, Any]]:
        return [decoder.decode(v) for v in _read_key(settings, topic, raw, timeout)]

    commands = [c for t in COMMAND_TARGETS for c in decoded(topo.commands(t))]
    commands.sort(key=lambda c: (c["issued_at"], c["command_id"]))
    # Work flowing into the deal's project is keyed by its own objects, not by the deal:
    # those topics are read whole (the latest event of each object).
    flows = {
        flow.entity: list(
            read_latest(settings, topo.canonical(flow.entity), decoder.decode, timeout).values()
        )
        for flow in FLOWS
    }
    return assemble(
        key,
        correlation_id(key),
        decoded(topo.canonical("opportunity")),
        commands,
        decoded(topo.results),
        exceptions.load(settings).get(key),
        flows,
    )
