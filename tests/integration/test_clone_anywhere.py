"""A clone under a folder the postgres user cannot traverse (a 0700 /root) still gets its
PostgreSQL: the cluster lives outside the clone, `clean` removes it.

Starts only PostgreSQL, from a copy of this working tree, on a free port: the shared stack is
not touched.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        os.geteuid() != 0, reason="only root runs PostgreSQL as another user (postgres)"
    ),
]

REPO = Path(__file__).resolve().parents[2]
PRIVATE_PARENT = Path("/root")
PG_HOME_BASE = Path("/var/lib/pssync")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _copy_working_tree(dest: Path) -> None:
    """What `git clone` would give, plus uncommitted changes: the code under test."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        src = REPO / os.fsdecode(raw)
        if src.is_file():  # deleted but not yet committed files are listed too
            (dest / src.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / src.relative_to(REPO))


def _as_postgres(cmd: list[str]) -> subprocess.CompletedProcess[bytes]:
    pw = pwd.getpwnam("postgres")
    return subprocess.run(
        cmd,
        cwd="/",
        user=pw.pw_uid,
        group=pw.pw_gid,
        extra_groups=os.getgrouplist("postgres", pw.pw_gid),
        capture_output=True,
        check=False,
    )


class Clone:
    def __init__(self, path: Path, pg_port: int) -> None:
        self.path = path
        self.pg_port = pg_port
        env = {k: v for k, v in os.environ.items() if not k.startswith("PSSYNC_")}
        # The clone's own code, not this checkout's installed package.
        self.env = {**env, "PYTHONPATH": str(path), "PSSYNC_PG_PORT": str(pg_port)}

    def stack(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "docker/local/stack.py", *args],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.pg_port,
            user="postgres",
            password="postgres",
            dbname="crm",
            connect_timeout=5,
            autocommit=True,
        )


@pytest.fixture
def private_clone() -> Iterator[Clone]:
    shared_pg_was_up = _port_open(5432)
    parent = Path(tempfile.mkdtemp(prefix="pssync-clone-test-", dir=PRIVATE_PARENT))
    parent.chmod(0o700)
    clone = Clone(parent / "clone", _free_port())
    clone.path.mkdir()
    _copy_working_tree(clone.path)
    try:
        yield clone
    finally:
        done = clone.stack("clean")
        shutil.rmtree(parent, ignore_errors=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert _port_open(5432) == shared_pg_was_up


def _cluster_of(clone: Clone) -> Path:
    link = clone.path / ".stack" / "postgres-cluster"
    assert link.is_symlink(), "the stack links a cluster kept outside the clone"
    return Path(os.readlink(link))


def _assert_serves(clone: Clone, data: Path) -> None:
    with clone.connect() as conn:
        assert conn.execute("SHOW data_directory").fetchone() == (str(data),)
        conn.execute("CREATE TABLE probe (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO probe VALUES (1, 'from a private clone')")
        assert conn.execute("SELECT v FROM probe").fetchall() == [("from a private clone",)]


def test_postgres_starts_from_a_clone_the_postgres_user_cannot_reach(
    private_clone: Clone,
) -> None:
    clone = private_clone
    assert _as_postgres(["test", "-x", str(clone.path)]).returncode != 0, "precondition"

    up = clone.stack("up", "--only", "postgres")
    assert up.returncode == 0, up.stdout + up.stderr

    data = _cluster_of(clone)
    assert data.parent.parent == PG_HOME_BASE
    assert data.owner() == "postgres"
    assert (data / "pssync.stack").read_text().strip() == str(clone.path / ".stack")
    _assert_serves(clone, data)
    # The log stays with the clone; nothing but PostgreSQL was started.
    log = (clone.path / ".stack" / "logs" / "postgres.log").read_text()
    assert "database system is ready to accept connections" in log
    assert not (clone.path / ".stack" / "logs" / "kafka.log").exists()
    status = clone.stack("status").stdout
    assert f"postgres cluster in {data}\n" in status
    assert status.startswith("postgres   up ")

    cleaned = clone.stack("clean")
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert not data.exists() and not data.parent.exists()
    assert not _port_open(clone.pg_port)


def test_a_cluster_left_in_a_now_private_clone_moves_out(private_clone: Clone) -> None:
    clone = private_clone
    inside = clone.path / ".stack" / "postgres" / "data"
    # A cluster made while the clone was reachable (where earlier versions put it); /root
    # cannot be opened here, so it is made elsewhere and moved in.
    staging = Path(tempfile.mkdtemp(prefix="pssync-clone-test-"))
    try:
        shutil.chown(staging, "postgres", "postgres")
        initdb = next(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        made = _as_postgres([str(initdb), "-D", str(staging / "data"), "-U", "postgres"])
        assert made.returncode == 0, made.stdout + made.stderr
        inside.parent.mkdir(parents=True)
        shutil.move(staging / "data", inside)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    up = clone.stack("up", "--only", "postgres")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "moving the PostgreSQL cluster" in up.stdout

    data = _cluster_of(clone)
    assert data.parent.parent == PG_HOME_BASE and not inside.exists()
    _assert_serves(clone, data)
    assert clone.stack("clean").returncode == 0
    assert not data.exists()


def test_a_moved_clone_keeps_its_cluster(private_clone: Clone) -> None:
    clone = private_clone
    assert clone.stack("up", "--only", "postgres").returncode == 0
    data = _cluster_of(clone)
    _assert_serves(clone, data)
    assert clone.stack("down", "--only", "postgres").returncode == 0

    moved = clone.path.parent / "moved"
    clone.path.rename(moved)
    clone.path = moved
    clone.env["PYTHONPATH"] = str(moved)
    up = clone.stack("up", "--only", "postgres")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "taking over" in up.stdout and _cluster_of(clone) == data
    assert (data / "pssync.stack").read_text().strip() == str(moved / ".stack")
    with clone.connect() as conn:
        assert conn.execute("SELECT v FROM probe").fetchall() == [("from a private clone",)]
    assert clone.stack("clean").returncode == 0
    assert not data.exists()
