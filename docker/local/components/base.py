"""What every component of the local stack shares: the `Component` interface, the process
handling (spawn, pid file, stop), readiness polling, and the "already there" variant."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from streams.errors import StackError
from streams.settings import Settings

HERE = Path(__file__).resolve().parent.parent  # docker/local


def log(msg: str) -> None:
    print(f"[stack] {msg}", flush=True)


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        req = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(req, timeout=2) as resp:
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def as_user(user: str | None) -> dict[str, object]:
    """Popen arguments that run a child as `user` with that user's own groups (Popen's
    `user=` alone would keep root's groups)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {
        "user": entry.pw_uid,
        "group": entry.pw_gid,
        "extra_groups": os.getgrouplist(user, entry.pw_gid),
    }


def run(cmd: list[str], what: str, log_file: Path, **kw: object) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise StackError(
            f"{what} failed (exit {proc.returncode}). Command: {' '.join(cmd)}\n"
            f"Last lines of {log_file}:\n{tail(log_file)}"
        )


def make_dirs(path: Path, mode: int = 0o755) -> None:
    """mkdir -p; folders it creates get `mode` whatever the umask, so another user can
    traverse them."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for p in missing:
        p.chmod(mode)


def write_secret(path: Path, value: str) -> None:
    """A secret only its owner can read, in a folder only its owner can open."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    path.chmod(0o600)


@dataclass(frozen=True)
class Context:
    """Where one stack keeps its things, shared by all its components."""

    settings: Settings
    dir: Path
    logs: Path
    run_dir: Path
    lib: Path
    conf: Path
    secrets: Path

    @classmethod
    def of(cls, settings: Settings) -> Context:
        d = settings.stack_dir
        return cls(settings, d, d / "logs", d / "run", d / "lib", d / "conf", d / "secrets")

    def make_dirs(self) -> None:
        for d in (self.logs, self.run_dir, self.lib, self.conf):
            d.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class Status:
    name: str
    state: str  # up | down | starting/hung | external up | external down
    where: str  # "port N" or the URL of a system the stack does not run
    pid: int | None
    log: Path | None

    @property
    def ok(self) -> bool:
        return self.state in ("up", "external up")

    def line(self) -> str:
        return (
            f"{self.name:<10} {self.state:<14} {self.where:<11} pid {self.pid or '-':<8} "
            f"log {self.log or '-'}"
        )


class Component(Protocol):
    """One service of the stack. `up` = install, start, wait_ready; `down` = stop."""

    name: str

    @property
    def log_path(self) -> Path | None: ...

    def install(self) -> None:
        """Fetch what is missing (packages, jars); quick when everything is there."""

    def start(self) -> None:
        """Start the service unless it already runs; returns once it is launched."""

    def ready(self) -> bool:
        """One readiness probe over the service's real protocol."""

    def wait_ready(self) -> float:
        """Poll `ready` with a timeout; seconds it took. Raises StackError naming the log."""

    def stop(self) -> None: ...

    def status(self) -> Status: ...

    def clean(self) -> None:
        """Remove what the component keeps outside the stack folder."""


