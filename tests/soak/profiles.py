"""Soak sizes: how hard the workload pushes and which faults hit when (seeded)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum


class FaultKind(Enum):
    WORKER_KILL = "worker SIGKILL"
    BROKER_KILL = "broker SIGKILL"
    CONNECT_KILL = "connect SIGKILL"
    TARGET_OUTAGE = "target refuses connections"
    REBALANCE_KILL = "rebalance (1 of 2 SIGKILLed)"

    @property
    def needs_steady_group(self) -> bool:
        # A worker restarted after SIGKILL waits for the dead member's session to expire
        # (PSSYNC_SESSION_TIMEOUT) before it is Ready. Faults that touch the group or the
        # broker wait for that; target and Connect faults may overlap it.
        return self in (FaultKind.BROKER_KILL, FaultKind.REBALANCE_KILL, FaultKind.WORKER_KILL)


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the workload started, at the earliest
    kind: FaultKind
    outage: float  # seconds a killed component stays down (target: refusing connections)


@dataclass(frozen=True)
class Profile:
    name: str
    ops_per_second: float
    poison_ratio: float  # share of workload operations that produce one poison event
    tail: float  # seconds the workload goes on after the last fault
    converge_timeout: float
    faults: tuple[Fault, ...]

    def planned(self) -> dict[FaultKind, int]:
        return {k: sum(1 for f in self.faults if f.kind is k) for k in FaultKind}


def _schedule(
    rng: random.Random, kinds: list[FaultKind], first: float, gap: float, outage: float
) -> tuple[Fault, ...]:
    faults, at = [], first
    for kind in kinds:
        faults.append(Fault(round(at, 1), kind, outage))
        at += gap + rng.uniform(-0.2, 0.2) * gap
    return tuple(faults)


def short(rng: random.Random) -> Profile:
    K = FaultKind
    # Connect and target faults may overlap the first worker's rejoin; ~5 minutes in all.
    kinds = [K.WORKER_KILL, K.CONNECT_KILL, K.TARGET_OUTAGE, K.BROKER_KILL, K.WORKER_KILL,
             K.REBALANCE_KILL]
    return Profile("short", 12.0, 0.01, 10.0, 120.0, _schedule(rng, kinds, 10.0, 18.0, 8.0))


def long(rng: random.Random) -> Profile:
    K = FaultKind
    others = [K.BROKER_KILL, K.CONNECT_KILL, K.TARGET_OUTAGE, K.REBALANCE_KILL] * 2
    rng.shuffle(others)
    kinds: list[FaultKind] = []
    for i in range(10):  # ten worker kills, the other faults spread between them
        kinds.append(K.WORKER_KILL)
        if i < len(others):
            kinds.append(others[i])
    return Profile("long", 12.0, 0.01, 30.0, 360.0, _schedule(rng, kinds, 15.0, 40.0, 20.0))


PROFILES = {"short": short, "long": long}
