"""PostgreSQL: one cluster per stack folder, holding the source databases (Debezium reads
their WAL), the target, the registry's storage and the ERP's and PSA's databases.

As root, PostgreSQL runs as the postgres user, which may not reach the clone (e.g. under a
0700 /root): its clusters then live under PG_HOME_BASE, one folder per stack folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from streams.errors import StackError

from .base import Context, Managed, as_user, log, make_dirs, run

SOURCE_DATABASES = ("crm", "psa", "erp", "target", "registry")
PG_HOME_BASE = Path("/var/lib/pssync")
# In each cluster folder: the stack folder it belongs to, so `clean` removes only its own.
PG_OWNER_FILE = "pssync.stack"


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


def pg_bin() -> Path | None:
    base = Path("/usr/lib/postgresql")
    versions = sorted(
        (d for d in base.glob("*") if (d / "bin" / "postgres").exists()),
        key=lambda d: int(d.name) if d.name.isdigit() else 0,
    )
    return versions[-1] / "bin" if versions else None


class Postgres(Managed):
    name = "postgres"
    port_env = "PSSYNC_PG_PORT"
    ready_timeout = 60.0

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx, ctx.settings.ports.postgres)
        self.dir = ctx.dir
        # Points at the cluster when it is outside the stack folder: for people, for `clean`,
        # and to find the cluster again after the clone moved (its hash changed).
        self.pg_link = self.dir / "postgres-cluster"
        self.pg_data = pg_data_dir(self.dir, self.s.pg_data_dir, self._pg_user() is not None)
        if self.s.pg_data_dir is None and not (self.pg_data / "PG_VERSION").exists():
            self.pg_data = self._cluster_of_moved_clone() or self.pg_data

    # ---------------------------------------------------------------- install
    def install(self) -> None:
        if pg_bin() is not None:
            return
        if os.geteuid() != 0:
            raise StackError(
                "PostgreSQL is not installed; run `sudo apt-get install -y postgresql`"
            )
        log("installing PostgreSQL from Debian packages (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install_log = self.ctx.logs / "install.log"
        run(["apt-get", "update"], "apt-get update", install_log, env=env)
        run(
            ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"],
            "apt-get install postgresql",
            install_log,
            env=env,
        )
        if pg_bin() is None:
            raise StackError(
                "apt-get installed postgresql but no server binary is under /usr/lib/postgresql"
            )

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

    def _orphaned(self, data: Path) -> bool:
        """A cluster outside the stack folder that says it is ours, while our folder holds no
        link to it: the folder that made it was deleted (a fresh clone at the same path). The
        applications' passwords went with that folder, and Kafka's offsets too, so the data
        cannot be used any more: it is replaced."""
        return (
            self.s.pg_data_dir is None
            and (data / "PG_VERSION").exists()
            and self._outside_stack(data)
            and self._owned_here(data)
            and not self.pg_link.is_symlink()
        )

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
        run(["chown", "-R", f"{user}:{user}", str(target)], "chown", self.process.log)
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
            self.process.log,
            cwd="/",
            **as_user(user),
        )
        self._claim(data, user)

    def start(self) -> None:
        if self.process.running():
            log(f"postgres already running on {self.port}; cluster in {self.pg_data}")
            return
        self.process.ensure_port_free(self.port_env)
        self.launch()

    def launch(self) -> None:
        binaries = pg_bin()
        if binaries is None:
            raise StackError("PostgreSQL is not installed; run the stack's `install` first")
        user = self._pg_user()
        if self._orphaned(self.pg_data):
            log(
                f"replacing the PostgreSQL cluster in {self.pg_data}: it was made for an earlier "
                f"stack folder at {self.dir} that was removed, with the passwords its data needs"
            )
            shutil.rmtree(self.pg_data)
        if (self.pg_data / "PG_VERSION").exists():
            if user:
                self._move_unreachable_cluster(user)
            if self.pg_data == self._cluster_of_moved_clone():
                log(f"taking over {self.pg_data}: this clone was moved from where it was made")
                self._claim(self.pg_data, user)
        else:
            self._init_cluster(binaries, user)
        data = self.pg_data
        self._link_cluster()
        conf = data / "pssync.conf"
        conf.write_text(
            "listen_addresses = '127.0.0.1'\n"
            f"port = {self.port}\n"
            "unix_socket_directories = ''\n"
            # Debezium reads the WAL through logical decoding (pgoutput), the ERP's and
            # PSA's databases included.
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
        self.process.spawn([str(binaries / "postgres"), "-D", str(data)], user=user, cwd=data)

    def ready(self) -> bool:
        binaries = pg_bin()
        return binaries is not None and self._pg_ready(binaries)

    def wait_ready(self) -> float:
        took = self.process.wait(self.ready, self.ready_timeout)
        log(f"postgres ready on {self.port} in {took:.1f}s; cluster in {self.pg_data}")
        binaries = pg_bin()
        assert binaries is not None
        self._ensure_databases(binaries)
        return took

    def psql(self, sql: str, db: str = "postgres") -> str:
        binaries = pg_bin()
        if binaries is None:
            raise StackError("PostgreSQL is not installed; run the stack's `install` first")
        return self._psql(binaries, sql, db)

    def clean(self) -> None:
        """Remove this stack's cluster if it lives outside the stack folder (the folder
        itself is removed by `make clean`)."""
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

    def _psql(self, pg_bin: Path, sql: str, db: str = "postgres") -> str:
        proc = subprocess.run(
            [
                str(pg_bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
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
                str(self.port),
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
