"""One decode per fetched record, however many stages of its runner read it.

The sink and the deal stage both read canonical.opportunity under one runner
(streams/agents/fanout.py), each decoding every record it gets. Through a SharedDecoder the
second stage gets the record the first one decoded. Decoded records are shared: stages read
them and never change them. The runner forgets them when the batch is done (release).
"""

from __future__ import annotations

from typing import Any

from faust.types import Message

from schemas.registry import Registry
from schemas.serde import Decoder
from streams.errors import SerdeError


class SharedDecoder:
    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        # id(message) -> (message, record): holding the message keeps its id from being
        # reused by another object while the entry lives.
        self._records: dict[int, tuple[Message, dict[str, Any]]] = {}

    @classmethod
    def of(cls, registry: Registry) -> SharedDecoder:
        """The stages' decoder: writer schemas from `registry`, uuid fields as their text
        (the stages use them only as text)."""
        return cls(Decoder(registry.schema_by_id, uuid_text=True))

    def decode(self, msg: Message) -> dict[str, Any]:
        """The record of `msg`'s value (not None), decoded on first use in this batch."""
        held = self._records.get(id(msg))
        if held is not None and held[0] is msg:
            return held[1]
        if msg.value is None:
            raise SerdeError("a tombstone has no record to decode; check for None first")
        record = self.decoder.decode(msg.value)
        self._records[id(msg)] = (msg, record)
        return record

    def release(self) -> None:
        """The runner's batch is done: forget its records."""
        self._records.clear()
