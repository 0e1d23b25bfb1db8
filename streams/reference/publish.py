"""Publish a reference file to the compacted `reference.<set>` topics, and read them back.

Loading compares the file with what the topics hold (read whole, no consumer group) and
produces only the difference: a new entry is a create, a changed one an update, an entry
gone from the file a delete (data null). Loading the same file again produces nothing. The
file's `version` is every event's entity_version, so a changed entry must come with a higher
version than the one on the topic; loading refuses otherwise.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas import contracts
from schemas.conventions import compatibility_level, contract_subject, contract_topic
from schemas.registry import Registry
from schemas.serde import Decoder, encode
from streams.deadletters.reader import TopicReader
from streams.errors import ReferenceDataError
from streams.ids import name_id
from streams.mappings.envelope import correlation_id
from streams.output import Output
from streams.reference.model import SECTIONS, ReferenceData
from streams.settings import Settings

SYSTEM = "pssync"
CONNECTOR = "reference"
# Same namespace as canonical events: event ids stay deterministic per entry and version.
_NS = uuid.UUID("6f1c9a52-4d3e-5b8a-9c7e-2f4d8b1a6e30")
OWNED = tuple(SECTIONS.values())


@dataclass(frozen=True)
class Held:
    """An entry as its reference topic holds it (data None: deleted)."""

    version: int
    data: dict[str, Any] | None


@dataclass(frozen=True)
class Step:
    """One record a load produces."""

    name: str  # reference set
    code: str
    op: str  # create | update | delete
    data: dict[str, Any] | None
    held_version: int | None


def read_topics(
    settings: Settings, names: Iterable[str], registry: Registry | None = None
) -> dict[str, dict[str, Held]]:
    """What the reference topics of `names` hold now, by set and code (newest record wins)."""
    decoder = Decoder((registry or Registry(settings)).schema_by_id)
    out: dict[str, dict[str, Held]] = {}
    with TopicReader(settings) as reader:
        for name in names:
            topic = contract_topic(name, True, settings.topic_namespace)
            held: dict[str, Held] = {}
            if reader.partitions(topic) is not None:
                for record in reader.scan(topic):
                    if record.key is None:
                        continue
                    code = record.key.decode()
                    if record.value is None:  # a tombstone
                        held.pop(code, None)
                        continue
                    event = decoder.decode(record.value)
                    held[code] = Held(int(event["envelope"]["entity_version"]), event["data"])
            out[name] = held
    return out


def plan(data: ReferenceData, held: dict[str, dict[str, Held]]) -> list[Step]:
    """The records that bring the topics to the file; refuses a change without a new version."""
    steps: list[Step] = []
    stale: list[str] = []
    for name in OWNED:
        wanted = data.sets.get(name, {})
        current = held.get(name, {})
        for code, entry in wanted.items():
            now = current.get(code)
            if now is not None and now.data == entry:
                continue
            op = "create" if now is None or now.data is None else "update"
            if now is not None and now.version >= data.version:
                stale.append(f"{name} {code} (topic at version {now.version})")
            steps.append(Step(name, code, op, entry, None if now is None else now.version))
        for code, now in current.items():
            if code not in wanted and now.data is not None:
                if now.version >= data.version:
                    stale.append(f"{name} {code} (removed; topic at version {now.version})")
                steps.append(Step(name, code, "delete", None, now.version))
    if stale:
        raise ReferenceDataError(
            f"{data.path} changes {', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''} "
            f"but its version is {data.version}; raise 'version' above what the topics hold "
            "so consumers take the change as newer"
        )
    return steps


def record(data: ReferenceData, step: Step, now: datetime) -> dict[str, Any]:
    """The reference event of one step, with its envelope."""
    token = f"reference|{step.name}|{step.code}|{data.version}|{step.op}"
    return {
        "envelope": {
            "event_id": name_id(_NS, token),
            "correlation_id": correlation_id(f"reference:{step.name}:{step.code}"),
            "causation_id": f"{data.path.name}@{data.version}",
            "source": {
                "system": SYSTEM,
                "connector": CONNECTOR,
                "entity": step.name,
                "key": step.code,
                "position": f"v{data.version}",
                "sequence": data.version,
                "committed_at": now,
            },
            "op": step.op,
            "entity_version": data.version,
            "emitted_at": now,
        },
        "data": step.data,
    }


def execute(
    settings: Settings,
    data: ReferenceData,
    steps: list[Step],
    registry: Registry | None = None,
    now: datetime | None = None,
) -> int:
    """Register the sets' contracts (FULL compatibility) and produce the steps; returns the
    number of records Kafka acknowledged."""
    if not steps:
        return 0
    registry = registry or Registry(settings)
    when = now or datetime.now(UTC)
    ids: dict[str, tuple[int, Any]] = {}
    level = compatibility_level(True)
    for name in sorted({s.name for s in steps}):
        subject = contract_subject(name, True, settings.topic_namespace)
        existed = bool(registry.versions(subject))
        # A new version must pass the convention's level; a new subject takes it once it exists.
        if existed and registry.compatibility(subject) != level:
            registry.set_compatibility(subject, level)
        schema_id = registry.register(subject, contracts.schema_str(name))
        if not existed:
            registry.set_compatibility(subject, level)
        ids[name] = (schema_id, contracts.parsed(name))
    output = Output(settings, client_id=f"{settings.app_id}-reference")
    for step in steps:
        schema_id, parsed = ids[step.name]
        output.send(
            contract_topic(step.name, True, settings.topic_namespace),
            step.code.encode(),
            encode(schema_id, parsed, record(data, step, when)),
        )
    asyncio.run(output.flush())
    return len(steps)
