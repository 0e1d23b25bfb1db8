"""Replay: move a consumer group's committed offsets on a topic (dry run unless executed).

Canonical topics replay into sinks with the same result (writes are guarded by entity
version). Raw topics replay through the dedupe table, which drops changes it has already
applied; to rebuild canonical topics from raw, run with a fresh PSSYNC_APP_ID instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from streams.errors import ConfigError, PssyncError
from streams.security import kafka_config
from streams.settings import Settings


@dataclass(frozen=True)
class Move:
    partition: int
    current: int | None  # None: the group has committed nothing here
    target: int
    end: int


def parse_target(to: str) -> OffsetSpec | int:
    """earliest | latest | ISO-8601 datetime (with zone) | a plain offset number."""
    if to == "earliest":
        return OffsetSpec.earliest()
    if to == "latest":
        return OffsetSpec.latest()
    if to.isdigit():
        return int(to)
    try:
        when = datetime.fromisoformat(to)
    except ValueError:
        raise ConfigError(
            f"--to {to!r}: use earliest, latest, an offset number or an ISO datetime "
            "such as 2026-11-29T10:00:00+00:00"
        ) from None
    if when.tzinfo is None:
        raise ConfigError(f"--to {to!r}: add a time zone, e.g. {to}+00:00")
    return OffsetSpec.for_timestamp(int(when.timestamp() * 1000))


class Replayer:
    def __init__(self, settings: Settings, timeout: float = 30.0) -> None:
        self.admin = AdminClient(kafka_config(settings))
        self.timeout = timeout

    def _partitions(self, topic: str) -> list[int]:
        md = self.admin.list_topics(topic, timeout=self.timeout).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            raise PssyncError(f"topic {topic!r} does not exist; check the name (pssync topics)")
        return sorted(md.partitions)

    def _offsets(self, topic: str, parts: list[int], spec: OffsetSpec) -> dict[int, int]:
        futures = self.admin.list_offsets(
            {TopicPartition(topic, p): spec for p in parts}, request_timeout=self.timeout
        )
        # Every answer is awaited before one error is raised: requests left in flight when
        # the client is released have crashed the process (librdkafka) during broker restarts.
        found: dict[int, int] = {}
        errors: list[KafkaException] = []
        for tp, f in futures.items():
            try:
                found[tp.partition] = f.result().offset
            except KafkaException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return found

    def active_members(self, group: str) -> int:
        desc = self.admin.describe_consumer_groups([group])[group].result()
        return len(desc.members)

    def committed(self, group: str, topic: str, parts: list[int]) -> dict[int, int | None]:
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in parts])
        found = self.admin.list_consumer_group_offsets([request])[group].result()
        return {
            tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in found.topic_partitions
        }

    def lag(self, group: str, topic: str) -> dict[int, int]:
        """Messages between the group's committed offset and the end, per partition."""
        parts = self._partitions(topic)
        ends = self._offsets(topic, parts, OffsetSpec.latest())
        starts = self._offsets(topic, parts, OffsetSpec.earliest())
        committed = self.committed(group, topic, parts)
        return {p: ends[p] - (committed.get(p) or starts[p]) for p in parts}

    def plan(self, group: str, topic: str, to: str) -> list[Move]:
        parts = self._partitions(topic)
        target = parse_target(to)
        ends = self._offsets(topic, parts, OffsetSpec.latest())
        if isinstance(target, int):
            wanted = {p: min(target, ends[p]) for p in parts}
        else:
            wanted = self._offsets(topic, parts, target)
            # No record at or after the timestamp: start at the end.
            wanted = {p: ends[p] if o < 0 else o for p, o in wanted.items()}
        current = self.committed(group, topic, parts)
        return [Move(p, current.get(p), wanted[p], ends[p]) for p in parts]

    def execute(self, group: str, topic: str, moves: list[Move]) -> None:
        members = self.active_members(group)
        if members:
            raise PssyncError(
                f"group {group!r} has {members} active member(s); stop the pssync workers "
                "of this group first, then run the replay again"
            )
        tps = [TopicPartition(topic, m.partition, m.target) for m in moves]
        try:
            self.admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])[
                group
            ].result()
        except KafkaException as exc:
            raise PssyncError(f"could not move offsets of {group!r}: {exc}") from exc


def describe(moves: list[Move]) -> str:
    lines = [f"{'partition':>9} {'committed':>10} {'new':>10} {'end':>10} {'to replay':>10}"]
    for m in moves:
        cur = "-" if m.current is None else str(m.current)
        lines.append(
            f"{m.partition:>9} {cur:>10} {m.target:>10} {m.end:>10} {m.end - m.target:>10}"
        )
    return "\n".join(lines)
