"""Dead-letter records: the original bytes, untouched, with their context in headers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from streams.output import Headers, Output

PREFIX = "pssync.dlq."


def dlq_headers(
    stage: str,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    error: BaseException,
    original: Headers | None = None,
) -> Headers:
    context = {
        "stage": stage,
        "topic": topic,
        "partition": str(partition),
        "offset": str(offset),
        "timestamp": "" if timestamp_ms is None else str(timestamp_ms),
        "error.class": type(error).__name__,
        "error.message": str(error)[:2000],
        "failed_at": datetime.now(UTC).isoformat(),
    }
    return [*(original or []), *((PREFIX + k, v.encode()) for k, v in context.items())]


def read_context(headers: Sequence[tuple[str, Any]] | None) -> dict[str, str]:
    """The pssync context of a dead-letter record (for tools and tests)."""
    return {
        k[len(PREFIX) :]: v.decode() if isinstance(v, bytes) else str(v)
        for k, v in headers or []
        if k.startswith(PREFIX)
    }


def send_to_dlq(
    output: Output, dlq_topic: str, stage: str, message: Any, error: BaseException
) -> None:
    """`message` is a Faust/aiokafka-style message (topic, partition, offset, key, value...)."""
    raw_headers = getattr(message, "headers", None) or []
    original: Headers = [
        (k, bytes(v))
        for k, v in (raw_headers.items() if isinstance(raw_headers, dict) else raw_headers)
        if v is not None
    ]
    headers = dlq_headers(
        stage,
        message.topic,
        message.partition,
        message.offset,
        getattr(message, "timestamp", None) and int(message.timestamp * 1000),
        error,
        original,
    )
    output.send(dlq_topic, message.key, message.value, headers)
