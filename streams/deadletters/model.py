"""A dead letter as read back from a DLQ topic, and how one is named on the command line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from streams.dlq import PREFIX, read_context
from streams.errors import ConfigError

# Names the dead letter a rerun record was produced from; a rerun that fails again carries
# it into its new dead letter, so every loop is visible.
RERUN_HEADER = "pssync.rerun.of"

Header = tuple[str, bytes | None]
# What producers accept: confluent-kafka takes str or bytes values.
OutHeader = tuple[str, str | bytes | None]


@dataclass(frozen=True, order=True)
class Ref:
    """A record's position: `<topic>:<partition>:<offset>`."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


def parse_ref(text: str) -> Ref:
    parts = text.strip().rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
        raise ConfigError(
            f"{text!r} is not a dead letter; write <dlq topic>:<partition>:<offset>, "
            "e.g. dlq.normalize:0:42 (see `pssync dlq list --records`)"
        )
    return Ref(parts[0], int(parts[1]), int(parts[2]))


def parse_refs(text: str) -> list[Ref]:
    """Comma-separated refs, in the order given, without repeats."""
    refs = [parse_ref(t) for t in text.split(",") if t.strip()]
    if not refs:
        raise ConfigError("--offsets is empty; give <dlq topic>:<partition>:<offset>[,...]")
    return list(dict.fromkeys(refs))


@dataclass(frozen=True)
class DeadLetter:
    ref: Ref
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]  # as on the DLQ record: original ones + pssync.dlq.*
    timestamp_ms: int  # when the DLQ record was written (broker/producer time)

    @classmethod
    def of(
        cls,
        ref: Ref,
        key: bytes | None,
        value: bytes | None,
        headers: Mapping[str, str | bytes | None] | Sequence[OutHeader] | None,
        timestamp_ms: int,
    ) -> DeadLetter:
        pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
        normalized = tuple((k, v.encode() if isinstance(v, str) else v) for k, v in pairs)
        return cls(ref, key, value, normalized, timestamp_ms)

    @property
    def context(self) -> dict[str, str]:
        return read_context(self.headers)

    @property
    def is_dead_letter(self) -> bool:
        return "topic" in self.context

    @property
    def stage(self) -> str:
        return self.context.get("stage", "?")

    @property
    def error_class(self) -> str:
        return self.context.get("error.class", "?")

    @property
    def error_message(self) -> str:
        return self.context.get("error.message", "")

    @property
    def origin(self) -> Ref | None:
        """Where the record was read when it failed; None if the headers do not say."""
        ctx = self.context
        try:
            return Ref(ctx["topic"], int(ctx["partition"]), int(ctx["offset"]))
        except (KeyError, ValueError):
            return None

    @property
    def failed_at(self) -> datetime:
        raw = self.context.get("failed_at", "")
        try:
            when = datetime.fromisoformat(raw)
            return when if when.tzinfo else when.replace(tzinfo=UTC)
        except ValueError:
            return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def original_headers(self) -> list[Header]:
        """The headers the record had on its origin topic, byte for byte."""
        return [(k, v) for k, v in self.headers if not k.startswith(PREFIX)]

    @property
    def rerun_of(self) -> str | None:
        """The earlier dead letter this record was rerun from, if it was."""
        for k, v in self.original_headers:
            if k == RERUN_HEADER and v is not None:
                return v.decode(errors="replace")
        return None

    def rerun_headers(self) -> list[OutHeader]:
        """Original headers minus pssync's DLQ context, plus the name of this dead letter."""
        kept: list[OutHeader] = [(k, v) for k, v in self.original_headers if k != RERUN_HEADER]
        return [*kept, (RERUN_HEADER, str(self.ref).encode())]
