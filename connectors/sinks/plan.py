"""Plans how one batch of canonical events reaches a keyed target, target-agnostic.

The target keeps, per key, the newest live image and the newest delete it has seen, each
with its version; the row is deleted when its newest delete is at least as new as its
newest live image. Merging "newest of each kind" is commutative and idempotent, so a key's
events can be folded into one image per batch and applied in any batch split, in any
order, any number of times: the result is what applying them one by one in version order
gives. A key therefore appears at most once per statement, whatever mix of creates,
updates, deletes and duplicates the batch holds.

Tombstones of unknown version (a compacted topic's tombstone whose delete was compacted
away) are the exception: they delete "whatever the row holds now", so their place in the
stream matters. A batch is cut into waves so that a key's tombstone is applied after the
key's earlier events and before its later ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]


def version(ev: Event) -> int:
    return int(ev["envelope"]["entity_version"])


def is_blind(ev: Event) -> bool:
    """A delete whose version is unknown (entity_version -1)."""
    return ev.get("data") is None and version(ev) < 0


@dataclass
class KeyImage:
    """What a wave does to one key: its newest live event and its newest delete."""

    key: str
    live: Event | None = None
    dead: Event | None = None

    def add(self, ev: Event) -> None:
        if ev.get("data") is None:
            if self.dead is None or version(ev) > version(self.dead):
                self.dead = ev
        elif self.live is None or version(ev) > version(self.live):
            self.live = ev

    @property
    def live_version(self) -> int | None:
        return None if self.live is None else version(self.live)

    @property
    def dead_version(self) -> int | None:
        return None if self.dead is None else version(self.dead)

    @property
    def newest(self) -> Event:
        """The event whose bookkeeping (position, ids) the row shows."""
        candidates = [e for e in (self.live, self.dead) if e is not None]
        return max(candidates, key=version)

    @property
    def deleted(self) -> bool:
        dead, live = self.dead_version, self.live_version
        return dead is not None and (live is None or dead >= live)


@dataclass
class Wave:
    """One upsert of key images, then the blind deletes, in that order."""

    images: dict[str, KeyImage] = field(default_factory=dict)
    blind: list[str] = field(default_factory=list)


def plan_batch(events: Sequence[Event]) -> list[Wave]:
    waves = [Wave()]
    for ev in events:
        key = ev["key"]
        wave = waves[-1]
        if key in wave.blind:
            # This key's tombstone must land before this later event: start a new wave.
            wave = Wave()
            waves.append(wave)
        if is_blind(ev):
            wave.blind.append(key)
        else:
            wave.images.setdefault(key, KeyImage(key)).add(ev)
    return [w for w in waves if w.images or w.blind]
