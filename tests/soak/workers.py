"""`pssync worker` processes under supervision: SIGKILLs on request, crashes counted.

A worker that exits without having been killed by the soak is a crash. It is restarted (after a
short pause, so a crash loop stays cheap) to let the soak measure convergence anyway, and the
crash with the error it logged goes into the report.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.sandbox import READY, Worker, free_port
from tests.soak.events import EventLog

CRASH_PAUSE = 3.0
READY_TIMEOUT = 150.0
STOP_GRACE = 15.0  # a worker that logged it is stopping must have exited by then
STOPPING = b"[^Worker]: Stopping..."
# Why a worker stopped: Faust's "Crashed reason=Error('message')" of the agent, else the first
# exception line of a traceback (later ones are usually shutdown noise such as a closed loop).
_CRASHED = re.compile(rb"Crashed reason=([A-Za-z_]\w*)\((.*)$", re.M)
_ERROR = re.compile(rb"^([A-Za-z_][\w.]*(?:Error|Exception|Violation|Failure)\w*): (.*)$", re.M)
_STOPPED = re.compile(rb"^pssync(?: worker stopped)?: (?:error: )?(.*)$", re.M)  # its last word


@dataclass(frozen=True)
class Crash:
    worker: str
    exit_code: int | None
    error: str
    at: float


def crash_reason(log: Path, since: int, exit_code: int | None = None) -> str:
    with log.open("rb") as f:
        f.seek(since)
        out = f.read()
    stopped = _STOPPED.search(out)
    tracebacks = _ERROR.findall(out)
    crashed = _CRASHED.search(out)
    if stopped:
        return stopped.group(1).decode(errors="replace")[:300]
    if tracebacks:
        name, message = tracebacks[0]
    elif crashed:
        name, message = crashed.groups()
    else:
        # Nothing said: a signal (negative exit code) or a silent exit. The last lines help.
        tail = [line for line in out.decode(errors="replace").splitlines() if line.strip()][-2:]
        return f"no exception in the log, exit code {exit_code}, last: {' | '.join(tail)[:300]}"
    return f"{name.decode()}: {message.decode(errors='replace')[:300]}"


class SupervisedWorker:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path, events: EventLog) -> None:
        self.name = name
        env = {**env, "PSSYNC_WEB_PORT": str(free_port()),
               "PSSYNC_DATA_DIR": str(log_dir / f"{name}-data")}
        self.worker = Worker(env, log_dir / f"{name}.log")
        self.events = events
        self.crashes: list[Crash] = []
        self.kills = 0
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._expected_exit = False
        self._wanted = True
        self._since = 0
        self._scan = 0
        self._stopping_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                pause = self.worker.proc is not None and self._watch()
                if not pause and self._wanted and not self.worker.alive():
                    self._expected_exit = False
                    self._stopping_at = None
                    self.ready.clear()
                    self._since = self._scan = self.worker.spawn()
                    pid = self.worker.proc.pid if self.worker.proc else None
                    self.events.note(f"{self.name} started (pid {pid})")
            self._stop.wait(CRASH_PAUSE if pause else 0.5)

    def _new_output(self) -> bytes:
        start = max(self._since, self._scan - 64)  # overlap: a marker split across two reads
        with self.worker.log.open("rb") as f:
            f.seek(start)
            data = f.read()
        self._scan = start + len(data)
        return data

    def _watch(self) -> bool:
        """Readiness and crashes of the running worker; True if it crashed (under the lock)."""
        data = self._new_output()
        alive = self.worker.alive()
        if alive and READY in data and not self.ready.is_set():
            self.ready.set()
            self.events.note(f"{self.name} ready")
        if self._expected_exit:
            return False
        if self._stopping_at is None and (b"Crashed reason=" in data or STOPPING in data):
            self._stopping_at = time.monotonic()
        hung = self._stopping_at is not None and time.monotonic() - self._stopping_at > STOP_GRACE
        if alive and not hung:
            return False
        reason = crash_reason(self.worker.log, self._since, self.worker.exit_code())
        if alive:  # stopped on its own but never exits: a crash all the same
            self.worker.kill()
            reason += f" (then hung in shutdown for {STOP_GRACE:.0f}s; SIGKILLed)"
        crash = Crash(self.name, self.worker.exit_code(), reason, self.events.elapsed())
        self.crashes.append(crash)
        self.events.step(f"CRASH {self.name} exit {crash.exit_code}: {crash.error}")
        self.worker.proc = None
        self.ready.clear()
        return True

    def kill(self) -> int | None:
        """SIGKILL the worker; it is restarted by the supervisor. Returns the killed pid."""
        with self._lock:
            pid = self.worker.proc.pid if self.worker.alive() and self.worker.proc else None
            self._expected_exit = True
            self.ready.clear()
            self.worker.kill()
            self.kills += 1
            return pid

    def retire(self, kill: bool) -> int | None:
        """Stop supervising: SIGKILL (a fault) or terminate (the end of the soak); the pid."""
        with self._lock:
            pid = self.worker.proc.pid if self.worker.alive() and self.worker.proc else None
            died = not self.worker.alive() and self.worker.proc is not None
            if died and not self._expected_exit:  # in the last moments: still a crash
                code = self.worker.exit_code()
                self.crashes.append(Crash(self.name, code,
                                          crash_reason(self.worker.log, self._since, code),
                                          self.events.elapsed()))
            self._wanted = False
            self._expected_exit = True
            self.ready.clear()
            if kill:
                self.worker.kill()
                self.kills += 1
            else:
                self.worker.stop()
        self._stop.set()
        return pid

    def wait_ready(self, timeout: float) -> bool:
        return self.ready.wait(timeout)

    def join(self) -> None:
        self._thread.join(READY_TIMEOUT + 10)


class Pool:
    """The workers of one consumer group."""

    def __init__(self, env: dict[str, str], log_dir: Path, events: EventLog) -> None:
        self.env = env
        self.log_dir = log_dir
        self.events = events
        self.active: list[SupervisedWorker] = []
        self.retired: list[SupervisedWorker] = []
        self._names = iter("abcdefghijklmnopqrstuvwxyz")

    def add(self) -> SupervisedWorker:
        w = SupervisedWorker(f"worker-{next(self._names)}", self.env, self.log_dir, self.events)
        self.active.append(w)
        w.start()
        return w

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(w.wait_ready(max(0.0, deadline - time.monotonic())) for w in self.active)

    def retire(self, w: SupervisedWorker, kill: bool) -> int | None:
        pid = w.retire(kill)
        self.active.remove(w)
        self.retired.append(w)
        return pid

    def all(self) -> list[SupervisedWorker]:
        return self.active + self.retired

    def crashes(self) -> list[Crash]:
        return sorted((c for w in self.all() for c in w.crashes), key=lambda c: c.at)

    def stop(self) -> None:
        for w in list(self.active):
            self.retire(w, kill=False)
        for w in self.all():
            w.join()
