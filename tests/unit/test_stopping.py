"""A worker's stop is bounded: a stop that hangs ends in exit code 3 with the stacks printed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from streams.stopping import EXIT_CRASHED, one_line

# A worker whose one service never finishes stopping (as a commit queued to a stopped
# client thread never did), crashed by that service a moment after it starts.
HANGING = textwrap.dedent(
    """
    import asyncio
    from mode import Service, Worker
    from streams.stopping import BoundedStop

    class Hangs(Service):
        async def on_started(self):
            self.add_future(self._fail())

        async def _fail(self):
            await asyncio.sleep(0.2)
            await self.crash(RuntimeError("target gone"))

        async def on_stop(self):
            await asyncio.Event().wait()

    class W(BoundedStop, Worker):
        pass

    W(Hangs(), stop_timeout={timeout}, quiet=True).execute_from_commandline()
    """
)


def _run(timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", HANGING.format(timeout=timeout)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, time.monotonic() - began


def test_a_stop_that_hangs_exits_with_code_3_and_prints_where_it_hangs() -> None:
    done, took = _run(1.0)
    assert done.returncode == EXIT_CRASHED, done.stderr[-2000:]
    assert took < 30
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("pssync worker stopped: still stopping 1s later after RuntimeError")
    assert "target gone" in last and "PSSYNC_STOP_TIMEOUT" in last
    # The asyncio task the stop waits on, and every thread's stack.
    assert "in on_stop" in done.stderr
    assert "Thread 0x" in done.stderr or "Current thread 0x" in done.stderr


def test_one_line_keeps_the_class_and_folds_the_message() -> None:
    assert one_line(RuntimeError("a\n  b")) == "RuntimeError: a b"
    assert one_line(KeyError()) == "KeyError"
