"""Applies a batch to any target: retry what is the target's fault, isolate what is a record's.

A target fault (connection lost, database down, privileges) is retried with capped
backoff for a bounded time and never dead-letters anything. Any other error is assumed to
be caused by some record: the batch is bisected until the records that fail alone are
found; they are returned for the dead-letter topic and the rest is applied. A batch in
which every record fails alone (and not with a bad-data error) is the target's fault after
all: one bad config must not dead-letter a whole topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from connectors.sinks.base import Event, Target, Write
from streams.errors import DeliveryError, SinkError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Outcome:
    writes: list[Write] = field(default_factory=list)
    rejected: list[tuple[Event, BaseException]] = field(default_factory=list)
    statements: int = 0  # apply calls made, bisection included


@dataclass(frozen=True)
class RetryPolicy:
    retry_for: float = 600.0  # seconds a target fault is retried before the worker stops
    first_delay: float = 0.5
    max_delay: float = 10.0


class _RecordFault(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def retry_target(
    target: Target,
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy = RetryPolicy(),
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Await `call()`, retrying while the target is at fault; anything else propagates."""
    delay, deadline = policy.first_delay, time.monotonic() + policy.retry_for
    while True:
        try:
            return await call()
        except DeliveryError:
            raise  # Kafka, not the target nor a record: the worker stops, nothing acked
        except Exception as exc:
            if isinstance(exc, _RecordFault) or not target.is_target_fault(exc):
                raise
            if time.monotonic() + delay > deadline:
                raise SinkError(
                    f"target {target.describe()} failed for {policy.retry_for:.0f}s: "
                    f"{_one_line(exc)}; fix the target and restart, nothing was skipped"
                ) from exc
            log.warning("sink: target fault, retrying in %.1fs: %s", delay, _one_line(exc))
            if on_retry:
                on_retry()
            await asyncio.sleep(delay)
            delay = min(delay * 2, policy.max_delay)


async def apply_isolating(
    target: Target,
    events: Sequence[Event],
    policy: RetryPolicy = RetryPolicy(),
    on_retry: Callable[[], None] | None = None,
) -> Outcome:
    outcome = Outcome()

    async def attempt(batch: Sequence[Event]) -> list[Write]:
        # One transaction; target faults are retried, anything else is a record fault.
        async def once() -> list[Write]:
            outcome.statements += 1
            try:
                return await target.apply(batch)
            except DeliveryError:
                raise  # Kafka, not the target nor a record: the worker stops, nothing acked
            except Exception as exc:
                if target.is_target_fault(exc):
                    raise
                raise _RecordFault(exc) from exc

        return await retry_target(target, once, policy, on_retry)

    async def isolate(batch: Sequence[Event]) -> None:
        try:
            outcome.writes += await attempt(batch)
        except _RecordFault as fault:
            if len(batch) == 1:
                outcome.rejected.append((batch[0], fault.cause))
                return
            # Halves in order keep each key's events in arrival order.
            mid = len(batch) // 2
            await isolate(batch[:mid])
            await isolate(batch[mid:])

    await isolate(events)
    if len(events) > 1 and len(outcome.rejected) == len(events):
        errors = [e for _, e in outcome.rejected]
        if not all(target.is_data_fault(e) for e in errors):
            raise SinkError(
                f"every record of a batch of {len(events)} fails on target {target.describe()}: "
                f"{_one_line(errors[0])}; this is the target's state, not the data: fix it and "
                "restart, nothing was skipped"
            )
    if outcome.rejected:
        log.warning(
            "sink: isolated %d bad record(s) of %d in %d statements",
            len(outcome.rejected),
            len(events),
            outcome.statements,
        )
    return outcome


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0] if text else ''}"
