"""JsonTable writes each value once for the store and the changelog, as Faust encodes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
import pytest
from faust.utils import json as faust_json
from hypothesis import given, settings
from hypothesis import strategies as st
from mode.utils.compat import want_bytes

from tables.json_table import JsonTable, json_codec, json_table


class Output:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, **kwargs: Any) -> None:
        self.sent.append((topic, key, value, kwargs.get("partition")))


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
