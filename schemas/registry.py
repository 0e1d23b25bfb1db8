"""Schema-registry client: Confluent REST API (Confluent, Apicurio ccompat, Karapace...)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streams.errors import RegistryError, SerdeError
from streams.settings import Settings, redact_url

T = TypeVar("T")
NOT_FOUND = 404


def client_config(settings: Settings) -> dict[str, Any]:
    """SchemaRegistryClient configuration: URL, basic auth and TLS from settings."""
    # Without a timeout the client waits forever on a registry that accepted the connection
    # and never answers; with one, its own retries take over.
    conf: dict[str, Any] = {"url": settings.registry_url, "timeout": 30}
    if settings.registry_user:
        conf["basic.auth.user.info"] = f"{settings.registry_user}:{settings.registry_password}"
    if settings.registry_ca_file:
        conf["ssl.ca.location"] = settings.registry_ca_file
    if settings.registry_cert_file:
        conf["ssl.certificate.location"] = settings.registry_cert_file
    if settings.registry_key_file:
        conf["ssl.key.location"] = settings.registry_key_file
    return conf


@dataclass(frozen=True)
class Version:
    """One registered version of a subject."""

    subject: str
    version: int
    schema_id: int
    schema_str: str

    @property
    def schema(self) -> Any:
        return json.loads(self.schema_str)


class Registry:
    """Thin wrapper that caches ids and schemas and turns failures into RegistryError."""

    def __init__(self, settings: Settings, client: SchemaRegistryClient | None = None) -> None:
        # Only ever shown in messages: never with a password from the URL.
        self.url = redact_url(settings.registry_url)
        self.client = client or SchemaRegistryClient(client_config(settings))
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except SchemaRegistryError as exc:
            raise RegistryError(
                f"registry at {self.url} failed to {what}: {exc.error_message} "
                f"(HTTP {exc.http_status_code})"
            ) from exc
        except Exception as exc:
            raise RegistryError(
                f"cannot reach the schema registry at {self.url} to {what}: {exc}; check "
                "PSSYNC_REGISTRY_URL and that the registry is up (make status)"
            ) from exc

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
        """Writer schema of `schema_id`; SerdeError if the registry does not know the id."""
        if schema_id not in self._schemas:
            try:
                found = self.client.get_schema(schema_id)
            except SchemaRegistryError as exc:
                if exc.http_status_code == NOT_FOUND:
                    # The bytes are at fault, not the registry: a data error for the DLQ.
                    raise SerdeError(
                        f"schema id {schema_id} is unknown to the registry at {self.url} "
                        f"({exc.error_message}); the bytes were written against another "
                        "registry or the schema was deleted"
                    ) from exc
                raise RegistryError(
                    f"registry at {self.url} failed to return schema id {schema_id}: "
                    f"{exc.error_message} (HTTP {exc.http_status_code})"
                ) from exc
            except Exception as exc:
                raise RegistryError(
                    f"cannot reach the schema registry at {self.url}: {exc}") from exc
            self._schemas[schema_id] = json.loads(found.schema_str or "null")
        return self._schemas[schema_id]

    def subjects(self) -> list[str]:
        return sorted(self._call("list subjects", self.client.get_subjects))

    def versions(self, subject: str) -> list[int]:
        """Versions of `subject`, oldest first; empty if the subject does not exist."""
        try:
            return sorted(self.client.get_versions(subject))
        except SchemaRegistryError as exc:
            if exc.http_status_code == NOT_FOUND:
                return []
            raise RegistryError(
                f"registry at {self.url} failed to list versions of {subject!r}: "
                f"{exc.error_message}") from exc
        except Exception as exc:
            raise RegistryError(f"cannot reach the schema registry at {self.url}: {exc}") from exc

    def version(self, subject: str, version: int | Literal["latest"] = "latest") -> Version:
        found = self._call(f"get version {version} of {subject!r}",
                           lambda: self.client.get_version(subject, version))
        schema_str = found.schema.schema_str if found.schema else ""
        return Version(subject, int(found.version or 0), int(found.schema_id or 0),
                       schema_str or "")

    def is_compatible(self, subject: str, schema_str: str) -> bool:
        """The registry's verdict on `schema_str` under the subject's level (no registering)."""
        return self._call(
            f"check compatibility for {subject!r}",
            lambda: bool(self.client.test_compatibility(subject, Schema(schema_str, "AVRO"))))

    def compatibility(self, subject: str | None = None) -> str:
        """Effective level of `subject` (or the global level)."""
        return str(self._call("read the compatibility level",
                              lambda: self.client.get_compatibility(subject)))

    def set_compatibility(self, subject: str, level: str) -> None:
        self._call(f"set compatibility of {subject!r} to {level}",
                   lambda: self.client.set_compatibility(subject, level))

    def delete_subject(self, subject: str) -> None:
        """Soft then hard delete (used by tests and to retire scratch subjects)."""
        self._call(f"delete {subject!r}", lambda: self.client.delete_subject(subject))
        self._call(f"delete {subject!r}",
                   lambda: self.client.delete_subject(subject, permanent=True))
