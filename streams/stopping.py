"""A bound on how long a worker may take to stop.

A worker that hangs while stopping is worse than one that dies: a supervisor (systemd,
Kubernetes) sees a live process and never restarts it. pssync's own stop path commits,
flushes and closes within a few seconds; this bound is the backstop for a stop that waits on
something that will never answer (a stopped client thread, a broker that is gone). When it
expires, the process prints every thread's stack and its asyncio tasks to stderr and exits
with the crash code, without committing: what was processed since the last commit is
processed again after the restart.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
from typing import Any

from mode import Worker
from mode.utils.logging import cry

# A worker that stopped on an error it could not handle (the reason is its last line).
EXIT_CRASHED = 3


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class BoundedStop(Worker):
    """A worker whose stop, from a signal or a crash, ends within `stop_timeout` seconds."""

    def __init__(self, *args: Any, stop_timeout: float, **kwargs: Any) -> None:
        self.stop_timeout = stop_timeout
        self._deadline: threading.Timer | None = None
        super().__init__(*args, **kwargs)

    async def stop(self) -> None:
        if self._deadline is None:
            self._deadline = threading.Timer(self.stop_timeout, self._stuck)
            self._deadline.daemon = True
            self._deadline.start()
        await super().stop()

    def _stuck(self) -> None:
        # The loop's tasks say what the stop waits on; ask the loop itself to print them, it
        # is usually idle in such a hang. Thread stacks come from faulthandler either way.
        # The worker redirects sys.stderr into its log; these go to the real stream.
        err = sys.__stderr__ or sys.stderr
        printed = threading.Event()

        def tasks() -> None:
            try:
                cry(file=err)
            finally:
                printed.set()

        try:
            self.loop.call_soon_threadsafe(tasks)
            printed.wait(5.0)
        except RuntimeError:  # the loop is closed already
            pass
        faulthandler.dump_traceback(file=err, all_threads=True)
        after = f" after {one_line(self.crash_reason)}" if self.crash_reason else ""
        print(
            f"pssync worker stopped: still stopping {self.stop_timeout:.0f}s later{after}; "
            "exited without a clean stop (stacks above), what was processed since the last "
            "commit is processed again after a restart; raise PSSYNC_STOP_TIMEOUT if stops "
            "are legitimately slower",
            file=err,
            flush=True,
        )
        os._exit(EXIT_CRASHED)
