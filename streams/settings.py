"""All settings, read from the environment in one place.

Every variable is optional and defaults to the local stack (`make up`); point pssync at
real systems by exporting the variables listed in the README.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from streams.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; set it to a whole number") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; set it to e.g. 0.5") from None


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name)
    return default if raw is None or raw == "" else raw


@dataclass(frozen=True)
class StackPorts:
    """Ports of the local stack; each overridable so it can live beside other services."""

    kafka: int = 9092
    controller: int = 9093
    connect: int = 8083
    registry: int = 8081
    registry_management: int = 9081
    postgres: int = 5432

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StackPorts:
        return cls(
            kafka=_int(env, "PSSYNC_KAFKA_PORT", cls.kafka),
            controller=_int(env, "PSSYNC_KAFKA_CONTROLLER_PORT", cls.controller),
            connect=_int(env, "PSSYNC_CONNECT_PORT", cls.connect),
            registry=_int(env, "PSSYNC_REGISTRY_PORT", cls.registry),
            registry_management=_int(
                env, "PSSYNC_REGISTRY_MANAGEMENT_PORT", cls.registry_management
            ),
            postgres=_int(env, "PSSYNC_PG_PORT", cls.postgres),
        )


@dataclass(frozen=True)
class SourceDb:
    """A PostgreSQL database Debezium captures, as the Connect worker reaches it."""

    host: str
    port: int
    user: str
    password: str
    dbname: str


@dataclass(frozen=True)
class Settings:
    ports: StackPorts = field(default_factory=StackPorts)
    stack_dir: Path = REPO_ROOT / ".stack"
    kafka_bootstrap: str = "127.0.0.1:9092"
    connect_url: str = "http://127.0.0.1:8083"
    registry_url: str = "http://127.0.0.1:8081/apis/ccompat/v7"
    registry_user: str = ""
    registry_password: str = ""
    # Source databases (as the Connect worker sees them) and the raw topic prefix per system.
    crm_db: SourceDb = SourceDb("127.0.0.1", 5432, "postgres", "postgres", "crm")
    crm_topic_prefix: str = "crm"
    # SQLAlchemy URL of the target database the sink applies canonical events to.
    target_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/target"
    # Faust application id: consumer group and prefix of table changelog topics.
    app_id: str = "pssync"
    # Prepended to every topic pssync owns (canonical, dlq); lets environments share a cluster.
    topic_namespace: str = ""
    partitions: int = 1
    replication: int = 1
    batch_size: int = 1000
    batch_within: float = 0.2
    # Seconds a failing target is retried before the worker stops (nothing is skipped).
    sink_retry_for: float = 600.0
    web_port: int = 6066
    web_bind: str = "127.0.0.1"
    data_dir: Path = REPO_ROOT / ".stack" / "worker"
    # Where the local stack keeps its PostgreSQL cluster; None: chosen by the stack (see
    # docker/local/stack.py), outside the clone when it must run as the postgres user.
    pg_data_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e: Mapping[str, str] = os.environ if env is None else env
        ports = StackPorts.from_env(e)
        stack_dir = Path(_str(e, "PSSYNC_STACK_DIR", str(REPO_ROOT / ".stack")))
        pg_host = _str(e, "PSSYNC_PG_HOST", "127.0.0.1")
        settings = cls(
            ports=ports,
            stack_dir=stack_dir,
            kafka_bootstrap=_str(e, "PSSYNC_KAFKA_BOOTSTRAP", f"127.0.0.1:{ports.kafka}"),
            connect_url=_str(e, "PSSYNC_CONNECT_URL", f"http://127.0.0.1:{ports.connect}"),
            registry_url=_str(
                e, "PSSYNC_REGISTRY_URL", f"http://127.0.0.1:{ports.registry}/apis/ccompat/v7"
            ),
            registry_user=_str(e, "PSSYNC_REGISTRY_USER", ""),
            registry_password=_str(e, "PSSYNC_REGISTRY_PASSWORD", ""),
            crm_db=SourceDb(
                host=_str(e, "PSSYNC_CRM_DB_HOST", pg_host),
                port=_int(e, "PSSYNC_CRM_DB_PORT", ports.postgres),
                user=_str(e, "PSSYNC_CRM_DB_USER", "postgres"),
                password=_str(e, "PSSYNC_CRM_DB_PASSWORD", "postgres"),
                dbname=_str(e, "PSSYNC_CRM_DB_NAME", "crm"),
            ),
            crm_topic_prefix=_str(e, "PSSYNC_CRM_TOPIC_PREFIX", "crm"),
            target_url=_str(
                e,
                "PSSYNC_TARGET_URL",
                f"postgresql+psycopg://postgres@{pg_host}:{ports.postgres}/target",
            ),
            app_id=_str(e, "PSSYNC_APP_ID", "pssync"),
            topic_namespace=_str(e, "PSSYNC_TOPIC_NAMESPACE", ""),
            partitions=_int(e, "PSSYNC_PARTITIONS", 1),
            replication=_int(e, "PSSYNC_REPLICATION", 1),
            batch_size=_int(e, "PSSYNC_BATCH_SIZE", 1000),
            batch_within=_float(e, "PSSYNC_BATCH_WITHIN", 0.2),
            sink_retry_for=_float(e, "PSSYNC_SINK_RETRY_FOR", 600.0),
            web_port=_int(e, "PSSYNC_WEB_PORT", 6066),
            web_bind=_str(e, "PSSYNC_WEB_BIND", "127.0.0.1"),
            data_dir=Path(_str(e, "PSSYNC_DATA_DIR", str(stack_dir / "worker"))),
            pg_data_dir=Path(e["PSSYNC_PG_DATA_DIR"]) if e.get("PSSYNC_PG_DATA_DIR") else None,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.partitions < 1:
            raise ConfigError("PSSYNC_PARTITIONS must be at least 1")
        if self.batch_size < 1:
            raise ConfigError("PSSYNC_BATCH_SIZE must be at least 1")
        if not self.target_url.startswith("postgresql"):
            raise ConfigError(
                f"PSSYNC_TARGET_URL={self.target_url!r}: only PostgreSQL targets are supported "
                "so far; use a postgresql+psycopg:// URL"
            )

    def describe(self) -> dict[str, str]:
        """Settings as printable strings, secrets masked."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if "password" in f.name and value:
                value = "***"
            out[f.name] = str(value)
        return out
