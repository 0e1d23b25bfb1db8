"""Kafka topic administration: create pssync's topics with the right shape, idempotently."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streams.errors import KafkaUnavailableError, PssyncError
from streams.security import kafka_config
from streams.settings import Settings

# Answers of a cluster that is (re)starting or moving leaders: worth asking again.
_TRANSIENT = {
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_CONTROLLER,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.BROKER_NOT_AVAILABLE,
}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: dict[str, str] = field(default_factory=dict)


def ensure_topics(settings: Settings, specs: list[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create missing topics; returns the names created. Existing topics are left alone."""
    admin = AdminClient(kafka_config(settings))
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise KafkaUnavailableError(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc}); check "
            "PSSYNC_KAFKA_BOOTSTRAP and PSSYNC_KAFKA_SECURITY_PROTOCOL (and its credentials)"
        ) from exc
    todo = [
        NewTopic(s.name, s.partitions, s.replication, config=s.config)
        for s in specs
        if s.name not in existing
    ]
    created = []
    for name, fut in admin.create_topics(todo, operation_timeout=timeout).items() if todo else []:
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            if error.retriable() or error.code() in _TRANSIENT:
                raise KafkaUnavailableError(f"cannot create topic {name} yet: {exc}") from exc
            raise PssyncError(f"cannot create topic {name}: {exc}") from exc
    return created


def delete_topics(settings: Settings, names: list[str], timeout: float = 30.0) -> None:
    admin = AdminClient(kafka_config(settings))
    for fut in admin.delete_topics(names, operation_timeout=timeout).values():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
