"""Table stores get bounded RocksDB memory before they open."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
import pytest

from streams.errors import ConfigError
from streams.settings import Settings
from tables.store import MIB, bound_store_memory, rocksdb_options


def app_with_tables(tmp_path: Path) -> tuple[faust.App, Any, Any]:
    app = faust.App("store-test", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    one = app.Table("one", default=None, partitions=1)
    two = app.Table("two", default=None, partitions=1)
    return app, one, two


def test_every_table_store_opens_with_the_bounded_options(tmp_path: Path) -> None:
    app, one, two = app_with_tables(tmp_path)
    bound_store_memory(app, rocksdb_options(16, 64))
    assert one.options is not two.options  # Faust's store takes keys out of its dict
    for table in (one, two):
        opts = table.data.rocksdb_options  # the store is made here, from the table's options
        assert opts.write_buffer_size == 16 * MIB
        assert opts.max_write_buffer_number == 2
        assert opts.block_cache_size == 64 * MIB


def test_a_store_opened_before_its_options_are_set_is_refused(tmp_path: Path) -> None:
    app, one, _ = app_with_tables(tmp_path)
    assert one.data is not None
    with pytest.raises(ConfigError, match="table one opened its store before"):
        bound_store_memory(app, rocksdb_options(16, 64))


def test_store_memory_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="PSSYNC_ROCKSDB_WRITE_BUFFER_MB=0"):
        Settings(rocksdb_write_buffer_mb=0).validate()
    with pytest.raises(ConfigError, match="at least 1 each"):
        Settings(rocksdb_block_cache_mb=0).validate()
