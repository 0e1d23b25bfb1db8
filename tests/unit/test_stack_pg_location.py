"""Where the local stack keeps its PostgreSQL cluster, and what `clean` removes."""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.errors import StackError
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _load_stack() -> Any:
    # docker/local/stack.py is a script, not a package module.
    name = "pssync_local_stack_pg"
    spec = importlib.util.spec_from_file_location(name, ROOT / "docker" / "local" / "stack.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


stack = _load_stack()


def test_key_is_stable_readable_and_differs_per_path(tmp_path: Path) -> None:
    a = tmp_path / "one" / "pssync" / ".stack"
    b = tmp_path / "two" / "pssync" / ".stack"
    key = stack.stack_key(a)
    assert key == stack.stack_key(a)
    assert key.startswith("pssync-") and len(key) == len("pssync-") + 12
    assert stack.stack_key(b).startswith("pssync-") and stack.stack_key(b) != key


def test_key_names_a_custom_stack_folder_and_keeps_only_safe_characters(tmp_path: Path) -> None:
    assert stack.stack_key(tmp_path / "my stack!").startswith("my-stack-")
    assert stack.stack_key(tmp_path / "...").startswith("stack-")


def test_key_follows_symlinks_to_the_real_clone(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    assert stack.stack_key(tmp_path / "alias" / ".stack") == stack.stack_key(real / ".stack")


def test_override_wins(tmp_path: Path) -> None:
    override = tmp_path / "elsewhere"
    assert stack.pg_data_dir(tmp_path / ".stack", override, True) == override
    assert stack.pg_data_dir(tmp_path / ".stack", override, False) == override


def test_in_the_clone_when_postgres_runs_as_the_invoking_user(tmp_path: Path) -> None:
    assert stack.pg_data_dir(tmp_path / ".stack", None, False) == (
        tmp_path / ".stack" / "postgres" / "data"
    )


def test_outside_the_clone_when_postgres_runs_as_its_own_user(tmp_path: Path) -> None:
    base = tmp_path / "var-lib-pssync"
    got = stack.pg_data_dir(tmp_path / ".stack", None, True, base)
    assert got == base / stack.stack_key(tmp_path / ".stack") / "postgres"
    assert stack.pg_data_dir(tmp_path / ".stack", None, True) == (
        Path("/var/lib/pssync") / stack.stack_key(tmp_path / ".stack") / "postgres"
    )


def test_an_existing_cluster_in_the_clone_stays_there(tmp_path: Path) -> None:
    inside = tmp_path / ".stack" / "postgres" / "data"
    inside.mkdir(parents=True)
    (inside / "PG_VERSION").write_text("15\n")
    assert stack.pg_data_dir(tmp_path / ".stack", None, True, tmp_path / "base") == inside


def test_settings_read_the_data_dir_override() -> None:
    assert Settings.from_env({}).pg_data_dir is None
    s = Settings.from_env({"PSSYNC_PG_DATA_DIR": "/srv/pg"})
    assert s.pg_data_dir == Path("/srv/pg")


def test_make_dirs_leaves_new_folders_traversable_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        stack.make_dirs(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    for p in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o755


def test_only_parses_component_lists() -> None:
    assert stack.parse_only(None) == stack.COMPONENTS
    assert stack.parse_only("postgres") == ("postgres",)
    assert stack.parse_only("kafka, connect") == ("kafka", "connect")
    with pytest.raises(StackError, match="choose from postgres, kafka"):
        stack.parse_only("postgres,zookeeper")


def _cluster(path: Path, owner: Path) -> Path:
    path.mkdir(parents=True)
    (path / "PG_VERSION").write_text("15\n")
    (path / stack.PG_OWNER_FILE).write_text(f"{owner.resolve()}\n")
    return path


def test_clean_removes_only_this_stacks_cluster(tmp_path: Path) -> None:
    stack_dir = tmp_path / "clone" / ".stack"
    stack_dir.mkdir(parents=True)
    own = _cluster(tmp_path / "pg" / "own", stack_dir)
    other = tmp_path / "other" / ".stack"
    other.mkdir(parents=True)
    foreign = _cluster(tmp_path / "pg" / "foreign", other)
    # A link left by an earlier run, pointing at a cluster another stack owns.
    (stack_dir / "postgres-cluster").symlink_to(foreign)
    s = stack.Stack(
        Settings.from_env({"PSSYNC_STACK_DIR": str(stack_dir), "PSSYNC_PG_DATA_DIR": str(own)})
    )
    s.clean()
    assert not own.exists()
    assert (foreign / "PG_VERSION").read_text() == "15\n"
    assert not (stack_dir / "postgres-cluster").is_symlink()


def test_a_moved_clone_finds_its_cluster_and_clean_removes_it(tmp_path: Path) -> None:
    old_place = tmp_path / "old" / "clone" / ".stack"
    stack_dir = tmp_path / "new" / "clone" / ".stack"
    stack_dir.mkdir(parents=True)
    data = _cluster(tmp_path / "pg" / "moved", old_place)  # old_place no longer exists
    (stack_dir / "postgres-cluster").symlink_to(data)
    s = stack.Stack(Settings.from_env({"PSSYNC_STACK_DIR": str(stack_dir)}))
    assert s.pg_data == data
    s.clean()
    assert not data.exists()


def test_a_copied_clone_does_not_share_the_originals_cluster(tmp_path: Path) -> None:
    original = tmp_path / "original" / ".stack"
    original.mkdir(parents=True)
    copy = tmp_path / "copy" / ".stack"
    copy.mkdir(parents=True)
    data = _cluster(tmp_path / "pg" / "original", original)
    (copy / "postgres-cluster").symlink_to(data)
    s = stack.Stack(Settings.from_env({"PSSYNC_STACK_DIR": str(copy)}))
    assert s.pg_data != data
    s.clean()
    assert (data / "PG_VERSION").exists()


def test_a_cluster_left_by_a_removed_stack_folder_at_the_same_path_is_replaced(
    tmp_path: Path,
) -> None:
    stack_dir = tmp_path / "clone" / ".stack"
    stack_dir.mkdir(parents=True)
    data = _cluster(tmp_path / "pg" / "left", stack_dir)
    pg = stack.Stack(Settings.from_env({"PSSYNC_STACK_DIR": str(stack_dir)})).postgres
    # A fresh folder: no link to the cluster, so its passwords are gone with the old one.
    assert pg._orphaned(data)
    (stack_dir / "postgres-cluster").symlink_to(data)
    assert not pg._orphaned(data)
    (stack_dir / "postgres-cluster").unlink()
    other = tmp_path / "other" / ".stack"
    assert not pg._orphaned(_cluster(tmp_path / "pg" / "foreign", other))
    chosen = stack.Stack(
        Settings.from_env({"PSSYNC_STACK_DIR": str(stack_dir), "PSSYNC_PG_DATA_DIR": str(data)})
    ).postgres
    assert not chosen._orphaned(data)


def test_a_component_running_on_another_port_is_not_started_twice(tmp_path: Path) -> None:
    from tests.sandbox import refusing_port

    pid_file = tmp_path / "postgres.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # alive, and answering on no port
    process_class = sys.modules["components.base"].Process  # loaded by stack.py
    proc = process_class("postgres", refusing_port(), tmp_path / "pg.log", pid_file)
    with pytest.raises(StackError, match=r"already runs .* started with another PSSYNC_PG_PORT"):
        proc.ensure_port_free("PSSYNC_PG_PORT")
    pid_file.unlink()
    proc.ensure_port_free("PSSYNC_PG_PORT")  # nothing runs: free to start
