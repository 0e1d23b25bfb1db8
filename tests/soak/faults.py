"""Fault injection on the local stack: SIGKILL workers, the broker and Connect; refuse the target.

Only processes whose pid files are in this clone's stack folder are ever signalled, and only
after their command line proves they belong to it. Killed components come back through
`stack.py up`, which is idempotent and starts only what is not running.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import text

from connectors.kafka_connect import ConnectClient
from streams.errors import ConnectError, StackError
from tests.sandbox import REPO, Sandbox, admin_engine
from tests.soak.events import EventLog
from tests.soak.profiles import Fault, FaultKind
from tests.soak.workers import Pool

STACK = REPO / "docker" / "local" / "stack.py"
# What the slice runs on; the ERP and PSA of the local stack play no part in the soak.
SLICE_COMPONENTS = "postgres,kafka,registry,connect"
REBALANCE_OVERLAP = 10.0  # seconds both workers share the group before one is killed


class Injector:
    def __init__(self, sandbox: Sandbox, pool: Pool, events: EventLog, stack_log: Path,
                 rng: random.Random) -> None:
        self.sandbox = sandbox
        self.settings = sandbox.settings
        self.pool = pool
        self.events = events
        self.stack_log = stack_log
        self.rng = rng
        self.injected: Counter[FaultKind] = Counter()
        self.problems: list[str] = []  # recoveries that did not happen as they should
        self._target_closed = False

    # ---------------------------------------------------------------- stack processes
    def _pid(self, component: str) -> int:
        run_dir = self.settings.stack_dir / "run"
        pid = int((run_dir / f"{component}.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if str(self.settings.stack_dir).encode() not in cmdline:
            raise StackError(f"pid {pid} in {run_dir} is not this stack's {component}; not killing")
        return pid

    def _sigkill(self, component: str) -> int:
        pid = self._pid(component)
        os.killpg(pid, signal.SIGKILL)  # the stack starts each component in its own session
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        return pid

    def _stack_up(self) -> None:
        with self.stack_log.open("ab") as out:
            proc = subprocess.run(
                [sys.executable, str(STACK), "up", "--only", SLICE_COMPONENTS],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, timeout=300, check=False,
            )
        if proc.returncode != 0:
            raise StackError(f"stack.py up failed (exit {proc.returncode}); see {self.stack_log}")

    def _connector_running(self) -> None:
        try:
            ConnectClient(self.settings.connect_url).wait_running(self.sandbox.connector, 120)
        except ConnectError as exc:
            self.problems.append(f"connector after restart: {exc}")
            self.events.step(f"PROBLEM connector not running: {exc}")

    # ---------------------------------------------------------------- faults
    def inject(self, fault: Fault) -> None:
        kind = fault.kind
        self.events.step(f"fault {sum(self.injected.values()) + 1}: {kind.value}"
                         + (f" for {fault.outage:.0f}s" if kind in _OUTAGES else ""))
        if kind is FaultKind.WORKER_KILL:
            self._worker_kill()
        elif kind is FaultKind.BROKER_KILL:
            self._component_outage("kafka", fault.outage)
        elif kind is FaultKind.CONNECT_KILL:
            self._component_outage("connect", fault.outage)
            self._connector_running()
        elif kind is FaultKind.TARGET_OUTAGE:
            self._target_outage(fault.outage)
        else:
            self._rebalance_kill()
        self.injected[kind] += 1

    def _worker_kill(self) -> None:
        victim = self.rng.choice(self.pool.active)
        pid = victim.kill()
        self.events.step(f"  SIGKILLed {victim.name} (pid {pid}); its supervisor restarts it")

    def _component_outage(self, component: str, outage: float) -> None:
        pid = self._sigkill(component)
        self.events.step(f"  SIGKILLed {component} (pid {pid}); down for {outage:.0f}s")
        time.sleep(outage)
        self._stack_up()
        self.events.step(f"  {component} restarted")

    def _set_target(self, allow: bool) -> None:
        db = self.sandbox.target_db
        engine = admin_engine(self.settings)
        try:
            with engine.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS {str(allow).lower()}'))
                if not allow:
                    conn.execute(
                        text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = :db AND pid <> pg_backend_pid()"),
                        {"db": db},
                    )
        finally:
            engine.dispose()
        self._target_closed = not allow

    def _target_outage(self, outage: float) -> None:
        self._set_target(False)
        self.events.step(f"  target {self.sandbox.target_db} refuses connections, sessions ended")
        time.sleep(outage)
        self._set_target(True)
        self.events.step("  target accepts connections again")

    def _rebalance_kill(self) -> None:
        joiner = self.pool.add()
        if not self.pool.wait_ready(150):
            self.problems.append(f"{joiner.name} not Ready within 150s of joining")
        self.events.step(f"  {joiner.name} joined the group; both work for "
                         f"{REBALANCE_OVERLAP:.0f}s")
        time.sleep(REBALANCE_OVERLAP)
        victim = self.rng.choice(self.pool.active)
        pid = self.pool.retire(victim, kill=True)
        self.events.step(f"  SIGKILLed {victim.name} (pid {pid}) for good; the group rebalances")

    def restore(self) -> None:
        """After an interruption: the target accepts connections and the stack is up."""
        if self._target_closed:
            self._set_target(True)
        self._stack_up()


_OUTAGES = {FaultKind.BROKER_KILL, FaultKind.CONNECT_KILL, FaultKind.TARGET_OUTAGE}
