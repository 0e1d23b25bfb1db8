"""Produce dead letters back to where they came from, then record each rerun durably."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from streams.deadletters.ledger import Rerun
from streams.deadletters.model import DeadLetter, Ref
from streams.deadletters.reader import TopicReader
from streams.errors import DeadLetterError
from streams.security import kafka_config
from streams.settings import Settings


def check_origins(reader: TopicReader, letters: list[DeadLetter]) -> None:
    """Every origin partition must still exist: producing must not auto-create topics."""
    parts: dict[str, list[int]] = {}
    for d in letters:
        origin = d.origin
        assert origin is not None  # build_plan keeps only routable dead letters
        if origin.topic not in parts:
            parts[origin.topic] = reader.require(
                origin.topic, f"{d.ref} came from it; recreate it or leave the dead letter be"
            )
        if origin.partition not in parts[origin.topic]:
            raise DeadLetterError(
                f"{d.ref} came from partition {origin.partition} of {origin.topic}, which now "
                f"has partitions {parts[origin.topic]}; it cannot go back where it came from"
            )


def compacted(settings: Settings, topics: set[str], timeout: float = 30.0) -> list[str]:
    """Which of `topics` are compacted (a rerun becomes the newest record of its key there)."""
    if not topics:
        return []
    admin = AdminClient(kafka_config(settings))
    resources = [ConfigResource("topic", t) for t in sorted(topics)]
    found = []
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        try:
            policy = future.result()["cleanup.policy"].value or ""
        except (KafkaException, KeyError):
            continue  # unknown: check_origins reports missing topics
        if "compact" in policy:
            found.append(resource.name)
    return sorted(found)


def compaction_note(topic: str) -> str:
    return (
        f"note: {topic} is compacted: a rerun becomes the newest record of its key. If the "
        "key changed after the dead letter, the live pipeline drops the older rerun (stale), "
        "but compaction may later keep it instead of the newer record, so a rebuild from the "
        "topic would miss the newer one; rerun only keys that have not changed since."
    )


def execute(
    settings: Settings, letters: list[DeadLetter], reruns_topic: str, timeout: float = 60.0
) -> list[Rerun]:
    """Rerun `letters`; returns what was rerun and recorded. Raises if any could not be.

    Order matters: a rerun is recorded only after Kafka acknowledged the copy. A crash in
    between leaves the copy unrecorded, so a later rerun produces it again; that is
    harmless because the pipeline dedupes (the dedupe table drops a raw change it already
    applied, sinks upsert guarded by entity_version). Recording first could lose a record.
    """
    producer = Producer(kafka_config(settings, **{"enable.idempotence": True, "acks": "all"}))
    landed: dict[Ref, Ref] = {}
    failed: dict[Ref, str] = {}

    def on_copy(ref: Ref) -> Callable[[KafkaError | None, Message], None]:
        def done(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                landed[ref] = Ref(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
            else:
                failed[ref] = str(err)

        return done

    for d in letters:
        origin = d.origin
        assert origin is not None
        # Back to the partition it was read from: the key's partition may differ between
        # the original producer's partitioner (e.g. Debezium's murmur2) and this client's.
        producer.produce(
            origin.topic,
            key=d.key,
            value=d.value,
            headers=d.rerun_headers(),
            partition=origin.partition,
            on_delivery=on_copy(d.ref),
        )
    producer.flush(timeout)
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    stamps = {d.ref: d.timestamp_ms for d in letters}
    done = [
        Rerun(str(ref), now, to.topic, to.partition, to.offset, stamps[ref])
        for ref, to in sorted(landed.items())
    ]
    recorded: list[str] = []
    not_recorded: dict[str, str] = {}

    def on_record(err: KafkaError | None, msg: Message) -> None:
        key = (msg.key() or b"").decode()
        if err is None:
            recorded.append(key)
        else:
            not_recorded[key] = str(err)

    for rerun in done:
        producer.produce(
            reruns_topic,
            key=rerun.dead_letter.encode(),
            value=rerun.to_bytes(),
            on_delivery=on_record,
        )
    producer.flush(timeout)
    missing = [str(d.ref) for d in letters if d.ref not in landed and d.ref not in failed]
    if failed or missing or not_recorded or len(recorded) != len(done):
        problems = [f"{ref}: not produced ({err})" for ref, err in failed.items()]
        problems += [f"{ref}: not acknowledged within {timeout:.0f}s" for ref in missing]
        problems += [
            f"{ref}: produced but not recorded in {reruns_topic} ({err}); a next rerun "
            "produces it again (harmless, the pipeline dedupes)"
            for ref, err in not_recorded.items()
        ]
        raise DeadLetterError(
            f"{len(recorded)} of {len(letters)} dead letter(s) rerun; the others failed:\n  "
            + "\n  ".join(problems)
            + "\ncheck the Kafka brokers and run the same rerun again"
        )
    return done
