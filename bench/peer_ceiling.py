"""The peer benchmark's ceiling: the whole job in one hand-written confluent-kafka loop.

Per batch (bounded by PSSYNC_BATCH_SIZE and PSSYNC_BATCH_WITHIN, as the worker's): consume,
parse, dedupe in a dict, map, Avro encode (wire format, registered id), produce and flush,
then decode what was produced and upsert it with PostgresSink.apply (the sink code the
worker uses), then commit. No framework, no state store, no second consumer.
Prints READY once it is about to consume.

    python bench/peer_ceiling.py RAW_TOPIC CANONICAL_TOPIC GROUP TARGET_URL
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from connectors.sinks.postgres import PostgresSink
from schemas import contracts
from schemas.conventions import value_subject
from schemas.registry import Registry
from schemas.serde import Decoder, encode
from streams.changes import parse
from streams.mappings.crm import map_opportunity
from streams.output import Output
from streams.security import kafka_config
from streams.settings import Settings
from tables.dedupe import Position, Verdict, decide


async def run(raw: str, canonical: str, group: str, target_url: str) -> None:
    settings = Settings.from_env()
    registry = Registry(settings)
    schema_id = registry.register(value_subject(canonical), contracts.schema_str("opportunity"))
    parsed = contracts.parsed("opportunity")
    decoder = Decoder(registry.schema_by_id)
    output = Output(settings, client_id="bench-ceiling")
    sink = PostgresSink(target_url, "opportunity")
    await sink.ensure_schema()
    consumer = Consumer(kafka_config(settings, **{
        "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
    }))
    # Assigned, not subscribed: no group join to wait for, the best case for the ceiling.
    consumer.assign([TopicPartition(raw, 0, OFFSET_BEGINNING)])
    state: dict[str, Position] = {}
    print("READY", flush=True)
    while True:
        # The worker's batch bounds (PSSYNC_BATCH_SIZE, PSSYNC_BATCH_WITHIN): the same batches.
        messages = consumer.consume(settings.batch_size, settings.batch_within)
        if not messages:
            continue
        produced: list[tuple[str, bytes]] = []
        for m in messages:
            if m.error():
                continue
            change = parse(m.key(), m.value(), m.topic() or raw)
            if change is None:
                continue
            sk = f"{change.connector}/{change.entity}/{change.key}"
            verdict, pos = decide(state.get(sk), change.sequence, change.op == "delete")
            if verdict is not Verdict.EMIT:
                continue
            key, record = map_opportunity(change, f"{m.topic()}/{m.partition()}/{m.offset()}")
            value = encode(schema_id, parsed, record)
            output.send(canonical, key.encode(), value)
            produced.append((key, value))
            state[sk] = pos
        await output.flush()
        events: list[dict[str, Any]] = []
        for key, value in produced:
            rec = decoder.decode(value)
            rec["key"] = key
            events.append(rec)
        await sink.apply(events)
        consumer.commit(asynchronous=True)


def main() -> None:
    raw, canonical, group, target_url = sys.argv[1:5]
    asyncio.run(run(raw, canonical, group, target_url))


if __name__ == "__main__":
    main()
