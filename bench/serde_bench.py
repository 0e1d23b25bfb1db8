"""Encode/decode rate of pssync's serde vs confluent-kafka's AvroSerializer/AvroDeserializer.

Both sides handle the same time_entry records against the same registered schema (registered
once); each figure is the median records/s of several runs. Needs the registry (make up).

    .venv/bin/python bench/serde_bench.py [--records 20000] [--runs 5] [--namespace bench]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas import contracts, conventions
from schemas.registry import Registry, client_config
from schemas.samples import Sampler
from schemas.serde import Decoder, encode
from streams.settings import Settings

ENTITY = "time_entry"


def rate(fn: Callable[[], Any], n: int, runs: int) -> float:
    """Median records/s over `runs` timed runs of `fn` (which handles `n` records)."""
    fn()  # warm caches (schema ids, parsed schemas) outside the timing
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return n / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument(
        "--namespace",
        default="bench",
        help="topic namespace of the benchmark subject, kept apart from live ones",
    )
    args = p.parse_args(argv)

    settings = Settings.from_env()
    topic = conventions.canonical_topic(ENTITY, args.namespace)
    subject = conventions.value_subject(topic)
    schema_str = contracts.schema_str(ENTITY)
    registry = Registry(settings)
    schema_id = registry.register(subject, schema_str)
    parsed = contracts.parsed(ENTITY)
    records = Sampler(contracts.schema(ENTITY), seed=1).records(args.records)

    client = SchemaRegistryClient(client_config(settings))
    ser = AvroSerializer(
        client, schema_str, conf={"auto.register.schemas": False, "use.latest.version": False}
    )
    de = AvroDeserializer(client)
    ctx = SerializationContext(topic, MessageField.VALUE)
    decoder = Decoder(registry.schema_by_id)

    ours = [encode(schema_id, parsed, r) for r in records]
    theirs = [ser(r, ctx) for r in records]
    assert ours == theirs, "the two serializers disagree on the bytes"

    n, runs = args.records, args.runs
    results = {
        "encode": (
            rate(lambda: [encode(schema_id, parsed, r) for r in records], n, runs),
            rate(lambda: [ser(r, ctx) for r in records], n, runs),
        ),
        "decode": (
            rate(lambda: [decoder.decode(b) for b in ours], n, runs),
            rate(lambda: [de(b, ctx) for b in theirs], n, runs),
        ),
    }
    size = statistics.mean(len(b) for b in ours)
    print(
        f"{ENTITY}: {n} records x {runs} runs (median), {size:.0f} bytes/record, "
        f"schema id {schema_id} on {subject}"
    )
    print(f"{'op':<8}{'pssync rec/s':>15}{'confluent rec/s':>18}{'ratio':>8}")
    for op, (a, b) in results.items():
        print(f"{op:<8}{a:>15,.0f}{b:>18,.0f}{a / b:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
