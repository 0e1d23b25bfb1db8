"""Deal stage state: assembled deals, which deal each line item belongs to, saga states.

Three tables in the store (RocksDB or memory) with changelog topics, all written on the
partition of the deal's records, so a deal's whole state moves with its partition.
- deal-assembly: saga key -> the assembled deal (streams/deals/assembly.py); a deal has an
  entry from its closed-won event or its first line item or milestone on, not while it is
  merely open (streams/agents/deal.py)
- deal-children: line item / milestone key -> the saga key of its deal (a delete names only
  the child)
- saga-state: correlation id -> the saga (streams/deals/saga.py)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import faust

from streams.deals.assembly import Deal
from streams.deals.saga import Saga
from streams.output import Output
from tables.codec import decode, encode
from tables.json_table import JsonTable, changelog_topic, json_table

ASSEMBLY = "deal-assembly"
CHILDREN = "deal-children"
SAGAS = "saga-state"
NAMES = (ASSEMBLY, CHILDREN, SAGAS)


def changelog_topics(app_id: str) -> list[str]:
    return [changelog_topic(app_id, name) for name in NAMES]


@dataclass
class DealTables:
    assembly: JsonTable
    children: JsonTable
    sagas: JsonTable

    def deal(self, key: str) -> Deal | None:
        raw = self.assembly.get(key)
        return None if raw is None else decode(Deal, raw)

    def parent(self, child_key: str) -> str | None:
        raw = self.children.get(child_key)
        return None if raw is None else str(raw.get("deal") or "") or None

    def saga(self, correlation_id: str) -> Saga | None:
        raw = self.sagas.get(correlation_id)
        return None if raw is None else decode(Saga, raw)

    def deals(self) -> Iterator[Deal]:
        for _, raw in self.assembly.items():
            yield decode(Deal, raw)

    def sagas_owned(self) -> Iterator[Saga]:
        for _, raw in self.sagas.items():
            yield decode(Saga, raw)

    def write(
        self,
        deals: Iterable[Deal],
        children: Iterable[tuple[int, str, str]],
        sagas: Iterable[tuple[int, Saga]],
    ) -> None:
        """Deals, (partition, child key, saga key) links and (partition, saga) states."""
        self.assembly.write((d.partition, d.key, encode(d)) for d in deals)
        self.children.write((p, child, {"deal": parent}) for p, child, parent in children)
        self.sagas.write((p, s.correlation_id, encode(s)) for p, s in sagas)


def deal_tables(app: faust.App, partitions: int, output: Output) -> DealTables:
    return DealTables(
        assembly=JsonTable(
            json_table(app, ASSEMBLY, partitions, "saga key -> assembled deal"), output
        ),
        children=JsonTable(
            json_table(app, CHILDREN, partitions, "line item / milestone -> saga key"), output
        ),
        sagas=JsonTable(json_table(app, SAGAS, partitions, "correlation id -> saga"), output),
    )