class Process:
    """A server process started by the stack: pid file, log, start and stop."""

    def __init__(self, name: str, port: int, log: Path, pid_file: Path) -> None:
        self.name = name
        self.port = port
        self.log = log
        self.pid_file = pid_file
        self.proc: subprocess.Popen[bytes] | None = None

    def pid(self) -> int | None:
        # A child we started that has exited is a zombie until reaped: os.kill would
        # still find it, so ask the Popen handle first.
        if self.proc is not None and self.proc.poll() is not None:
            return None
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def running(self) -> bool:
        return self.pid() is not None and port_open(self.port)

    def ensure_port_free(self, env_var: str) -> None:
        pid = self.pid()
        if pid is not None and not port_open(self.port):
            # Starting a second one on the same data (another port) would break the first.
            raise StackError(
                f"{self.name} of this stack folder already runs (pid {pid}) but not on port "
                f"{self.port}: it was started with another {env_var}, or is still starting; "
                f"stop it with `make down` under the ports it was started with, or use those"
            )
        if pid is None and port_open(self.port):
            raise StackError(
                f"{self.name}: port {self.port} is already in use by another process (another "
                f"stack from a different folder?); stop it, or set {env_var} to a free port"
            )

    def spawn(
        self,
        cmd: list[str],
        env: dict[str, str] | None = None,
        user: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        # The log is opened here, by us, so it stays in the stack folder even when the child
        # runs as a user that cannot reach it.
        out = self.log.open("ab")
        kwargs = as_user(user)
        proc = subprocess.Popen(  # type: ignore[call-overload]
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
            **kwargs,
        )
        self.proc = proc
        self.pid_file.write_text(str(proc.pid))

    def wait(self, ready: Callable[[], bool], timeout: float) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if ready():
                return time.monotonic() - start
            if self.pid() is None:
                raise StackError(
                    f"{self.name} exited during start-up. "
                    f"Last lines of {self.log}:\n{tail(self.log)}"
                )
            time.sleep(0.3)
        raise StackError(
            f"{self.name} did not become ready within {timeout:.0f}s on port {self.port}. "
            f"Last lines of {self.log}:\n{tail(self.log)}"
        )

    def stop(self, timeout: float = 30) -> None:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        log(f"stopping {self.name} (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.2)
        if self.pid() is not None:
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> Status:
        pid = self.pid()
        state = "up" if self.running() else ("starting/hung" if pid else "down")
        return Status(self.name, state, f"port {self.port}", pid, self.log)


class Managed:
    """A component the stack runs itself; subclasses say how to launch and probe it."""

    name = "component"
    port_env = "PSSYNC_?_PORT"
    ready_timeout = 60.0

    def __init__(self, ctx: Context, port: int) -> None:
        self.ctx = ctx
        self.s = ctx.settings
        self.process = Process(
            self.name, port, ctx.logs / f"{self.name}.log", ctx.run_dir / f"{self.name}.pid"
        )

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def log_path(self) -> Path | None:
        return self.process.log

    def install(self) -> None:
        return None

    def start(self) -> None:
        if self.process.running():
            log(f"{self.name} already running on {self.port}")
            return
        self.process.ensure_port_free(self.port_env)
        self.launch()

    def launch(self) -> None:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def wait_ready(self) -> float:
        took = self.process.wait(self.ready, self.ready_timeout)
        log(f"{self.name} ready on {self.port} in {took:.1f}s")
        return took

    def stop(self) -> None:
        self.process.stop()

    def status(self) -> Status:
        return self.process.status()

    def clean(self) -> None:
        return None


class External:
    """A system the user runs (PSSYNC_<X>_URL set): the stack neither installs, starts nor
    stops it, it only checks that it answers."""

    def __init__(self, name: str, url: str, probe: Callable[[], bool], timeout: float = 30):
        self.name = name
        self.url = url
        self.probe = probe
        self.timeout = timeout

    @property
    def log_path(self) -> Path | None:
        return None

    def install(self) -> None:
        return None

    def start(self) -> None:
        log(f"{self.name}: using the one at {self.url} (not started by the stack)")

    def ready(self) -> bool:
        return self.probe()

    def wait_ready(self) -> float:
        start = time.monotonic()
        while time.monotonic() - start < self.timeout:
            if self.probe():
                took = time.monotonic() - start
                log(f"{self.name} at {self.url} answers")
                return took
            time.sleep(1)
        raise StackError(
            f"{self.name} at {self.url} does not answer as the integration user within "
            f"{self.timeout:.0f}s; check the URL and the integration credentials (see README)"
        )

    def stop(self) -> None:
        return None

    def status(self) -> Status:
        state = "external up" if self.probe() else "external down"
        return Status(self.name, state, self.url, None, None)

    def clean(self) -> None:
        return None
