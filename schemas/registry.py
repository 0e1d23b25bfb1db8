"""Schema-registry client: Confluent REST API (Confluent, Apicurio ccompat, Karapace...)."""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streams.errors import RegistryError
from streams.settings import Settings


def client_config(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {"url": settings.registry_url}
    if settings.registry_user:
        conf["basic.auth.user.info"] = f"{settings.registry_user}:{settings.registry_password}"
    return conf


class Registry:
    """Thin wrapper that caches ids and schemas and turns failures into RegistryError."""

    def __init__(self, settings: Settings, client: SchemaRegistryClient | None = None) -> None:
        self.url = settings.registry_url
        self.client = client or SchemaRegistryClient(client_config(settings))
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}

    def register(self, subject: str, schema_str: str) -> int:
        """Register (idempotent: same schema -> same id) and return the schema id."""
        key = (subject, schema_str)
        if key not in self._ids:
            try:
                self._ids[key] = self.client.register_schema(subject, Schema(schema_str, "AVRO"))
            except SchemaRegistryError as exc:
                raise RegistryError(
                    f"registry at {self.url} refused schema for subject {subject!r}: "
                    f"{exc.error_message} (HTTP {exc.http_status_code}); run "
                    f"`pssync schemas check` to see what breaks compatibility"
                ) from exc
            except Exception as exc:
                raise RegistryError(
                    f"cannot reach the schema registry at {self.url}: {exc}; check "
                    "PSSYNC_REGISTRY_URL and that the registry is up (make status)"
                ) from exc
        return self._ids[key]

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        if schema_id not in self._schemas:
            try:
                found = self.client.get_schema(schema_id)
            except SchemaRegistryError as exc:
                raise RegistryError(
                    f"schema id {schema_id} is unknown to the registry at {self.url} "
                    f"({exc.error_message}); the bytes were written against another registry"
                ) from exc
            except Exception as exc:
                raise RegistryError(f"cannot reach the schema registry at {self.url}: {exc}") from exc
            self._schemas[schema_id] = json.loads(found.schema_str)
        return self._schemas[schema_id]
