"""One decode per fetched record, however many stages of its runner read it.

The sink and the deal stage both read canonical.opportunity under one runner
(streams/agents/fanout.py), each decoding every record it gets. Through a SharedDecoder the
second stage gets the record the first one decoded. Decoded records are shared: stages read
them and never change them. The runner forgets them when the batch is done (release).

While a batch waits on its target or on Kafka, the runner's next fetch is decoded ahead
(about a fifth of the sink's work), so that work fills the wait instead of following it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from faust.types import Message

from schemas.registry import Registry
from schemas.serde import Decoder
from streams.errors import SerdeError

if TYPE_CHECKING:
    from streams.agents.batching import StageRunner

# Records decoded ahead between two turns of the event loop (about 5 ms of work).
AHEAD_SLICE = 256


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

    async def ahead(self, messages: Sequence[Message]) -> None:
        """Decode the records of the runner's next fetch while its current batch waits on the
        target, giving the loop back between slices. A record that fails here is left for
        its stage, which dead-letters it with the error."""
        for start in range(0, len(messages), AHEAD_SLICE):
            for msg in messages[start : start + AHEAD_SLICE]:
                if msg.value is None or id(msg) in self._records:
                    continue
                try:
                    self.decode(msg)
                except Exception:  # noqa: BLE001 - the stage meets it again
                    continue
            await asyncio.sleep(0)

    def release(self, messages: Sequence[Message]) -> None:
        """The runner's batch is done: forget its records (not those decoded ahead)."""
        records = self._records
        for msg in messages:
            held = records.get(id(msg))
            if held is not None and held[0] is msg:
                del records[id(msg)]

    def attach(self, runner: StageRunner) -> None:
        """Share this decoder's records over `runner`'s batches (once per runner)."""
        if self.release not in runner.after_batch:
            runner.after_batch.append(self.release)
            runner.ahead.append(self.ahead)
