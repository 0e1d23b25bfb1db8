"""The way to one application's API: bounded concurrency, a request rate, patient retries.

Every write pssync makes to an application (ERP, PSA, CRM) passes one `Throttle` per
application, so a burst of work never exceeds what the application's owners allow: at most
`concurrency` requests at once, at most `rate` requests per second (token bucket), and an
unavailable application (timeouts, 429, 5xx, refused connections) retried with capped,
jittered backoff for `retry_for` seconds before giving up loudly. Nothing is dropped: callers
wait (backpressure) instead.

While the application is down the throttle's circuit is open: only callers already retrying
probe it (with their backoff), new ones wait for the circuit instead of adding requests to a
failing application; the first request that gets an answer closes it and the waiting work
drains at `rate`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from streams.errors import ApplicationUnavailableError, PssyncError

log = logging.getLogger(__name__)
T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def is_unavailable(exc: BaseException) -> bool:
    """Worth retrying as is: the application did not answer or said it is busy."""
    # Adapters map HTTP 429/5xx to ApplicationUnavailableError; a connection that fails below
    # them (refused, reset, timed out) is the same situation.
    return isinstance(
        exc, ApplicationUnavailableError | OSError | TimeoutError | httpx.TransportError
    )


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; waiters are served in order."""

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"token bucket needs rate > 0 and burst >= 1 (got {rate}, {burst})")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = burst
        self._updated = clock()
        self._lock = asyncio.Lock()  # FIFO: no waiter is starved by later ones

    async def take(self, cost: float = 1.0) -> float:
        """Wait for `cost` tokens (at most `burst`); returns the seconds waited (0.0 when they
        were there)."""
        cost = min(max(cost, 0.0), self.burst)
        waited = 0.0
        async with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= cost:
                    self._tokens -= cost
                    return waited
                wait = (cost - self._tokens) / self.rate
                await self._sleep(wait)
                waited += wait


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: attempt n waits between half and all of
    min(cap, first * 2**n), so retries of many callers spread out instead of arriving together."""

    first: float = 0.5
    cap: float = 10.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.cap, self.first * 2 ** min(attempt, 32))
        return rng.uniform(ceiling / 2, ceiling)


class Throttle:
    """One application's limits; `call` runs one request under them, retrying while it is down."""

    def __init__(
        self,
        name: str,
        concurrency: int,
        rate: float,
        retry_for: float,
        backoff: Backoff = Backoff(),
        *,
        on_wait: Callable[[float], None] | None = None,
        on_in_flight: Callable[[int], None] | None = None,
        on_circuit: Callable[[bool], None] | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.retry_for = retry_for
        self.backoff = backoff
        # A full set of concurrent callers may start together; after that, `rate` per second.
        burst = max(1.0, float(concurrency))
        self.bucket = TokenBucket(rate, burst, clock=clock, sleep=sleep)
        self._slots = asyncio.Semaphore(concurrency)
        self._on_wait = on_wait
        self._on_in_flight = on_in_flight
        self._on_circuit = on_circuit
        self._closed = asyncio.Event()  # set: the application answers (circuit closed)
        self._closed.set()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.in_flight = 0

    def _flying(self, delta: int) -> None:
        self.in_flight += delta
        if self._on_in_flight:
            self._on_in_flight(self.in_flight)

    @property
    def circuit_open(self) -> bool:
        return not self._closed.is_set()

    def _circuit(self, closed: bool) -> None:
        if closed == self._closed.is_set():
            return
        if closed:
            self._closed.set()
            log.info("%s answers again; resuming", self.name)
        else:
            self._closed.clear()
            log.warning("%s unavailable: new requests wait until it answers", self.name)
        if self._on_circuit:
            self._on_circuit(not closed)

    async def call(
        self,
        request: Callable[[], Awaitable[T]],
        on_retry: Callable[[], None] | None = None,
        cost: float = 1.0,
    ) -> T:
        """`request()` within the limits; ApplicationUnavailableError once `retry_for` is spent.

        `cost`: how many requests `request()` makes (a batch operation makes several), taken
        from the rate as one (at most `concurrency` at once). Any error that `is_unavailable`
        does not accept is the caller's to handle, at once.
        """
        deadline: float | None = None
        attempt = 0
        while True:
            if attempt == 0:
                await self._closed.wait()  # the circuit: wait while others probe
            async with self._slots:
                waited = await self.bucket.take(cost)
                if waited and self._on_wait:
                    self._on_wait(waited)
                self._flying(+1)
                try:
                    answer = await request()
                except Exception as exc:
                    if not is_unavailable(exc):
                        self._circuit(closed=True)  # it answered, if only to refuse
                        raise
                    error: Exception = exc
                else:
                    self._circuit(closed=True)
                    return answer
                finally:
                    self._flying(-1)
            self._circuit(closed=False)
            # Back off outside the slot: callers with other work may use it meanwhile.
            now = self._clock()
            deadline = now + self.retry_for if deadline is None else deadline
            delay = self.backoff.delay(attempt, self._rng)
            attempt += 1
            if now + delay > deadline:
                self._circuit(closed=True)  # let the waiting callers find out for themselves
                raise ApplicationUnavailableError(
                    self.name,
                    f"unavailable for {self.retry_for:.0f}s ({attempt} attempts), last: "
                    f"{_one_line(error)}; bring it back (or fix the address/credentials) and "
                    "restart the worker, nothing was skipped",
                ) from error
            log.warning("%s unavailable, retrying in %.1fs: %s", self.name, delay, _one_line(error))
            if on_retry:
                on_retry()
            await self._sleep(delay)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:300]
    # pssync's own errors already say which application and what happened.
    return text if isinstance(exc, PssyncError) else f"{type(exc).__name__}: {text}"
