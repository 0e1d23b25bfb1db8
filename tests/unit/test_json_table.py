"""JsonTable writes each value once for the store and the changelog, as Faust encodes it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.types import TP
from faust.utils import json as faust_json
from hypothesis import given, settings
from hypothesis import strategies as st
from mode.utils.compat import want_bytes

from tables.json_table import JsonTable, json_codec, json_table


@dataclass
class Delivered:
    """What the producer hands a delivery callback."""

    _partition: int
    _offset: int
    _key: bytes
    _value: bytes

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value


class Output:
    """Records sends; `deliver(n)` acknowledges the oldest n, as the brokers would."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []
        self.waiting: list[tuple[Delivered, Callable[[Any], None] | None]] = []
        self.log: dict[int, list[tuple[bytes, bytes]]] = {}  # the changelog, per partition

    def send(self, topic: str, key: bytes | None, value: bytes | None, **kwargs: Any) -> None:
        partition = kwargs.get("partition")
        self.sent.append((topic, key, value, partition))
        assert key is not None and value is not None and partition is not None
        msg = Delivered(partition, -1, key, value)
        self.waiting.append((msg, kwargs.get("on_delivery")))

    def deliver(self, n: int | None = None) -> None:
        n = len(self.waiting) if n is None else n
        done, self.waiting = self.waiting[:n], self.waiting[n:]
        for msg, callback in done:
            log = self.log.setdefault(msg._partition, [])
            msg._offset = len(log)
            log.append((msg._key, msg._value))
            if callback is not None:
                callback(msg)

    def lose(self) -> None:
        """A kill: what was not acknowledged never reaches the changelog."""
        self.waiting.clear()


KEYS = st.text(min_size=1, max_size=12)
VALUES = st.dictionaries(
    st.text(max_size=6),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**62), 2**62),
        st.text(max_size=10),
        st.lists(st.text(max_size=4), max_size=3),
    ),
    max_size=5,
)


def table(store: str, tmp_path: Path) -> tuple[JsonTable, Output, Any]:
    app = faust.App("jt-test", store=store, datadir=str(tmp_path), autodiscover=False)
    out = Output()
    raw = json_table(app, "things", 2, "test")
    return JsonTable(raw, out), out, raw  # type: ignore[arg-type]


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_values_read_back_through_faust_and_match_its_changelog_encoding(
    store: str, tmp_path: Path
) -> None:
    jt, out, raw = table(store, tmp_path)

    @settings(max_examples=40, deadline=None)
    @given(pairs=st.lists(st.tuples(KEYS, VALUES), max_size=6))
    def check(pairs: list[tuple[str, dict[str, Any]]]) -> None:
        # A key always lands on one partition, as a source key does.
        items = [(len(key) % 2, key, value) for key, value in pairs]
        out.sent.clear()
        jt.write(items)
        topic = raw.changelog_topic
        for (partition, key, value), sent in zip(items, out.sent, strict=True):
            want_key, _ = topic.prepare_key(key, raw.key_serializer)
            want_value, _ = topic.prepare_value(value, raw.value_serializer)
            assert sent == (jt.changelog, want_key, want_value, partition)
        last = {key: value for _, key, value in items}
        for key, value in last.items():
            assert jt.get(key) == value
        out.deliver()
        for key, value in last.items():
            assert jt.get(key) == value
            assert raw.data[key] == value  # Faust's own read path

    check()
    assert jt.get("never written") is None


_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.datetimes()
)
_json = st.recursive(
    _scalars, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20
)


@given(_json)
def test_the_kept_encoder_writes_exactly_what_faust_json_codec_writes(value: Any) -> None:
    assert json_codec()(value) == want_bytes(faust_json.dumps(value))


def test_the_rocksdb_store_holds_only_what_the_changelog_acknowledged(tmp_path: Path) -> None:
    """Writes, acknowledgements and kills in any order: the store (what a restart keeps)
    holds, per key, the newest value the changelog has; reads see the newest written."""
    jt, out, raw = table("rocksdb://", tmp_path)
    store = raw.data
    ops = st.lists(
        st.one_of(
            st.tuples(st.just("write"), st.lists(st.tuples(st.sampled_from("abcd"), VALUES))),
            st.tuples(st.just("deliver"), st.integers(0, 6)),
            st.tuples(st.just("kill"), st.none()),
        ),
        max_size=12,
    )

    @settings(max_examples=60, deadline=None)
    @given(ops)
    def check(steps: list[tuple[str, Any]]) -> None:
        nonlocal jt
        for key in "abcd":
            store._del(jt._key(key))
        for partition in (0, 1):  # a new changelog: its offsets start again
            store.set_persisted_offset(TP(jt.changelog, partition), -1)
        out.sent.clear()
        out.waiting.clear()
        out.log.clear()
        jt = JsonTable(raw, out)  # type: ignore[arg-type]
        written: dict[str, dict[str, Any]] = {}
        for op, arg in steps:
            if op == "write":
                items = [(ord(key) % 2, key, value) for key, value in arg]
                jt.write(items)
                written.update({key: value for _, key, value in items})
            elif op == "deliver":
                out.deliver(min(arg, len(out.waiting)))
            else:
                out.lose()
                jt = JsonTable(raw, out)  # type: ignore[arg-type]
                written = {}
            jt.items()  # settles what was acknowledged
            list(jt.items())
            acked: dict[str, dict[str, Any]] = {}
            for log in out.log.values():
                for raw_key, raw_value in log:
                    acked[faust_json.loads(raw_key)] = faust_json.loads(raw_value)
            for key in "abcd":
                held = store._get(jt._key(key))
                in_store = None if held is None else faust_json.loads(held)
                assert in_store == acked.get(key)
                assert jt.get(key) == written.get(key, acked.get(key))

    check()
