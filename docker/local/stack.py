"""The local stack without a Docker engine: PostgreSQL, Kafka (KRaft), the schema registry and
Kafka Connect with Debezium, all from package registries, all under one project folder.

    python docker/local/stack.py up|down|status|install|clean [--only postgres,kafka,...]

Idempotent: `up` installs what is missing, starts what is not running and waits for each
component with a timeout; on failure it names the component and prints the tail of its log.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template

from streams.errors import StackError
from streams.settings import Settings

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
SOURCE_DATABASES = ("crm", "psa", "erp", "target", "registry")
APICURIO_VERSION = "3.3.3"
COMPONENTS = ("postgres", "kafka", "registry", "connect")  # start order
# As root, PostgreSQL runs as the postgres user, which may not reach the clone (e.g. under a
# 0700 /root): its clusters then live here, one folder per stack folder.
PG_HOME_BASE = Path("/var/lib/pssync")
# In each cluster folder: the stack folder it belongs to, so `clean` removes only its own.
PG_OWNER_FILE = "pssync.stack"


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


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def run(cmd: list[str], what: str, log_file: Path, **kw: object) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise StackError(
            f"{what} failed (exit {proc.returncode}). Command: {' '.join(cmd)}\n"
            f"Last lines of {log_file}:\n{tail(log_file)}"
        )


def stack_key(stack_dir: Path) -> str:
    """Name of one stack folder's cluster folder: the clone's name, readable, plus a hash of
    the resolved path, so two clones with the same name never share a cluster."""
    resolved = stack_dir.resolve()
    owner = resolved.parent if resolved.name == ".stack" else resolved
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", owner.name).strip(".-")[:32] or "stack"
    return f"{slug}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:12]}"


def in_clone_pg_data(stack_dir: Path) -> Path:
    return stack_dir / "postgres" / "data"


def outside_pg_data(stack_dir: Path, base: Path = PG_HOME_BASE) -> Path:
    return base / stack_key(stack_dir) / "postgres"


def pg_data_dir(
    stack_dir: Path, override: Path | None, as_postgres_user: bool, base: Path = PG_HOME_BASE
) -> Path:
    """Where this stack's PostgreSQL cluster lives.

    PSSYNC_PG_DATA_DIR wins. A cluster already in the clone stays there (moved out only if
    the postgres user cannot reach it, see Stack._move_unreachable_cluster). Otherwise the
    cluster is in the clone when PostgreSQL runs as the invoking user, and under `base` when
    it runs as the postgres user, which may not be able to traverse the clone's parents.
    """
    if override is not None:
        return override
    inside = in_clone_pg_data(stack_dir)
    if not as_postgres_user or (inside / "PG_VERSION").exists():
        return inside
    return outside_pg_data(stack_dir, base)


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


def make_dirs(path: Path, mode: int = 0o755) -> None:
    """mkdir -p; folders it creates get `mode` whatever the umask, so another user can
    traverse them."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for p in missing:
        p.chmod(mode)


def java_bin() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise StackError(
            "java not found: install a JDK 17+ (apt-get install openjdk-17-jre-headless)"
        )
    return found


def modern_java_bin() -> str:
    """A JDK >= 21: Apicurio Registry 3.x is compiled for Java 21."""
    override = os.environ.get("PSSYNC_REGISTRY_JAVA_HOME")
    candidates = [Path(override)] if override else []
    candidates += sorted(Path("/usr/lib/jvm").glob("*"), reverse=True)
    for home in candidates:
        java = home / "bin" / "java"
        if not java.exists():
            continue
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, check=False)
        digits = out.stderr.split('"')[1].split(".")[0] if '"' in out.stderr else "0"
        if digits.isdigit() and int(digits) >= 21:
            return str(java)
    raise StackError(
        "the schema registry needs Java 21 or newer and none is under /usr/lib/jvm; install one "
        "(e.g. a Temurin 21+ JDK) or set PSSYNC_REGISTRY_JAVA_HOME to its home"
    )


