"""Memory of the RocksDB stores that hold table state.

Faust opens every table partition's RocksDB with 64 MiB write buffers (three of them) and a
2 GiB block cache. A cold restore writes the whole changelog at once, and those write
buffers held it: 307 MiB peak for a million dedupe keys against 141 MiB once the files
exist. pssync bounds both per store, as Kafka Streams bounds its stores (16 MiB buffers, a
small block cache); a restore then flushes to files as it goes.
"""

from __future__ import annotations

from typing import Any

import faust

from streams.errors import ConfigError

MIB = 1 << 20


def rocksdb_options(write_buffer_mb: int, block_cache_mb: int) -> dict[str, int]:
    """Faust's RocksDB store options for one table partition."""
    return {
        "write_buffer_size": write_buffer_mb * MIB,
        "max_write_buffer_number": 2,  # one filling while the other is flushed
        "block_cache_size": block_cache_mb * MIB,
    }


def bound_store_memory(app: faust.App, options: dict[str, Any]) -> None:
    """Give every table of `app` these store options; call before the stores are opened."""
    for table in app.tables.values():
        collection: Any = table
        if collection._data is not None:
            raise ConfigError(
                f"table {collection.name} opened its store before its options were set; "
                "set store options right after the tables are declared"
            )
        # A dict of its own: Faust's store takes keys out of the one it is given.
        collection.options = {**(collection.options or {}), **options}
