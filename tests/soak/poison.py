"""Poison events the pipeline must dead-letter, each carrying a marker in its key."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable

MARKER = re.compile(rb"soak-poison-\d{6}")


def marker(n: int) -> str:
    return f"soak-poison-{n:06d}"


def find_marker(key: bytes | None) -> str | None:
    found = MARKER.search(key or b"")
    return found.group().decode() if found else None


def _envelope(mark: str, lsn: object = 1, **after: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": mark,
        "name": "poison",
        "stage_name": "Prospecting",
        "currency_iso_code": "EUR",
        "amount": "1.00",
    }
    row.update(after)
    return {
        "op": "c",
        "before": None,
        "after": row,
        "source": {"lsn": lsn, "ts_ms": 1, "schema": "sales", "table": "opportunity"},
    }


def _dumps(value: object) -> bytes:
    return json.dumps(value).encode()


# Raw-topic poison: (key, value) for a marker. Each is rejected by normalize for its own reason.
RAW: dict[str, Callable[[str], tuple[bytes, bytes]]] = {
    "invalid JSON": lambda m: (_dumps({"id": m}), f"{{not json {m}".encode()),
    "key not JSON": lambda m: (m.encode(), _dumps(_envelope(m))),
    "value not an object": lambda m: (_dumps({"id": m}), _dumps([m])),
    "unknown op": lambda m: (_dumps({"id": m}), _dumps({**_envelope(m), "op": "x"})),
    "missing source": lambda m: (
        _dumps({"id": m}),
        _dumps({k: v for k, v in _envelope(m).items() if k != "source"}),
    ),
    "missing after": lambda m: (_dumps({"id": m}), _dumps({**_envelope(m), "after": None})),
    "lsn not a number": lambda m: (_dumps({"id": m}), _dumps(_envelope(m, lsn="0/16B3748"))),
    "bad currency": lambda m: (
        _dumps({"id": m}),
        _dumps(_envelope(m, currency_iso_code="EUROS")),
    ),
    "missing name": lambda m: (_dumps({"id": m}), _dumps(_envelope(m, name=None))),
    "bad amount": lambda m: (_dumps({"id": m}), _dumps(_envelope(m, amount="lots"))),
    "bad close date": lambda m: (_dumps({"id": m}), _dumps(_envelope(m, close_date="soon"))),
}

# Canonical-topic poison: bytes that are not Confluent wire-format Avro; the sink dead-letters.
CANONICAL: dict[str, Callable[[str], tuple[bytes, bytes]]] = {
    "too short": lambda m: (f"crm:opportunity:{m}".encode(), b"\x00\x00\x00"),
    "bad magic byte": lambda m: (f"crm:opportunity:{m}".encode(), b"\x07\x00\x00\x00\x01\x02"),
}


def pick(rng: random.Random, mark: str) -> tuple[str, str, bytes, bytes]:
    """(stage whose DLQ must hold it, variant, key, value); one poison in five is canonical."""
    if rng.random() < 0.2:
        variant = rng.choice(sorted(CANONICAL))
        key, value = CANONICAL[variant](mark)
        return "sink", variant, key, value
    variant = rng.choice(sorted(RAW))
    key, value = RAW[variant](mark)
    return "normalize", variant, key, value
