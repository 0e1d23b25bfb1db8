"""Faust codec for Confluent wire-format Avro, on top of schemas.serde."""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs
from faust.types.codecs import CodecT

from schemas.serde import Decoder, Encoder
from streams.errors import SerdeError


class AvroCodec(codecs.Codec):
    """Faust codec: records <-> Confluent wire-format Avro.

    Built from an Encoder (for dumps) and a Decoder (for loads); either may be omitted for a
    topic that is only read or only written.
    """

    def __init__(self, children: tuple[CodecT, ...] | None = None, *,
                 encoder: Encoder | None = None, decoder: Decoder | None = None) -> None:
        super().__init__(children, encoder=encoder, decoder=decoder)
        self.encoder = encoder
        self.decoder = decoder

    def _dumps(self, obj: Any) -> bytes:
        if self.encoder is None:
            raise SerdeError("this Avro codec has no encoder; build it with encoder=Encoder(...)")
        return self.encoder.encode(obj)

    def _loads(self, s: bytes) -> Any:
        if self.decoder is None:
            raise SerdeError("this Avro codec has no decoder; build it with decoder=Decoder(...)")
        return self.decoder.decode(s)


def register_codec(name: str, codec: AvroCodec) -> None:
    """Make `codec` usable as ``value_serializer=name`` in Faust topics and agents.

    Called by the app at startup (never at import) because a codec needs a live registry.
    """
    codecs.register(name, codec)
