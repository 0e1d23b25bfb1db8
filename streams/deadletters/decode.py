"""Make a dead letter's key and value readable: JSON, registry Avro, text or hex."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from schemas.serde import Decoder
from streams.errors import SerdeError

Kind = Literal["json", "avro", "auto"]


@dataclass(frozen=True)
class Decoded:
    encoding: str  # json | avro | utf-8 | hex | null
    value: Any  # JSON-ready: parsed JSON, decoded Avro record, text or hex string
    note: str = ""  # why a decoding that was expected did not work

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"encoding": self.encoding, "decoded": self.value}
        if self.note:
            out["note"] = self.note
        return out

    def render(self) -> str:
        if self.encoding in ("json", "avro"):
            text = json.dumps(self.value, indent=2, default=str, ensure_ascii=False)
        elif self.encoding == "null":
            text = "null"
        else:
            text = str(self.value)
        return f"{text}\n  ({self.note})" if self.note else text


def plain(data: bytes | None) -> Decoded:
    """Text if the bytes are printable UTF-8, else hex."""
    if data is None:
        return Decoded("null", None)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return Decoded("hex", data.hex(" "))
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return Decoded("utf-8", text)
    return Decoded("hex", data.hex(" "))


def _json(data: bytes) -> Decoded | None:
    try:
        return Decoded("json", json.loads(data))
    except ValueError:
        return None


def _is_wire_format(data: bytes) -> bool:
    return len(data) >= 5 and data[0] == 0


def decode_bytes(data: bytes | None, kind: Kind, decoder: Decoder | None) -> Decoded:
    """Decode as `kind` expects; fall back to text/hex and say why.

    RegistryError (registry unreachable or failing) propagates: the bytes may be fine.
    """
    if data is None:
        return Decoded("null", None)
    if kind == "avro" or (kind == "auto" and _is_wire_format(data) and decoder is not None):
        if decoder is None:
            return plain(data)
        try:
            return Decoded("avro", decoder.decode(data))
        except SerdeError as exc:
            fallback = _json(data) or plain(data)
            return Decoded(fallback.encoding, fallback.value, f"not decodable as Avro: {exc}")
    parsed = _json(data)
    if parsed is not None:
        return parsed
    fallback = plain(data)
    if kind == "json":
        return Decoded(fallback.encoding, fallback.value, "not valid JSON")
    return fallback
