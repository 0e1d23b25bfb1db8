"""Deterministic ids equal uuid.uuid5's, whatever the namespace and name."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from streams.ids import name_id


@given(st.uuids(), st.text())
def test_name_id_is_uuid5_as_text(namespace: uuid.UUID, name: str) -> None:
    assert name_id(namespace, name) == str(uuid.uuid5(namespace, name))
