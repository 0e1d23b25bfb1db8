"""A Faust table of JSON values, written per batch the way tables/dedupe.py writes positions.

Writes bypass the table's per-key changelog send: a batch's values go to the local store at
once and to the changelog through pssync's producer, encoded once, exactly as Faust encodes them,
on the partition of the records they derive from, so Faust's recovery reads them back
unchanged. The changelog records are flushed before the offsets that depend on them are
committed (streams/app.py).
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

import faust
from confluent_kafka import Message as KafkaMessage
from faust.stores.base import SerializedStore
from faust.streams import _current_event
from faust.types import TP, TableT
from faust.utils import json as faust_json
from mode.utils.compat import want_bytes, want_str

from streams.output import Output


def changelog_topic(app_id: str, name: str) -> str:
    """Faust's name for a table's changelog topic."""
    return f"{app_id}-{name}-changelog"


def json_table(app: faust.App, name: str, partitions: int, help: str) -> TableT[str, Any]:
    return app.Table(name, default=None, partitions=partitions, key_type=str, help=help)


# Text Faust's json codec must write exactly as the kept encoder below for that encoder to
# be used: escapes, separators, numbers, and the types it turns into text.
_PROBE: dict[str, Any] = {
    "text": 'é\u2028"\\/\x01 ✓',
    "numbers": [0, -7, 2**70, 1.5, -0.0, 1e300],
    "flags": [True, False, None],
    "nested": {"decimal": Decimal("10.10"), "at": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)},
}


@cache
def json_codec() -> Callable[[Any], bytes]:
    """Faust's json codec as bytes, with one encoder kept for every call.

    Faust's codec builds a new encoder per value (json.dumps with its own encoder class):
    a third of a dedupe write. One encoder with the same settings writes the same text; it
    is used only when it does so on a probe, since Faust picks orjson or simplejson instead
    when they are installed.
    """
    kept = json.JSONEncoder(separators=(",", ":"), default=faust_json.on_default).encode

    def fast(value: Any) -> bytes:
        return kept(value).encode()

    def faust(value: Any) -> bytes:
        return want_bytes(faust_json.dumps(value))

    return fast if fast(_PROBE) == faust(_PROBE) else faust


@dataclass(frozen=True)
class _Origin:
    """Stands in for the event a store write belongs to: stores read its partition."""

    message: Any


@dataclass(frozen=True)
class _Partition:
    partition: int


class JsonTable:
    """Reads and batch-writes one table of JSON values (dicts)."""

    def __init__(self, table: TableT[str, Any], output: Output) -> None:
        self.table: Any = table  # its serializers and store are not in Faust's TableT
        self.output = output
        self.changelog = table.changelog_topic.get_topic_name()
        self._json_keys: bool | None = None  # known once the store exists (first use)
        self._dumps = json_codec()
        # Newest changelog offset acknowledged per partition, noted from the producer's
        # delivery thread and handed to the store on the event loop.
        self._acked: dict[int, int] = {}
        self._lock = threading.Lock()

    def encode(self, key: str, value: dict[str, Any]) -> tuple[bytes, bytes]:
        """The key and value bytes Faust's store and changelog hold for (key, value): the
        store's own key encoding (what its lookups use), the value as Faust's json codec
        writes it. Recovery copies changelog bytes into the store, so they are the same."""
        return self._key(key), self._dumps(value)

    def _key(self, key: str) -> bytes:
        if self._json_keys is None:
            store = self.table.data
            self._json_keys = (
                isinstance(store, SerializedStore)
                and store.key_type is str
                and store.key_serializer == "json"
            )
        if self._json_keys:
            # What the serializer registry ends in for a str key and the json codec.
            return self._dumps(key)
        raw: bytes = self.table.data._encode_key(key)
        return raw

    def get(self, key: str) -> dict[str, Any] | None:
        store = self.table.data
        if isinstance(store, SerializedStore):
            # The store's raw read and one json decode, without Faust's serializer layers.
            raw = store._get(self._key(key))
            value = None if raw is None else faust_json.loads(want_str(raw))
        else:  # the memory store holds values, not bytes
            value = store.get(key)
        return value if isinstance(value, dict) else None

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every key of the partitions this worker owns."""
        for key, value in self.table.data.items():
            if isinstance(value, dict):
                yield key, value

    def write(self, values: Iterable[tuple[int, str, dict[str, Any]]]) -> None:
        """Record (partition, key, value) triples: in the local store now, in the changelog
        with the next flush of the producer."""
        self._persist_acked_offsets()
        # Encoded once, for the changelog and the store alike.
        store = self.table.data
        raw_store = isinstance(store, SerializedStore)
        by_partition: dict[int, list[tuple[Any, Any]]] = {}
        for partition, key, value in values:
            raw_key, raw_value = self.encode(key, value)
            held = (raw_key, raw_value) if raw_store else (key, value)
            by_partition.setdefault(partition, []).append(held)
            self.output.send(
                self.changelog, raw_key, raw_value, partition=partition, on_delivery=self._noted
            )
        for partition, items in by_partition.items():
            origin = _Origin(_Partition(partition))
            _current_event.set(weakref.ref(origin))  # type: ignore[arg-type]
            try:
                for k, v in items:
                    if raw_store:
                        store._set(k, v)
                    else:  # the memory store holds values, not bytes
                        store[k] = v
            finally:
                _current_event.set(None)

    def _noted(self, msg: KafkaMessage) -> None:
        partition, offset = msg.partition(), msg.offset()
        if partition is None or offset is None:
            return
        with self._lock:
            if offset > self._acked.get(partition, -1):
                self._acked[partition] = offset

    def _persist_acked_offsets(self) -> None:
        # What a Faust table does per changelog send: a RocksDB store then knows, after a
        # restart, from where the changelog still has to be read.
        with self._lock:
            acked, self._acked = self._acked, {}
        for partition, offset in acked.items():
            self.table.data.set_persisted_offset(TP(self.changelog, partition), offset)
