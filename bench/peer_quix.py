# mypy: allow-subclassing-any
"""The peer benchmark's Quix Streams peer: the same job written the Quix Streams way.

One Application, two dataframes, like the pssync worker's two agents:
  raw topic -> parse, dedupe in Quix's RocksDB state (per key, changelogged), map
            -> canonical topic, Avro through Quix's serializer with the schema registry
  canonical topic -> Avro decode (registry) -> a BatchingSink that calls PostgresSink.apply,
            the sink code the worker uses, once per Quix checkpoint.
Runs in .venv-quix (Quix Streams pins an older confluent-kafka than pssync). Prints READY
right before Application.run().

    python bench/peer_quix.py RAW_TOPIC CANONICAL_TOPIC GROUP TARGET_URL STATE_DIR
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from quixstreams import Application, message_context
from quixstreams.kafka.configuration import ConnectionConfig
from quixstreams.models.serializers.avro import AvroDeserializer, AvroSerializer
from quixstreams.models.serializers.schema_registry import SchemaRegistryClientConfig
from quixstreams.sinks import BatchingSink, SinkBatch

from connectors.sinks.postgres import PostgresSink
from schemas import contracts
from schemas.registry import client_config
from streams.changes import parse
from streams.mappings.crm import map_opportunity, opportunity_key
from streams.security import kafka_config
from streams.settings import Settings
from tables.dedupe import Position, Verdict, decide

# Quix flushes sinks and commits on each checkpoint; 1 s keeps batches near the worker's.
COMMIT_INTERVAL = 1.0


class PostgresBatchSink(BatchingSink):
    """Applies each checkpoint's batch with PostgresSink.apply (upsert guarded by version)."""

    def __init__(self, target_url: str) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.target = PostgresSink(target_url, "opportunity")
        self.loop.run_until_complete(self.target.ensure_schema())

    def write(self, batch: SinkBatch) -> None:
        events = [{**item.value, "key": item.key} for item in batch]
        self.loop.run_until_complete(self.target.apply(events))


def normalize(value: bytes, key: bytes, _ts: int, _headers: Any, state: Any) -> Any:
    ctx = message_context()
    change = parse(key, value, ctx.topic)
    if change is None:
        return None
    sk = f"{change.connector}/{change.entity}/{change.key}"
    verdict, pos = decide(Position.from_json(state.get(sk)), change.sequence,
                          change.op == "delete")
    if verdict is not Verdict.EMIT:
        return None
    _, record = map_opportunity(change, f"{ctx.topic}/{ctx.partition}/{ctx.offset}")
    state.set(sk, pos.to_json())
    return record


def canonical_key(record: dict[str, Any]) -> str:
    return opportunity_key(str(record["envelope"]["source"]["key"]))


def main() -> None:
    raw_name, canonical_name, group, target_url, state_dir = sys.argv[1:6]
    settings = Settings.from_env()
    # The registry's URL, auth and TLS as pssync's own client has them.
    # (Its config has no request timeout field.)
    registry = SchemaRegistryClientConfig(
        **{k.replace(".", "_"): v for k, v in client_config(settings).items() if k != "timeout"}
    )
    app = Application(
        # Bootstrap, TLS and SASL as every pssync client has them (streams/security.py).
        broker_address=ConnectionConfig.from_librdkafka_dict(kafka_config(settings)),
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        commit_interval=COMMIT_INTERVAL,
        loglevel="WARNING",
    )
    raw = app.topic(raw_name, key_deserializer="bytes", value_deserializer="bytes")
    schema = json.loads(contracts.schema_str("opportunity"))
    canonical = app.topic(
        canonical_name,
        key_serializer="string",
        value_serializer=AvroSerializer(schema, schema_registry_client_config=registry),
        key_deserializer="string",
        value_deserializer=AvroDeserializer(schema_registry_client_config=registry),
    )
    normalized = app.dataframe(raw).apply(normalize, stateful=True, metadata=True)
    normalized = normalized.filter(lambda record: record is not None)
    normalized.to_topic(canonical, key=canonical_key)
    app.dataframe(canonical).sink(PostgresBatchSink(target_url))
    print("READY", flush=True)
    app.run()


if __name__ == "__main__":
    main()
