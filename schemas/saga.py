"""The saga's Avro records (schemas/avro/saga): commands to applications and their results."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from schemas.serde import parse

SAGA_DIR = Path(__file__).resolve().parent / "avro" / "saga"
COMMAND = "command"
RESULT = "result"
# The ERP posting queue's records (streams/postings.py).
POSTING = "posting"
POSTING_RESULT = "posting_result"


@cache
def schema_str(name: str) -> str:
    """`command` or `result` as registered (the file's JSON text)."""
    return (SAGA_DIR / f"{name}.avsc").read_text()


def parsed(name: str) -> Any:
    return parse(schema_str(name))