@dataclass
class Component:
    name: str
    port: int
    log: Path
    pid_file: Path
    proc: subprocess.Popen[bytes] | None = None

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
        if self.pid() is None and port_open(self.port):
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


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.dir = settings.stack_dir
        self.logs = self.dir / "logs"
        self.run_dir = self.dir / "run"
        self.lib = self.dir / "lib"
        self.conf = self.dir / "conf"
        p = settings.ports
        self.postgres = Component(
            "postgres", p.postgres, self.logs / "postgres.log", self.run_dir / "postgres.pid"
        )
        self.kafka = Component(
            "kafka", p.kafka, self.logs / "kafka.log", self.run_dir / "kafka.pid"
        )
        self.registry = Component(
            "registry", p.registry, self.logs / "registry.log", self.run_dir / "registry.pid"
        )
        self.connect = Component(
            "connect", p.connect, self.logs / "connect.log", self.run_dir / "connect.pid"
        )
        # Points at the cluster when it is outside the stack folder: for people, for `clean`,
        # and to find the cluster again after the clone moved (its hash changed).
        self.pg_link = self.dir / "postgres-cluster"
        self.pg_data = pg_data_dir(self.dir, settings.pg_data_dir, self._pg_user() is not None)
        if settings.pg_data_dir is None and not (self.pg_data / "PG_VERSION").exists():
            self.pg_data = self._cluster_of_moved_clone() or self.pg_data

    def components(self, only: tuple[str, ...] = COMPONENTS) -> list[Component]:
        by_name = {c.name: c for c in (self.postgres, self.kafka, self.registry, self.connect)}
        return [by_name[n] for n in COMPONENTS if n in only]

    # ---------------------------------------------------------------- install
    def install(self, only: tuple[str, ...] = COMPONENTS) -> None:
        for d in (self.logs, self.run_dir, self.lib, self.conf):
            d.mkdir(parents=True, exist_ok=True)
        if "postgres" in only:
            self._install_postgres()
        if set(only) - {"postgres"}:
            self._install_jars()

    def _pg_bin(self) -> Path | None:
        base = Path("/usr/lib/postgresql")
        versions = sorted(
            (d for d in base.glob("*") if (d / "bin" / "postgres").exists()),
            key=lambda d: int(d.name) if d.name.isdigit() else 0,
        )
        return versions[-1] / "bin" if versions else None

    def _install_postgres(self) -> None:
        if self._pg_bin() is not None:
            return
        if os.geteuid() != 0:
            raise StackError(
                "PostgreSQL is not installed; run `sudo apt-get install -y postgresql`"
            )
        log("installing PostgreSQL from Debian packages (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update"], "apt-get update", self.logs / "install.log", env=env)
        run(
            ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"],
            "apt-get install postgresql",
            self.logs / "install.log",
            env=env,
        )
        if self._pg_bin() is None:
            raise StackError(
                "apt-get installed postgresql but no server binary is under /usr/lib/postgresql"
            )

    def _install_jars(self) -> None:
        stamp = hashlib.sha256(POM.read_bytes()).hexdigest()[:16]
        marker = self.lib / ".installed"
        if marker.exists() and marker.read_text() == stamp:
            return
        if not shutil.which("mvn"):
            raise StackError("Maven (mvn) not found: install it (apt-get install -y maven)")
        log("resolving Kafka, Kafka Connect, Debezium and the schema registry from Maven Central")
        kafka_libs = self.lib / "kafka"
        plugin = self.lib / "plugins" / "debezium-connector-postgres"
        for d in (kafka_libs, plugin):
            shutil.rmtree(d, ignore_errors=True)
        mvn = ["mvn", "-q", "-B", "-f", str(POM)]
        run(
            [*mvn, "-Pkafka", "dependency:copy-dependencies", f"-DoutputDirectory={kafka_libs}"],
            "resolving Kafka jars",
            self.logs / "install.log",
        )
        run(
            [*mvn, "-Pdebezium", "dependency:copy-dependencies", f"-DoutputDirectory={plugin}"],
            "resolving the Debezium PostgreSQL connector",
            self.logs / "install.log",
        )
        tgz_dir = self.lib / "download"
        run(
            [
                *mvn,
                "dependency:copy",
                f"-Dartifact=io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all",
                f"-DoutputDirectory={tgz_dir}",
            ],
            "downloading Apicurio Registry",
            self.logs / "install.log",
        )
        app_dir = self.lib / "apicurio"
        shutil.rmtree(app_dir, ignore_errors=True)
        app_dir.mkdir(parents=True)
        tgz = next(tgz_dir.glob("apicurio-registry-app-*-all.tar.gz"))
        with tarfile.open(tgz) as tf:
            tf.extractall(app_dir, filter="data")
        tgz.unlink()
        if not list(app_dir.rglob("quarkus-run.jar")):
            raise StackError(f"Apicurio assembly {tgz.name} has no quarkus-run.jar; see {app_dir}")
        marker.write_text(stamp)

    # ---------------------------------------------------------------- postgres
    def _pg_user(self) -> str | None:
        # PostgreSQL refuses to run as root: run it as its own system user.
        return "postgres" if os.geteuid() == 0 else None

    @staticmethod
    def _user_can_write(path: Path, user: str) -> bool:
        probe = subprocess.run(  # type: ignore[call-overload]
            ["test", "-w", str(path)], cwd="/", check=False, **as_user(user)
        )
        return int(probe.returncode) == 0

    def _owner_file(self, data: Path) -> Path:
        return data / PG_OWNER_FILE

    def _claim(self, data: Path, user: str | None) -> None:
        owner = self._owner_file(data)
        owner.write_text(f"{self.dir.resolve()}\n")
        if user:
            shutil.chown(owner, user, user)

    def _owner_of(self, data: Path) -> str | None:
        owner = self._owner_file(data)
        return owner.read_text().strip() if owner.exists() else None

    def _owned_here(self, data: Path) -> bool:
        return self._owner_of(data) == str(self.dir.resolve())

    def _cluster_of_moved_clone(self) -> Path | None:
        """The cluster our link points at when the stack folder that made it is gone: this
        clone was moved, and the link with it. (A copied clone's original still exists: the
        copy gets a cluster of its own, never a shared one.)"""
        if not self.pg_link.is_symlink():
            return None
        data = Path(os.readlink(self.pg_link))
        owner = self._owner_of(data) if (data / "PG_VERSION").exists() else None
        if owner is None or owner == str(self.dir.resolve()) or Path(owner).exists():
            return None
        return data

    def _removable(self, data: Path) -> bool:
        return self._owned_here(data) or data == self._cluster_of_moved_clone()

    def _outside_stack(self, data: Path) -> bool:
        return not data.resolve().is_relative_to(self.dir.resolve())

    def _link_cluster(self) -> None:
        self.pg_link.unlink(missing_ok=True)
        if self._outside_stack(self.pg_data):
            self.pg_link.symlink_to(self.pg_data, target_is_directory=True)

    def _move_unreachable_cluster(self, user: str) -> None:
        """A cluster in the clone that the postgres user cannot reach (the clone was moved,
        or a parent made private) moves to where new clusters go; it is stopped, so a rename
        or copy is safe, and staying put cannot work."""
        data = self.pg_data
        if self._user_can_write(data, user):
            return
        if self.s.pg_data_dir is not None or self._outside_stack(data):
            raise StackError(
                f"the postgres user cannot reach the cluster in {data}; make its parent "
                "folders traversable (chmod o+x) or set PSSYNC_PG_DATA_DIR to a folder it can reach"
            )
        target = outside_pg_data(self.dir)
        if target.exists():
            raise StackError(
                f"the postgres user cannot reach the cluster in {data}, and {target} already "
                f"exists; keep one of them (remove the other), or set PSSYNC_PG_DATA_DIR"
            )
        log(f"moving the PostgreSQL cluster to {target}: the postgres user cannot reach {data}")
        make_dirs(target.parent)
        shutil.move(data, target)
        # Across file systems the move copies as root: give the files back.
        run(["chown", "-R", f"{user}:{user}", str(target)], "chown", self.postgres.log)
        self._claim(target, user)
        self.pg_data = target

    def _init_cluster(self, pg_bin: Path, user: str | None) -> None:
        data = self.pg_data
        log(f"initialising PostgreSQL cluster in {data}")
        make_dirs(data.parent)
        data.mkdir(mode=0o700, exist_ok=True)
        if user:
            shutil.chown(data, user, user)
            if not self._user_can_write(data, user):
                raise StackError(
                    f"the postgres user cannot reach {data}; make its parent folders "
                    "traversable (chmod o+x) or set PSSYNC_PG_DATA_DIR to a folder it can reach"
                )
        run(
            [
                str(pg_bin / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            "initdb",
            self.postgres.log,
            cwd="/",
            **as_user(user),
        )
        self._claim(data, user)

    def start_postgres(self) -> None:
        c = self.postgres
        if c.running():
            log(f"postgres already running on {c.port}; cluster in {self.pg_data}")
            return
        c.ensure_port_free("PSSYNC_PG_PORT")
        pg_bin = self._pg_bin()
        assert pg_bin is not None
        user = self._pg_user()
        if (self.pg_data / "PG_VERSION").exists():
            if user:
                self._move_unreachable_cluster(user)
            if self.pg_data == self._cluster_of_moved_clone():
                log(f"taking over {self.pg_data}: this clone was moved from where it was made")
                self._claim(self.pg_data, user)
        else:
            self._init_cluster(pg_bin, user)
        data = self.pg_data
        self._link_cluster()
        conf = data / "pssync.conf"
        conf.write_text(
            "listen_addresses = '127.0.0.1'\n"
            f"port = {c.port}\n"
            "unix_socket_directories = ''\n"
            # Debezium reads the WAL through logical decoding (pgoutput).
            "wal_level = logical\n"
            "max_wal_senders = 20\n"
            "max_replication_slots = 20\n"
            "max_connections = 200\n"
            "fsync = off\n"
            "synchronous_commit = off\n"
        )
        main_conf = data / "postgresql.conf"
        if "include_if_exists = 'pssync.conf'" not in main_conf.read_text():
            with main_conf.open("a") as f:
                f.write("\ninclude_if_exists = 'pssync.conf'\n")
        if user:
            shutil.chown(conf, user, user)
        # A stale pid file from a killed server would stop PostgreSQL from starting.
        (data / "postmaster.pid").unlink(missing_ok=True)
        c.spawn([str(pg_bin / "postgres"), "-D", str(data)], user=user, cwd=data)
        took = c.wait(lambda: self._pg_ready(pg_bin), 60)
        log(f"postgres ready on {c.port} in {took:.1f}s; cluster in {data}")
        self._ensure_databases(pg_bin)

    def _psql(self, pg_bin: Path, sql: str, db: str = "postgres") -> str:
        proc = subprocess.run(
            [
                str(pg_bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.postgres.port),
                "-U",
                "postgres",
                "-d",
                db,
                "-tAc",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise StackError(f"psql failed on {db!r}: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def _pg_ready(self, pg_bin: Path) -> bool:
        proc = subprocess.run(
            # -U: without it the probe logs "role root does not exist" on every try.
            [
                str(pg_bin / "pg_isready"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.postgres.port),
                "-U",
                "postgres",
            ],
            capture_output=True,
            check=False,
        )
        return proc.returncode == 0

    def _ensure_databases(self, pg_bin: Path) -> None:
        self._psql(pg_bin, "ALTER USER postgres PASSWORD 'postgres'")
        existing = set(self._psql(pg_bin, "SELECT datname FROM pg_database").split())
        for db in SOURCE_DATABASES:
            if db not in existing:
                self._psql(pg_bin, f'CREATE DATABASE "{db}"')
                log(f"created database {db}")

    # ---------------------------------------------------------------- kafka
    def _render(self, name: str, **values: object) -> Path:
        text = Template((HERE / name).read_text()).substitute(
            {k: str(v) for k, v in values.items()}
        )
        out = self.conf / name
        out.write_text(text)
        return out

    def _java(
        self, component: Component, main: list[str], heap: str, java: str | None = None
    ) -> list[str]:
        return [
            java or java_bin(),
            f"-Xmx{heap}",
            "-Xms64m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={HERE / 'log4j2.properties'}",
            f"-Dpssync.log.file={component.log}",
            *main,
        ]

    def start_kafka(self) -> None:
        c = self.kafka
        if c.running():
            log(f"kafka already running on {c.port}")
            return
        c.ensure_port_free("PSSYNC_KAFKA_PORT")
        data = self.dir / "kafka" / "data"
        conf = self._render(
            "server.properties",
            kafka_port=c.port,
            controller_port=self.s.ports.controller,
            data_dir=data,
        )
        cp = str(self.lib / "kafka" / "*")
        if not (data / "meta.properties").exists():
            log("formatting KRaft storage")
            cluster_id = (
                subprocess.run(
                    [java_bin(), "-cp", cp, "kafka.tools.StorageTool", "random-uuid"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            run(
                self._java(
                    c,
                    [
                        "-cp",
                        cp,
                        "kafka.tools.StorageTool",
                        "format",
                        "-t",
                        cluster_id,
                        "-c",
                        str(conf),
                    ],
                    "256m",
                ),
                "formatting Kafka storage",
                c.log,
            )
        c.spawn(self._java(c, ["-cp", cp, "kafka.Kafka", str(conf)], "768m"))
        took = c.wait(lambda: port_open(c.port) and self._kafka_ready(), 90)
        log(f"kafka ready on {c.port} in {took:.1f}s")

    def _kafka_ready(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            md = AdminClient({"bootstrap.servers": f"127.0.0.1:{self.kafka.port}"}).list_topics(
                timeout=2
            )
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False
        return bool(md.brokers)

    # ---------------------------------------------------------------- registry
    def start_registry(self) -> None:
        c = self.registry
        if c.running():
            log(f"registry already running on {c.port}")
            return
        c.ensure_port_free("PSSYNC_REGISTRY_PORT")
        jar = next((self.lib / "apicurio").rglob("quarkus-run.jar"))
        db = f"jdbc:postgresql://127.0.0.1:{self.postgres.port}/registry"
        props = {
            "quarkus.http.host": "127.0.0.1",
            "quarkus.http.port": c.port,
            "quarkus.management.host": "127.0.0.1",
            "quarkus.management.port": self.s.ports.registry_management,
            "quarkus.oidc.tenant-enabled": "false",
            # Schemas live in PostgreSQL so ids survive restarts.
            "apicurio.storage.kind": "sql",
            "apicurio.storage.sql.kind": "postgresql",
            "apicurio.datasource.url": db,
            "apicurio.datasource.username": "postgres",
            "apicurio.datasource.password": "postgres",
            "apicurio.datasource.jdbc.initial-size": 2,
            "apicurio.datasource.jdbc.min-size": 2,
            "apicurio.datasource.jdbc.max-size": 10,
            "apicurio.rules.global.compatibility": "BACKWARD_TRANSITIVE",
            "apicurio.ccompat.use-canonical-hash": "true",
            "apicurio.rest.deletion.artifact.enabled": "true",
            "apicurio.rest.deletion.artifact-version.enabled": "true",
        }
        main = [f"-D{k}={v}" for k, v in props.items()] + ["-jar", str(jar)]
        c.spawn(self._java(c, main, "384m", java=modern_java_bin()), cwd=jar.parent)
        url = f"http://127.0.0.1:{self.s.ports.registry_management}/health/ready"
        took = c.wait(lambda: http_ok(url), 180)
        log(f"registry ready on {c.port} in {took:.1f}s")

    # ---------------------------------------------------------------- connect
    def start_connect(self) -> None:
        c = self.connect
        if c.running():
            log(f"connect already running on {c.port}")
            return
        c.ensure_port_free("PSSYNC_CONNECT_PORT")
        conf = self._render(
            "connect.properties",
            kafka_port=self.kafka.port,
            connect_port=c.port,
            plugin_path=self.lib / "plugins",
        )
        cp = str(self.lib / "kafka" / "*")
        c.spawn(
            self._java(
                c, ["-cp", cp, "org.apache.kafka.connect.cli.ConnectDistributed", str(conf)], "512m"
            )
        )
        url = f"http://127.0.0.1:{c.port}/connector-plugins"
        took = c.wait(lambda: self._connect_ready(url), 120)
        log(f"connect ready on {c.port} in {took:.1f}s")

    @staticmethod
    def _connect_ready(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return b"PostgresConnector" in resp.read()
        except (urllib.error.URLError, OSError, ValueError):
            return False

    # ---------------------------------------------------------------- verbs
    def up(self, only: tuple[str, ...] = COMPONENTS) -> None:
        t0 = time.monotonic()
        self.install(only)
        starts = {
            "postgres": self.start_postgres,
            "kafka": self.start_kafka,
            "registry": self.start_registry,
            "connect": self.start_connect,
        }
        for c in self.components(only):
            starts[c.name]()
        log(f"stack up in {time.monotonic() - t0:.1f}s; logs in {self.logs}")

    def down(self, only: tuple[str, ...] = COMPONENTS) -> None:
        for c in reversed(self.components(only)):
            c.stop()
        log("stack down")

    def clean(self) -> None:
        """Stop everything and remove this stack's PostgreSQL cluster if it lives outside the
        stack folder (the folder itself is removed by `make clean`)."""
        self.down()
        candidates = {self.pg_data}
        if self.pg_link.is_symlink():
            candidates.add(Path(os.readlink(self.pg_link)))
        for data in sorted(candidates):
            if not data.exists() or not self._outside_stack(data):
                continue
            if not self._removable(data):
                log(f"leaving {data}: it is not this stack's cluster (see {PG_OWNER_FILE} in it)")
                continue
            shutil.rmtree(data)
            log(f"removed PostgreSQL cluster {data}")
            if data.parent.parent.resolve() == PG_HOME_BASE.resolve():
                with contextlib.suppress(OSError):  # not empty: leave it
                    data.parent.rmdir()
        self.pg_link.unlink(missing_ok=True)

    def status(self) -> bool:
        ok = True
        for c in (self.postgres, self.kafka, self.registry, self.connect):
            pid = c.pid()
            state = "up" if c.running() else ("starting/hung" if pid else "down")
            ok = ok and state == "up"
            print(f"{c.name:<10} {state:<14} port {c.port:<6} pid {pid or '-':<8} log {c.log}")
        exists = "" if (self.pg_data / "PG_VERSION").exists() else " (not created yet)"
        print(f"postgres cluster in {self.pg_data}{exists}")
        return ok


def parse_only(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return COMPONENTS
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    unknown = sorted(set(names) - set(COMPONENTS))
    if unknown or not names:
        raise StackError(
            f"--only {raw!r}: unknown component(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(COMPONENTS)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("verb", choices=["up", "down", "status", "install", "clean"])
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help=f"comma-separated components for up/down/install, from: {', '.join(COMPONENTS)}",
    )
    args = parser.parse_args(argv)
    try:
        only = parse_only(args.only)
        stack = Stack(Settings.from_env())
        if args.verb == "up":
            stack.up(only)
        elif args.verb == "down":
            stack.down(only)
        elif args.verb == "install":
            stack.install(only)
        elif args.verb == "clean":
            stack.clean()
        else:
            return 0 if stack.status() else 1
    except StackError as exc:
        print(f"[stack] ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
