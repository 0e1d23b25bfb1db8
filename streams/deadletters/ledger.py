"""The durable record of reruns: one record per dead letter on a compacted topic."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from streams.deadletters.model import DeadLetter, Ref
from streams.deadletters.reader import TopicReader
from streams.errors import DeadLetterError


@dataclass(frozen=True)
class Rerun:
    dead_letter: str  # `<dlq topic>:<partition>:<offset>`, also the record key
    rerun_at: str  # ISO datetime, UTC
    topic: str  # where the copy was produced, and at which position
    partition: int
    offset: int
    # The dead letter's own record time: a DLQ topic deleted and recreated reuses offsets,
    # and a rerun recorded for the old record must not stand for the new one.
    dead_letter_ts: int | None = None

    @property
    def landed(self) -> Ref:
        return Ref(self.topic, self.partition, self.offset)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Rerun:
        try:
            d = json.loads(data)
            return cls(
                str(d["dead_letter"]),
                str(d["rerun_at"]),
                str(d["topic"]),
                int(d["partition"]),
                int(d["offset"]),
                None if d.get("dead_letter_ts") is None else int(d["dead_letter_ts"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DeadLetterError(
                f"unreadable rerun record {data[:200]!r}: {exc}; only `pssync dlq rerun` "
                "may write to the reruns topic"
            ) from exc


def read_reruns(reader: TopicReader, topic: str) -> dict[str, Rerun]:
    """Reruns by dead letter; empty if the topic does not exist yet (nothing rerun)."""
    if reader.partitions(topic) is None:
        return {}
    out: dict[str, Rerun] = {}
    for record in reader.scan(topic):  # offset order: the last record of a key wins
        if record.key is None:
            continue
        key = record.key.decode(errors="replace")
        if record.value is None:
            out.pop(key, None)  # a tombstone forgets the rerun
        else:
            out[key] = Rerun.from_bytes(record.value)
    return out


def rerun_for(letter: DeadLetter, reruns: Mapping[str, Rerun]) -> Rerun | None:
    """The rerun recorded for this very dead letter, if any."""
    rerun = reruns.get(str(letter.ref))
    if rerun is None or rerun.dead_letter_ts not in (None, letter.timestamp_ms):
        return None
    return rerun
