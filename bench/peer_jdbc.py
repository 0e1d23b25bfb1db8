"""The peer benchmark's Debezium JDBC sink connector: the sink half only.

It applies the raw change topic (with schemas, which it needs) straight to a PostgreSQL table:
upsert by the record key, deletes enabled. Debezium's ExtractNewRecordState adds the source
LSN as column `__lsn`, so its rows can be checked like the others (key + version). It has no
dedupe or version guard: it converges because it applies each key's changes in order.
"""

from __future__ import annotations

from connectors.kafka_connect import ConnectClient
from streams.settings import Settings

CONNECTOR_CLASS = "io.debezium.connector.jdbc.JdbcSinkConnector"


def config(settings: Settings, topic: str, database: str) -> dict[str, str]:
    db = settings.crm_db
    json_converter = "org.apache.kafka.connect.json.JsonConverter"
    return {
        "connector.class": CONNECTOR_CLASS,
        "tasks.max": "1",
        "topics": topic,
        "connection.url": f"jdbc:postgresql://{db.host}:{db.port}/{database}",
        "connection.username": db.user,
        "connection.password": db.password,
        "insert.mode": "upsert",
        "delete.enabled": "true",
        "primary.key.mode": "record_key",
        "primary.key.fields": "id",
        "schema.evolution": "basic",
        "collection.name.format": "opportunity",
        # The worker's sink writes up to 1000 events per statement batch; so does this one.
        "batch.size": "1000",
        "key.converter": json_converter,
        "key.converter.schemas.enable": "true",
        "value.converter": json_converter,
        "value.converter.schemas.enable": "true",
        "transforms": "unwrap",
        "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState",
        "transforms.unwrap.add.fields": "lsn",
        "transforms.unwrap.delete.tombstone.handling.mode": "tombstone",
    }


def deploy(settings: Settings, name: str, topic: str, database: str) -> None:
    ConnectClient(settings.connect_url).put(name, config(settings, topic, database))


def remove(settings: Settings, name: str) -> None:
    ConnectClient(settings.connect_url).delete(name)


def failure(settings: Settings, name: str) -> str | None:
    """The connector's or its task's trace when one of them failed, else None."""
    status = ConnectClient(settings.connect_url).status(name) or {}
    for part in [status.get("connector", {}), *status.get("tasks", [])]:
        if part.get("state") == "FAILED":
            return str(part.get("trace", "failed"))[:2000]
    return None
