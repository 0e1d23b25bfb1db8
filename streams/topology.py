"""Which topics pssync reads and writes, derived from settings and the naming conventions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.conventions import (
    DLQ_STAGES,
    audit_topic,
    canonical_topic,
    dlq_reruns_topic,
    dlq_topic,
    raw_topic,
    value_subject,
)
from streams.admin import TopicSpec
from streams.changes import Change
from streams.mappings import crm
from streams.settings import Settings

Mapper = Callable[[Change, str], tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class Route:
    """A raw topic and how its changes become canonical events of one entity."""

    raw_topic: str
    entity: str
    mapper: Mapper


@dataclass(frozen=True)
class Topology:
    routes: list[Route]
    namespace: str

    def canonical(self, entity: str) -> str:
        return canonical_topic(entity, self.namespace)

    def subject(self, entity: str) -> str:
        return value_subject(self.canonical(entity))

    def dlq(self, stage: str) -> str:
        return dlq_topic(stage, self.namespace)

    def audit(self, stage: str) -> str:
        return audit_topic(stage, self.namespace)

    @property
    def dlq_reruns(self) -> str:
        return dlq_reruns_topic(self.namespace)

    @property
    def entities(self) -> list[str]:
        return sorted({r.entity for r in self.routes})


def topology(settings: Settings) -> Topology:
    prefix = settings.crm_topic_prefix
    return Topology(
        routes=[
            Route(raw_topic(prefix, "sales", "opportunity"), "opportunity", crm.map_opportunity)
        ],
        namespace=settings.topic_namespace,
    )


def topic_specs(settings: Settings) -> list[TopicSpec]:
    t = topology(settings)
    p, r = settings.partitions, settings.replication
    # Raw topics are normally created by Connect; creating them first lets the worker start
    # before the connector and guarantees the partition count the dedupe table relies on.
    raw = [
        TopicSpec(route.raw_topic, p, r, {"cleanup.policy": "compact,delete"}) for route in t.routes
    ]
    canonical = [TopicSpec(t.canonical(e), p, r, {"cleanup.policy": "compact"}) for e in t.entities]
    dlq = [
        TopicSpec(t.dlq(stage), 1, r, {"retention.ms": str(30 * 24 * 3600 * 1000)})
        for stage in DLQ_STAGES
    ]
    # Every target write, kept like an audit log: by time, not compacted.
    audit = [TopicSpec(t.audit("sink"), p, r, {"retention.ms": str(365 * 24 * 3600 * 1000)})]
    # One record per rerun dead letter, kept forever (compacted) so none is rerun twice.
    reruns = [TopicSpec(t.dlq_reruns, 1, r, {"cleanup.policy": "compact"})]
    return raw + canonical + dlq + audit + reruns
