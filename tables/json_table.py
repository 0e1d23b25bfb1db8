"""A Faust table of JSON values, written per batch the way tables/dedupe.py writes positions.

Writes bypass the table's per-key changelog send: a batch's values go to the changelog
through pssync's producer, encoded once, exactly as Faust encodes them, on the partition of
the records they derive from, so Faust's recovery reads them back unchanged. The changelog
records are flushed before the offsets that depend on them are committed (streams/app.py).

A RocksDB store takes a value only once its changelog record is acknowledged; until then the
value is read from memory. The store so never holds what the changelog lacks. A worker
killed before the acknowledgement restarts from the changelog's state and processes the
input again, writing the value again; had the store kept it, the replay would find nothing
to do, and the changelog would stay without it: a partition's next owner would miss it.
(The memory store is rebuilt from the changelog on every start and is written at once.)
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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
        # RocksDB: values written but not yet acknowledged by the changelog, store key ->
        # [its records on the way, newest value bytes]; and the acknowledged records
        # (partition, offset, key, value), noted on the producer's delivery thread, for the
        # store on the event loop.
        self._unacked: dict[bytes, list[Any]] = {}
        self._delivered: list[tuple[int, int, bytes, bytes]] = []
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
            if self._delivered:
                self._settle()
            raw_key = self._key(key)
            held = self._unacked.get(raw_key)
            # The store's raw read and one json decode, without Faust's serializer layers.
            raw = held[1] if held is not None else store._get(raw_key)
            value = None if raw is None else faust_json.loads(want_str(raw))
        else:  # the memory store holds values, not bytes
            value = store.get(key)
        return value if isinstance(value, dict) else None

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every key of the partitions this worker owns."""
        store = self.table.data
        pending: dict[str, Any] = {}
        if isinstance(store, SerializedStore):
            self._settle()
            for raw_key, (_, raw) in self._unacked.items():
                pending[store._decode_key(raw_key)] = faust_json.loads(want_str(raw))
        for key, value in pending.items():
            if isinstance(value, dict):
                yield key, value
        for key, value in list(store.items()):
            if key not in pending and isinstance(value, dict):
                yield key, value

    def write(self, values: Iterable[tuple[int, str, dict[str, Any]]]) -> None:
        """Record (partition, key, value) triples: in the changelog with the next flush of
        the producer, readable here at once."""
        store = self.table.data
        if isinstance(store, SerializedStore):
            self._settle()
            unacked, send, topic = self._unacked, self.output.send, self.changelog
            for partition, key, value in values:
                # Encoded once, for the changelog and the store alike.
                raw_key, raw_value = self.encode(key, value)
                held = unacked.get(raw_key)
                if held is None:
                    unacked[raw_key] = [1, raw_value]
                else:
                    held[0] += 1
                    held[1] = raw_value
                send(topic, raw_key, raw_value, partition=partition, on_delivery=self._noted)
            return
        by_partition: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        for partition, key, value in values:
            raw_key, raw_value = self.encode(key, value)
            by_partition.setdefault(partition, []).append((key, value))
            self.output.send(self.changelog, raw_key, raw_value, partition=partition)
        for partition, items in by_partition.items():
            with _on_partition(partition):
                for k, v in items:
                    store[k] = v  # the memory store holds values, not bytes

    def _noted(self, msg: KafkaMessage) -> None:
        partition, offset, key, value = msg.partition(), msg.offset(), msg.key(), msg.value()
        if partition is None or offset is None or key is None or value is None:
            return
        with self._lock:
            self._delivered.append((partition, offset, key, value))

    def _settle(self) -> None:
        """Hand acknowledged values to the store, with the changelog offsets they are at: what
        a Faust table does per changelog send. After a restart, recovery reads the changelog
        from there."""
        with self._lock:
            done, self._delivered = self._delivered, []
        if not done:
            return
        store = self.table.data
        unacked = self._unacked
        by_partition: dict[int, list[tuple[int, bytes, bytes]]] = {}
        for partition, offset, key, value in done:
            by_partition.setdefault(partition, []).append((offset, key, value))
            held = unacked.get(key)
            if held is not None:
                held[0] -= 1
                if not held[0]:  # the newest value of the key was acknowledged
                    del unacked[key]
        for partition, records in by_partition.items():
            tp = TP(self.changelog, partition)
            # A partition given away and back meanwhile was restored from the changelog,
            # maybe with later values by its other owner: those stay.
            restored = store.persisted_offset(tp)
            fresh = [r for r in records if restored is None or r[0] > restored]
            if not fresh:
                continue
            with _on_partition(partition):
                for _, k, v in fresh:
                    store._set(k, v)
            store.set_persisted_offset(tp, max(r[0] for r in fresh))


@contextmanager
def _on_partition(partition: int) -> Iterator[None]:
    """Store writes go to `partition`: Faust's stores read it from the current event."""
    origin = _Origin(_Partition(partition))
    _current_event.set(weakref.ref(origin))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _current_event.set(None)
