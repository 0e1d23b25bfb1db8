from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.dlq import dlq_headers, read_context, send_to_dlq
from streams.errors import BadEventError


@dataclass
class FakeOutput:
    sent: list[tuple[str, Any, Any, Any]] = field(default_factory=list)

    def send(self, topic: str, key: Any, value: Any, headers: Any = None) -> None:
        self.sent.append((topic, key, value, headers))


@dataclass
class Msg:
    topic: str = "crm.sales.opportunity"
    partition: int = 2
    offset: int = 41
    key: bytes = b'{"id":"1"}'
    value: bytes = b"\xff\x00garbage"
    timestamp: float = 1700000000.5
    headers: list[tuple[str, bytes]] = field(default_factory=lambda: [("trace", b"abc")])


def test_headers_carry_context_and_keep_original_headers() -> None:
    headers = dlq_headers("normalize", "t", 1, 7, 123, BadEventError("bad"), [("h", b"v")])
    assert headers[0] == ("h", b"v")
    ctx = read_context(headers)
    assert ctx["stage"] == "normalize" and ctx["topic"] == "t"
    assert (ctx["partition"], ctx["offset"], ctx["timestamp"]) == ("1", "7", "123")
    assert ctx["error.class"] == "BadEventError" and ctx["error.message"] == "bad"
    assert ctx["failed_at"]


def test_send_keeps_original_bytes() -> None:
    out = FakeOutput()
    send_to_dlq(out, "dlq.normalize", "normalize", Msg(), ValueError("boom"))  # type: ignore[arg-type]
    topic, key, value, headers = out.sent[0]
    assert (topic, key, value) == ("dlq.normalize", b'{"id":"1"}', b"\xff\x00garbage")
    ctx = read_context(headers)
    assert ctx["offset"] == "41" and ctx["timestamp"] == "1700000000500"
    assert ("trace", b"abc") in headers
