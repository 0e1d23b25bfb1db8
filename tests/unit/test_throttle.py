"""The per-application throttle: token-bucket rate, concurrency bound, retry classification."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from connectors.throttle import Backoff, Throttle, TokenBucket, is_unavailable
from streams.errors import ApplicationUnavailableError, CommandRejectedError


class FakeTime:
    """A clock that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def test_bucket_spaces_requests_at_the_rate_after_the_burst() -> None:
    t = FakeTime()

    async def run() -> list[float]:
        bucket = TokenBucket(rate=10, burst=2, clock=t.clock, sleep=t.sleep)
        return [await bucket.take() for _ in range(6)]

    waited = asyncio.run(run())
    assert waited[:2] == [0.0, 0.0]  # the burst
    assert waited[2:] == pytest.approx([0.1] * 4)
    assert t.now == pytest.approx(0.4)


def test_bucket_refills_while_idle_but_never_beyond_the_burst() -> None:
    t = FakeTime()

    async def run() -> list[float]:
        bucket = TokenBucket(rate=1, burst=3, clock=t.clock, sleep=t.sleep)
        for _ in range(3):
            await bucket.take()
        t.now += 100  # long idle: three tokens saved, not a hundred
        return [await bucket.take() for _ in range(4)]

    assert asyncio.run(run()) == pytest.approx([0.0, 0.0, 0.0, 1.0])


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    b = Backoff(first=0.5, cap=4.0)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0), (500, 4.0)]:
        delays = {b.delay(attempt, rng) for _ in range(20)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ApplicationUnavailableError("erp", "HTTP 503"), True),
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError(), True),
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
        (CommandRejectedError("erp", "code already used by another party"), False),
        (ValueError("bug"), False),
    ],
)
def test_classification(error: Exception, retried: bool) -> None:
    assert is_unavailable(error) is retried


def _throttle(t: FakeTime, retry_for: float = 30.0, concurrency: int = 1) -> Throttle:
    return Throttle(
        "erp",
        concurrency,
        rate=1000,
        retry_for=retry_for,
        backoff=Backoff(0.5, 4.0),
        clock=t.clock,
        sleep=t.sleep,
        rng=random.Random(1),
    )


def test_unavailable_is_retried_until_it_answers() -> None:
    t = FakeTime()
    calls: list[int] = []
    retries: list[int] = []

    async def request() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise ApplicationUnavailableError("erp", "HTTP 503")
        return "ok"

    result = asyncio.run(_throttle(t).call(request, on_retry=lambda: retries.append(1)))
    assert result == "ok" and len(calls) == 4 and len(retries) == 3
    assert all(0.25 <= s <= 4.0 for s in t.sleeps if s > 0.01)


def test_rejection_and_bugs_are_not_retried() -> None:
    t = FakeTime()
    for error in (CommandRejectedError("erp", "no"), KeyError("x")):
        calls: list[int] = []

        async def request(error: Exception = error, calls: list[int] = calls) -> None:
            calls.append(1)
            raise error

        with pytest.raises(type(error)):
            asyncio.run(_throttle(t).call(request))
        assert len(calls) == 1


def test_gives_up_after_retry_for_with_a_reason() -> None:
    t = FakeTime()

    async def request() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(ApplicationUnavailableError) as caught:
        asyncio.run(_throttle(t, retry_for=20).call(request))
    message = str(caught.value)
    assert message.startswith("erp: unavailable for 20s")
    assert "ConnectionRefusedError" in message and "nothing was skipped" in message
    assert t.now <= 20.0


def test_at_most_concurrency_requests_at_once() -> None:
    async def run() -> int:
        throttle = Throttle("psa", 3, rate=10_000, retry_for=1)
        flying, peak = 0, 0

        async def request() -> None:
            nonlocal flying, peak
            flying += 1
            peak = max(peak, flying)
            await asyncio.sleep(0.005)
            flying -= 1

        await asyncio.gather(*(throttle.call(request) for _ in range(12)))
        assert throttle.in_flight == 0
        return peak

    assert asyncio.run(run()) == 3
