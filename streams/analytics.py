"""Masked copies of canonical events for analytics topics (`[<ns>.]analytics.<entity>`).

The normalize stage hands over what it emitted once per batch; this module masks each record
with the policy (schemas/masking.py) and produces it with the same key and Avro contract as
the canonical event, through the same Output, so one flush acknowledges both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from schemas import contracts
from schemas.masking import Policy, check_key, load_policy, mask_record
from schemas.registry import Registry
from schemas.serde import encode
from streams.output import Output
from streams.settings import Settings
from streams.topology import Topology

# (entity, canonical key, canonical record) as the normalize stage emitted it.
Emitted = tuple[str, str, dict[str, Any]]


class AnalyticsCopies:
    def __init__(
        self, topology: Topology, output: Output, registry: Registry, policy: Policy, key: str
    ) -> None:
        self.topology = topology
        self.output = output
        self.registry = registry
        self.policy = policy
        self.key = check_key(policy, key)
        self.entities = [e for e in topology.entities if e in policy.rules]
        # entity -> (analytics topic, schema id, parsed schema), resolved once in prepare().
        self.targets: dict[str, tuple[str, int, Any]] = {}

    async def prepare(self) -> None:
        """Register each analytics subject once, before the first batch."""
        for entity in self.entities:
            if entity not in self.targets:
                topic = self.topology.analytics(entity)
                schema_id = await asyncio.to_thread(
                    self.registry.register, f"{topic}-value", contracts.schema_str(entity)
                )
                self.targets[entity] = (topic, schema_id, contracts.parsed(entity))

    def emit(self, emitted: Sequence[Emitted]) -> int:
        """Produce the masked copy of every record whose entity the policy lists; no flush."""
        sent = 0
        for entity, key, record in emitted:
            target = self.targets.get(entity)
            if target is None:
                continue
            topic, schema_id, parsed = target
            masked = mask_record(record, self.policy.rules[entity], self.key)
            self.output.send(topic, key.encode(), encode(schema_id, parsed, masked))
            sent += 1
        return sent


def analytics_copies(
    settings: Settings, topology: Topology, output: Output, registry: Registry
) -> AnalyticsCopies | None:
    """The masked-copy producer, or None when PSSYNC_ANALYTICS_POLICY is not set."""
    if not settings.analytics_policy:
        return None
    policy = load_policy(settings.analytics_policy)
    return AnalyticsCopies(topology, output, registry, policy, settings.masking_key)
