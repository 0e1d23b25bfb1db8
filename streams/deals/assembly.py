"""Deal assembly as a pure state machine: opportunity + line items + milestones per deal.

A deal fires once, on its transition to closed-won, when its payload is complete: a line
item for every service line the deal sells and its customer known. Line items and the deal
are separate CRM records that commit separately, so a closed-won deal still missing some
waits until `wait_until` and is then judged on what it has.

Events are ordered by their source position (`entity_version`): a replayed or redelivered
event is not newer than what the state holds and changes nothing. An event whose payload
equals what the state holds (an echo of fields pssync writes back, which the payload does
not contain) changes nothing either. After firing, every real change is reported, so a
deal parked on a business exception is checked again when someone fixes it in the CRM.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum

from streams.deals.amendments import Amendments
from streams.deals.model import Child, LineItem, Milestone, Opportunity
from streams.deals.sources import Stamp


@dataclass(frozen=True)
class Deal:
    key: str  # the saga key: the opportunity's canonical id
    partition: int = 0  # of the deal's records (its state is written there)
    opportunity: Opportunity | None = None
    version: int = -1  # source position of the opportunity held
    lines: dict[str, LineItem] = field(default_factory=dict)
    milestones: dict[str, Milestone] = field(default_factory=dict)
    child_versions: dict[str, int] = field(default_factory=dict)
    closed_won_at: float | None = None  # when the CRM committed closed-won (epoch seconds)
    wait_until: float | None = None  # judged on what it has from then on
    fired: bool = False
    revision: int = 0  # grows with every change of the payload
    # Once provisioned: its baseline, change orders and amendments (streams/deals/amendments.py)
    amendments: Amendments | None = None

    @property
    def correlation_id(self) -> str:
        return self.opportunity.correlation_id if self.opportunity else ""

    def service_lines(self) -> tuple[str, ...]:
        """What the deal sells: the deal's own list, then any other line items name."""
        seen = list(self.opportunity.service_lines if self.opportunity else ())
        for line in sorted(self.lines.values(), key=lambda x: x.key):
            if line.service_line and line.service_line not in seen:
                seen.append(line.service_line)
        return tuple(seen)

    def all_milestones(self) -> tuple[Milestone, ...]:
        """Milestones recorded on their own, else those agreed in the deal record."""
        own = tuple(self.milestones.values())
        chosen = own or (self.opportunity.milestones if self.opportunity else ())
        return tuple(sorted(chosen, key=lambda m: (m.due is None, m.due, m.name, m.key)))

    def complete(self) -> bool:
        """A line item for every service line of the deal (at least one line item)."""
        if self.opportunity is None or not self.lines:
            return False
        covered = {line.service_line for line in self.lines.values()}
        return all(s in covered for s in self.opportunity.service_lines)

    def waiting(self) -> bool:
        return not self.fired and self.wait_until is not None


class Signal(Enum):
    NONE = "none"
    FIRE = "fire"  # closed-won with a complete payload (or waited long enough): once
    CHANGED = "changed"  # a fired deal changed in the CRM


def _newer(version: int, held: int | None) -> bool:
    # -1: a delete whose position is unknown; it applies whenever it comes.
    return version < 0 or held is None or version > held


def on_opportunity(
    deal: Deal, partition: int, opp: Opportunity | None, stamp: Stamp, now: float, wait: float
) -> tuple[Deal, bool]:
    """The deal after an opportunity event; True if its payload changed."""
    if not _newer(stamp.version, deal.version if deal.version >= 0 else None):
        return deal, False
    version = max(deal.version, stamp.version)
    if opp == deal.opportunity:
        return dataclasses.replace(deal, version=version, partition=partition), False
    changed = dataclasses.replace(
        deal, opportunity=opp, version=version, partition=partition, revision=deal.revision + 1
    )
    if deal.fired:
        return changed, True
    if opp is not None and opp.closed_won:
        if deal.closed_won_at is None:
            at = stamp.committed_at or now
            changed = dataclasses.replace(changed, closed_won_at=at, wait_until=now + wait)
    else:
        changed = dataclasses.replace(changed, closed_won_at=None, wait_until=None)
    return changed, True


def on_child(deal: Deal, partition: int, child: Child, stamp: Stamp) -> tuple[Deal, bool]:
    """The deal after a line item or milestone event; True if its payload changed."""
    held = deal.child_versions.get(child.key)
    if not _newer(stamp.version, held):
        return deal, False
    versions = {**deal.child_versions, child.key: max(stamp.version, held or -1)}
    lines = dict(deal.lines)
    milestones = dict(deal.milestones)
    if child.line is not None:
        lines[child.key] = child.line
    elif child.milestone is not None:
        milestones[child.key] = child.milestone
    else:  # a delete
        lines.pop(child.key, None)
        milestones.pop(child.key, None)
    changed = lines != deal.lines or milestones != deal.milestones
    return (
        dataclasses.replace(
            deal,
            partition=partition,
            lines=lines,
            milestones=milestones,
            child_versions=versions,
            revision=deal.revision + (1 if changed else 0),
        ),
        changed,
    )


def decide(deal: Deal, now: float, customer_known: bool, changed: bool) -> Signal:
    """What the deal's state calls for now."""
    if deal.fired:
        return Signal.CHANGED if changed else Signal.NONE
    opp = deal.opportunity
    if opp is None or not opp.closed_won:
        return Signal.NONE
    if deal.complete() and customer_known:
        return Signal.FIRE
    if deal.wait_until is not None and now >= deal.wait_until:
        return Signal.FIRE
    return Signal.NONE


def fire(deal: Deal) -> Deal:
    return dataclasses.replace(deal, fired=True, wait_until=None)
