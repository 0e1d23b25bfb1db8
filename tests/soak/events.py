"""The soak's own timeline: every step with its time since the start, to a file and stdout."""

from __future__ import annotations

import threading
import time
from pathlib import Path


class EventLog:
    def __init__(self, path: Path, echo: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.echo = echo
        self.t0 = time.monotonic()
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def _write(self, msg: str, echo: bool) -> None:
        line = f"[soak {self.elapsed():7.1f}s] {msg}"
        with self._lock:
            with self.path.open("a") as f:
                f.write(line + "\n")
            if echo:
                print(line, flush=True)

    def step(self, msg: str) -> None:
        """A milestone: logged and shown."""
        self._write(msg, self.echo)

    def note(self, msg: str) -> None:
        """Detail: logged only."""
        self._write(msg, False)
