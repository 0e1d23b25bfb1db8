"""All settings, read from the environment in one place.

Every variable is optional and defaults to the local stack (`make up`); point pssync at
real systems by exporting the variables listed in the README.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

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


# The worker's stages, by the names their metrics and dead letters carry. A worker runs all
# of them unless PSSYNC_STAGES names some: the sink apart from the saga, say, scaled on its
# own and without application credentials, or left running while an application is down.
STAGES: tuple[str, ...] = (
    "normalize",
    "sink",
    "deal",
    "command",
    "posting",
    "invoice",
    "time_entry",
    "expense",
)


def _stages(env: Mapping[str, str], name: str) -> frozenset[str]:
    raw = _str(env, name, "all").strip().lower()
    if raw == "all":
        return frozenset(STAGES)
    picked = {part.strip() for part in raw.split(",") if part.strip()}
    unknown = sorted(picked - set(STAGES))
    if unknown or not picked:
        what = f"unknown stage {', '.join(unknown)}" if unknown else "no stage"
        raise ConfigError(
            f"{name}={env.get(name)!r}: {what}; set it to all or to a comma-separated list "
            f"of {', '.join(STAGES)}"
        )
    return frozenset(picked)


def stage_app_id(app_id: str, stages: frozenset[str]) -> str:
    """The app id of a worker running `stages`: `app_id` itself for all of them, else
    `<app_id>.<stage>...`. Workers of one app id form one consumer group and share table
    changelogs, so they must all read the same topics; a subset is its own group."""
    if stages >= set(STAGES):
        return app_id
    return ".".join([app_id, *(s for s in STAGES if s in stages)])


# Where Faust keeps table state: RocksDB files under the data dir (survive restarts, so a
# restart only reads the changelog written since), or memory (rebuilt from the whole
# changelog on every start).
Store = Literal["rocksdb", "memory"]
STORES: tuple[Store, ...] = ("rocksdb", "memory")


def _store(env: Mapping[str, str], name: str, default: Store) -> Store:
    raw = _str(env, name, default).strip().lower()
    for store in STORES:
        if raw == store:
            return store
    raise ConfigError(
        f"{name}={env.get(name)!r} is not a table store; set it to rocksdb (state kept on "
        "disk under PSSYNC_DATA_DIR, fast restarts) or memory (state rebuilt from the "
        "changelog on every start)"
    )


@dataclass(frozen=True)
class StackPorts:
    """Ports of the local stack; each overridable so it can live beside other services."""

    kafka: int = 9092
    controller: int = 9093
    connect: int = 8083
    registry: int = 8081
    registry_management: int = 9081
    postgres: int = 5432
    erp: int = 8000
    psa: int = 3000

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
            erp=_int(env, "PSSYNC_ERP_PORT", cls.erp),
            psa=_int(env, "PSSYNC_PSA_PORT", cls.psa),
        )


# Secrets are kept out of reprs (repr=False) and masked by Settings.describe().
SECRET: dict[str, bool] = {"secret": True}

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
CONNECT_SECRET_PROVIDERS = ("file", "env")


def redact_url(url: str) -> str:
    """`url` with the password of its user info replaced by ***, for messages and logs."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


@dataclass(frozen=True)
class SourceDb:
    """A PostgreSQL database Debezium captures, as the Connect worker reaches it."""

    host: str
    port: int
    user: str
    password: str = field(repr=False, metadata=SECRET)
    dbname: str = ""


def _source_db(env: Mapping[str, str], system: str, host: str, port: int, name: str) -> SourceDb:
    """PSSYNC_<SYSTEM>_DB_HOST/_PORT/_USER/_PASSWORD, defaulting to the stack's PostgreSQL."""
    return SourceDb(
        host=_str(env, f"PSSYNC_{system}_DB_HOST", host),
        port=_int(env, f"PSSYNC_{system}_DB_PORT", port),
        user=_str(env, f"PSSYNC_{system}_DB_USER", "postgres"),
        password=_str(env, f"PSSYNC_{system}_DB_PASSWORD", "postgres"),
        dbname=name,
    )


def _check_file(name: str, path: str) -> None:
    if path and not Path(path).is_file():
        raise ConfigError(f"{name}={path!r} is not a readable file; fix the path or unset it")


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client pssync builds authenticates and encrypts (see streams/security.py)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False, metadata=SECRET)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_key_password: str = field(default="", repr=False, metadata=SECRET)

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        return cls(
            protocol=_str(env, "PSSYNC_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper(),
            sasl_mechanism=_str(env, "PSSYNC_KAFKA_SASL_MECHANISM", "").upper(),
            sasl_username=_str(env, "PSSYNC_KAFKA_SASL_USERNAME", ""),
            sasl_password=_str(env, "PSSYNC_KAFKA_SASL_PASSWORD", ""),
            ssl_cafile=_str(env, "PSSYNC_KAFKA_SSL_CAFILE", ""),
            ssl_certfile=_str(env, "PSSYNC_KAFKA_SSL_CERTFILE", ""),
            ssl_keyfile=_str(env, "PSSYNC_KAFKA_SSL_KEYFILE", ""),
            ssl_key_password=_str(env, "PSSYNC_KAFKA_SSL_KEY_PASSWORD", ""),
        )

    def validate(self) -> None:
        if self.protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"PSSYNC_KAFKA_SECURITY_PROTOCOL={self.protocol!r} is not supported; "
                f"use one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        sasl_set = [
            n
            for n, v in (
                ("PSSYNC_KAFKA_SASL_MECHANISM", self.sasl_mechanism),
                ("PSSYNC_KAFKA_SASL_USERNAME", self.sasl_username),
                ("PSSYNC_KAFKA_SASL_PASSWORD", self.sasl_password),
            )
            if v
        ]
        if self.uses_sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigError(
                    f"PSSYNC_KAFKA_SECURITY_PROTOCOL={self.protocol} needs "
                    f"PSSYNC_KAFKA_SASL_MECHANISM set to one of {', '.join(SASL_MECHANISMS)}"
                    + (f" (got {self.sasl_mechanism!r})" if self.sasl_mechanism else "")
                )
            if not (self.sasl_username and self.sasl_password):
                raise ConfigError(
                    f"PSSYNC_KAFKA_SECURITY_PROTOCOL={self.protocol} needs both "
                    "PSSYNC_KAFKA_SASL_USERNAME and PSSYNC_KAFKA_SASL_PASSWORD"
                )
        elif sasl_set:
            # Credentials that would be silently ignored are a configuration mistake.
            raise ConfigError(
                f"{', '.join(sasl_set)} set but PSSYNC_KAFKA_SECURITY_PROTOCOL={self.protocol} "
                "does not use SASL; set it to SASL_SSL (or SASL_PLAINTEXT), or unset them"
            )
        ssl_set = [
            n
            for n, v in (
                ("PSSYNC_KAFKA_SSL_CAFILE", self.ssl_cafile),
                ("PSSYNC_KAFKA_SSL_CERTFILE", self.ssl_certfile),
                ("PSSYNC_KAFKA_SSL_KEYFILE", self.ssl_keyfile),
                ("PSSYNC_KAFKA_SSL_KEY_PASSWORD", self.ssl_key_password),
            )
            if v
        ]
        if ssl_set and not self.uses_ssl:
            raise ConfigError(
                f"{', '.join(ssl_set)} set but PSSYNC_KAFKA_SECURITY_PROTOCOL={self.protocol} "
                "does not use TLS; set it to SSL or SASL_SSL, or unset them"
            )
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ConfigError(
                "a TLS client certificate needs both PSSYNC_KAFKA_SSL_CERTFILE and "
                "PSSYNC_KAFKA_SSL_KEYFILE; set both (or neither)"
            )
        if self.ssl_key_password and not self.ssl_keyfile:
            raise ConfigError(
                "PSSYNC_KAFKA_SSL_KEY_PASSWORD is set without PSSYNC_KAFKA_SSL_KEYFILE; "
                "set the key file or unset the password"
            )
        _check_file("PSSYNC_KAFKA_SSL_CAFILE", self.ssl_cafile)
        _check_file("PSSYNC_KAFKA_SSL_CERTFILE", self.ssl_certfile)
        _check_file("PSSYNC_KAFKA_SSL_KEYFILE", self.ssl_keyfile)


# Applications saga commands are applied to, each by its own command stage.
COMMAND_TARGETS = ("erp", "psa", "crm")


@dataclass(frozen=True)
class CommandLimits:
    """How hard the command stage of one application may push it."""

    concurrency: int = 4  # saga keys applied at the same time
    rate: float = 10.0  # requests per second (token bucket); bursts up to `concurrency`

    @classmethod
    def from_env(cls, env: Mapping[str, str], target: str, default: CommandLimits) -> CommandLimits:
        prefix = f"PSSYNC_{target.upper()}"
        limits = cls(
            concurrency=_int(env, f"{prefix}_CONCURRENCY", default.concurrency),
            rate=_float(env, f"{prefix}_RATE", default.rate),
        )
        if limits.concurrency < 1:
            raise ConfigError(f"{prefix}_CONCURRENCY must be at least 1")
        if limits.rate <= 0:
            raise ConfigError(
                f"{prefix}_RATE={limits.rate}: requests per second must be positive, e.g. 5 or 0.5"
            )
        return limits


# Tryton takes about 58 single creates/s and Redmine about 26/s sequentially on the reference
# machine: the defaults stay well below, leaving room for people and other integrations.
DEFAULT_COMMAND_LIMITS = {
    "erp": CommandLimits(concurrency=4, rate=20.0),
    "psa": CommandLimits(concurrency=4, rate=10.0),
    "crm": CommandLimits(concurrency=4, rate=20.0),
}


@dataclass(frozen=True)
class Settings:
    ports: StackPorts = field(default_factory=StackPorts)
    stack_dir: Path = REPO_ROOT / ".stack"
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    connect_url: str = "http://127.0.0.1:8083"
    registry_url: str = "http://127.0.0.1:8081/apis/ccompat/v7"
    registry_user: str = ""
    registry_password: str = field(default="", repr=False, metadata=SECRET)
    # TLS towards the registry: CA to verify it, client certificate for mutual TLS.
    registry_ca_file: str = ""
    registry_cert_file: str = ""
    registry_key_file: str = ""
    # Source databases (as the Connect worker sees them) and the raw topic prefix per system.
    crm_db: SourceDb = SourceDb("127.0.0.1", 5432, "postgres", "postgres", "crm")
    crm_topic_prefix: str = "crm"
    # The ERP's and the PSA's own databases, captured the same way (never written to).
    erp_db: SourceDb = SourceDb("127.0.0.1", 5432, "postgres", "postgres", "erp")
    erp_topic_prefix: str = "erp"
    psa_db: SourceDb = SourceDb("127.0.0.1", 5432, "postgres", "postgres", "psa")
    psa_topic_prefix: str = "psa"
    # Reference data pssync owns (service lines, templates, regions, ...), versioned in the
    # repo; `pssync reference load` publishes it and the ERP mappings resolve against it.
    reference_file: Path = REPO_ROOT / "schemas" / "reference" / "default.json"
    # Connector configs carry references, not passwords: `file` -> ${file:<file>:crm.password}
    # (the file lives on the Connect worker's host), `env` -> ${env:PSSYNC_CRM_DB_PASSWORD}.
    connect_secrets: str = "file"
    connect_secrets_file: str = str(REPO_ROOT / ".stack" / "secrets" / "connect.properties")
    # SQLAlchemy URL of the target database the sink applies canonical events to.
    target_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/target"
    # Faust application id: consumer group and prefix of table changelog topics (with the
    # stages appended when the worker runs only some: stage_app_id).
    app_id: str = "pssync"
    stages: frozenset[str] = frozenset(STAGES)
    # Prepended to every topic pssync owns (canonical, dlq); lets environments share a cluster.
    topic_namespace: str = ""
    partitions: int = 1
    replication: int = 1
    batch_size: int = 1000
    batch_within: float = 0.2
    # Queued records a stage prepares (decodes) ahead while its batch waits on the target or
    # Kafka: the next fetch and part of the one after fill those waits; each held record
    # costs memory (a few KiB decoded). 0: nothing ahead.
    ahead_records: int = 32_768
    # Standby copies of each table partition kept by the other workers of the group, as
    # Kafka Streams' num.standby.replicas (Faust keeps 1 by default). A standby makes a
    # takeover quick but has every worker read the others' changelogs record by record:
    # about 40% more CPU per event with two workers. 0: a worker taking over a partition
    # restores its state from the changelog.
    standby_replicas: int = 0
    # Most bytes one fetch returns per partition (Faust's consumer_max_fetch_size, 1 MiB by
    # default): with a backlog, each fetch becomes one batch of each stage, and every fetch
    # costs a hop to the consumer's thread and a wait behind the stages' work.
    fetch_max_bytes: int = 8 * 1024 * 1024
    # Longest the broker holds a fetch waiting for data (Kafka's fetch.max.wait.ms; Faust
    # fixes 1.5 s). The busy partitions' next fetch can wait behind it: see
    # streams/agents/batching.py. An idle worker sends one fetch per this many ms.
    fetch_max_wait_ms: int = 50
    # Allocations between young-generation garbage collections in the worker (Python's
    # default is 700): a batch holds tens of thousands of decoded records alive, and with the
    # default each batch set off several full collections over the whole heap. 0 keeps 700.
    gc_threshold: int = 100_000
    # Seconds a failing target is retried before the worker stops (nothing is skipped).
    sink_retry_for: float = 600.0
    # Seconds a closed-won deal waits for line items still missing before it is judged on
    # what it has (line items and the deal commit separately in the CRM).
    deal_line_wait: float = 30.0
    # Seconds a posted invoice's line of unknown project is looked up again (the project's
    # events may be a moment behind); after it, the line stays unassigned until it changes.
    invoice_project_wait: float = 300.0
    # Seconds from closed-won by which the PSA project should exist (the seed's SLO: 5 min);
    # a saga still open after it counts as late.
    saga_deadline: float = 300.0
    # Seconds a change order waits for the deal it amends to be known and provisioned before
    # it becomes a business exception (it is still applied once the deal is provisioned).
    change_order_wait: float = 300.0
    # Seconds between refreshes of the business monitors' gauges (`pssync monitor --serve`).
    monitor_interval: float = 15.0
    # Seconds from an invoice's ERP commit by which the CRM should show it (the seed tolerates
    # 15 minutes); the monitor counts it late after.
    invoice_sync_slo: float = 900.0
    # How long a starting worker waits for Kafka (a broker restarting) before giving up.
    startup_wait: float = 120.0
    # Seconds a stopping worker (signal or crash) may take before it exits without a clean
    # stop, printing its stacks: a hung stop would keep a supervisor from restarting it.
    stop_timeout: float = 180.0
    # Seconds without a heartbeat before the group gives a silent worker's partitions away:
    # how long a killed worker's partitions wait (Faust's default is 60).
    session_timeout: float = 20.0
    # Seconds an unavailable application is retried before the worker stops (nothing skipped).
    command_retry_for: float = 600.0
    erp_commands: CommandLimits = DEFAULT_COMMAND_LIMITS["erp"]
    # Postings of approved work (time entries, expenses) per ERP batch operation; they share
    # the ERP's rate (PSSYNC_ERP_RATE) with the saga's ERP commands.
    posting_batch_size: int = 100
    # Seconds an approved time entry waits for its project or person to become known before
    # it is reported as a business exception (it still posts once they arrive).
    time_entry_wait: float = 300.0
    # Seconds an approved expense waits for its project to become known before it is
    # reported as a business exception (it still posts once the project arrives).
    expense_wait: float = 300.0
    psa_commands: CommandLimits = DEFAULT_COMMAND_LIMITS["psa"]
    crm_commands: CommandLimits = DEFAULT_COMMAND_LIMITS["crm"]
    web_port: int = 6066
    web_bind: str = "127.0.0.1"
    data_dir: Path = REPO_ROOT / ".stack" / "worker"
    store: Store = "rocksdb"
    # RocksDB memory per table partition (tables/store.py): each write buffer (two), and the
    # block cache that keeps read blocks.
    rocksdb_write_buffer_mb: int = 16
    rocksdb_block_cache_mb: int = 64
    # Where the local stack keeps its PostgreSQL cluster; None: chosen by the stack (see
    # docker/local/stack.py), outside the clone when it must run as the postgres user.
    pg_data_dir: Path | None = None
    # Masked copies for analytics: policy file (empty: off), topic prefix, HMAC key for `hash`.
    analytics_policy: str = ""
    analytics_prefix: str = "analytics"
    masking_key: str = field(default="", repr=False, metadata=SECRET)
    # The ERP (Tryton): JSON-RPC base URL, database, and the integration user pssync writes
    # as. Its password is read from a file (0600), never from the environment's defaults.
    erp_url: str = "http://127.0.0.1:8000"
    erp_database: str = "erp"
    erp_user: str = "pssync"
    erp_password_file: Path = REPO_ROOT / ".stack" / "secrets" / "erp-pssync.password"
    # The PSA (Redmine): REST base URL and the file holding the integration user's API key.
    psa_url: str = "http://127.0.0.1:3000"
    psa_api_key_file: Path = REPO_ROOT / ".stack" / "secrets" / "psa-pssync.key"
    # The Redmine project whose members are the groups pssync staffs projects from (project
    # managers, placeholders); the integration user sees those groups through it.
    psa_directory_project: str = "pssync-integration"
    # SQLAlchemy URL the CRM write-back connects with: a role that may update only the
    # fields pssync owns (connectors/sql/crm.sql), which stands in for the CRM's API. The
    # default is that role on the CRM database above.
    crm_writeback_url: str = "postgresql+psycopg://pssync_crm_writeback@127.0.0.1:5432/crm"
    # True when PSSYNC_ERP_URL / PSSYNC_PSA_URL name a system the local stack does not run:
    # `make up` then only checks that it answers.
    erp_external: bool = False
    psa_external: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e: Mapping[str, str] = os.environ if env is None else env
        ports = StackPorts.from_env(e)
        stack_dir = Path(_str(e, "PSSYNC_STACK_DIR", str(REPO_ROOT / ".stack")))
        pg_host = _str(e, "PSSYNC_PG_HOST", "127.0.0.1")
        secrets = stack_dir / "secrets"
        stages = _stages(e, "PSSYNC_STAGES")
        settings = cls(
            ports=ports,
            stack_dir=stack_dir,
            kafka_bootstrap=_str(e, "PSSYNC_KAFKA_BOOTSTRAP", f"127.0.0.1:{ports.kafka}"),
            kafka_security=KafkaSecurity.from_env(e),
            connect_url=_str(e, "PSSYNC_CONNECT_URL", f"http://127.0.0.1:{ports.connect}"),
            registry_url=_str(
                e, "PSSYNC_REGISTRY_URL", f"http://127.0.0.1:{ports.registry}/apis/ccompat/v7"
            ),
            registry_user=_str(e, "PSSYNC_REGISTRY_USER", ""),
            registry_password=_str(e, "PSSYNC_REGISTRY_PASSWORD", ""),
            registry_ca_file=_str(e, "PSSYNC_REGISTRY_CA_FILE", ""),
            registry_cert_file=_str(e, "PSSYNC_REGISTRY_CERT_FILE", ""),
            registry_key_file=_str(e, "PSSYNC_REGISTRY_KEY_FILE", ""),
            crm_db=SourceDb(
                host=_str(e, "PSSYNC_CRM_DB_HOST", pg_host),
                port=_int(e, "PSSYNC_CRM_DB_PORT", ports.postgres),
                user=_str(e, "PSSYNC_CRM_DB_USER", "postgres"),
                password=_str(e, "PSSYNC_CRM_DB_PASSWORD", "postgres"),
                dbname=_str(e, "PSSYNC_CRM_DB_NAME", "crm"),
            ),
            crm_topic_prefix=_str(e, "PSSYNC_CRM_TOPIC_PREFIX", "crm"),
            erp_db=_source_db(e, "ERP", pg_host, ports.postgres, _str(e, "PSSYNC_ERP_DB", "erp")),
            erp_topic_prefix=_str(e, "PSSYNC_ERP_TOPIC_PREFIX", "erp"),
            psa_db=_source_db(
                e, "PSA", pg_host, ports.postgres, _str(e, "PSSYNC_PSA_DB_NAME", "psa")
            ),
            psa_topic_prefix=_str(e, "PSSYNC_PSA_TOPIC_PREFIX", "psa"),
            reference_file=Path(
                _str(
                    e,
                    "PSSYNC_REFERENCE_FILE",
                    str(REPO_ROOT / "schemas" / "reference" / "default.json"),
                )
            ),
            connect_secrets=_str(e, "PSSYNC_CONNECT_SECRETS", "file").lower(),
            connect_secrets_file=_str(
                e, "PSSYNC_CONNECT_SECRETS_FILE", str(stack_dir / "secrets" / "connect.properties")
            ),
            target_url=_str(
                e,
                "PSSYNC_TARGET_URL",
                f"postgresql+psycopg://postgres@{pg_host}:{ports.postgres}/target",
            ),
            app_id=stage_app_id(_str(e, "PSSYNC_APP_ID", "pssync"), stages),
            stages=stages,
            topic_namespace=_str(e, "PSSYNC_TOPIC_NAMESPACE", ""),
            partitions=_int(e, "PSSYNC_PARTITIONS", 1),
            replication=_int(e, "PSSYNC_REPLICATION", 1),
            batch_size=_int(e, "PSSYNC_BATCH_SIZE", 1000),
            batch_within=_float(e, "PSSYNC_BATCH_WITHIN", 0.2),
            ahead_records=_int(e, "PSSYNC_AHEAD_RECORDS", 32_768),
            standby_replicas=_int(e, "PSSYNC_STANDBY_REPLICAS", 0),
            fetch_max_bytes=_int(e, "PSSYNC_FETCH_MAX_BYTES", 8 * 1024 * 1024),
            fetch_max_wait_ms=_int(e, "PSSYNC_FETCH_MAX_WAIT_MS", 50),
            gc_threshold=_int(e, "PSSYNC_GC_THRESHOLD", 100_000),
            sink_retry_for=_float(e, "PSSYNC_SINK_RETRY_FOR", 600.0),
            deal_line_wait=_float(e, "PSSYNC_DEAL_LINE_WAIT", 30.0),
            invoice_project_wait=_float(e, "PSSYNC_INVOICE_PROJECT_WAIT", 300.0),
            saga_deadline=_float(e, "PSSYNC_SAGA_DEADLINE", 300.0),
            change_order_wait=_float(e, "PSSYNC_CHANGE_ORDER_WAIT", 300.0),
            monitor_interval=_float(e, "PSSYNC_MONITOR_INTERVAL", 15.0),
            invoice_sync_slo=_float(e, "PSSYNC_INVOICE_SYNC_SLO", 900.0),
            startup_wait=_float(e, "PSSYNC_STARTUP_WAIT", 120.0),
            stop_timeout=_float(e, "PSSYNC_STOP_TIMEOUT", 180.0),
            session_timeout=_float(e, "PSSYNC_SESSION_TIMEOUT", 20.0),
            command_retry_for=_float(e, "PSSYNC_COMMAND_RETRY_FOR", 600.0),
            erp_commands=CommandLimits.from_env(e, "erp", DEFAULT_COMMAND_LIMITS["erp"]),
            posting_batch_size=_int(e, "PSSYNC_POSTING_BATCH_SIZE", 100),
            time_entry_wait=_float(e, "PSSYNC_TIME_ENTRY_WAIT", 300.0),
            expense_wait=_float(e, "PSSYNC_EXPENSE_WAIT", 300.0),
            psa_commands=CommandLimits.from_env(e, "psa", DEFAULT_COMMAND_LIMITS["psa"]),
            crm_commands=CommandLimits.from_env(e, "crm", DEFAULT_COMMAND_LIMITS["crm"]),
            web_port=_int(e, "PSSYNC_WEB_PORT", 6066),
            web_bind=_str(e, "PSSYNC_WEB_BIND", "127.0.0.1"),
            data_dir=Path(_str(e, "PSSYNC_DATA_DIR", str(stack_dir / "worker"))),
            store=_store(e, "PSSYNC_STORE", "rocksdb"),
            rocksdb_write_buffer_mb=_int(e, "PSSYNC_ROCKSDB_WRITE_BUFFER_MB", 16),
            rocksdb_block_cache_mb=_int(e, "PSSYNC_ROCKSDB_BLOCK_CACHE_MB", 64),
            pg_data_dir=Path(e["PSSYNC_PG_DATA_DIR"]) if e.get("PSSYNC_PG_DATA_DIR") else None,
            analytics_policy=_str(e, "PSSYNC_ANALYTICS_POLICY", ""),
            analytics_prefix=_str(e, "PSSYNC_ANALYTICS_TOPIC_PREFIX", "analytics"),
            masking_key=_str(e, "PSSYNC_MASKING_KEY", ""),
            erp_url=_str(e, "PSSYNC_ERP_URL", f"http://127.0.0.1:{ports.erp}").rstrip("/"),
            erp_database=_str(e, "PSSYNC_ERP_DB", "erp"),
            erp_user=_str(e, "PSSYNC_ERP_USER", "pssync"),
            erp_password_file=Path(
                _str(e, "PSSYNC_ERP_PASSWORD_FILE", str(secrets / "erp-pssync.password"))
            ),
            psa_url=_str(e, "PSSYNC_PSA_URL", f"http://127.0.0.1:{ports.psa}").rstrip("/"),
            psa_api_key_file=Path(
                _str(e, "PSSYNC_PSA_API_KEY_FILE", str(secrets / "psa-pssync.key"))
            ),
            psa_directory_project=_str(e, "PSSYNC_PSA_DIRECTORY_PROJECT", "pssync-integration"),
            crm_writeback_url=_str(
                e,
                "PSSYNC_CRM_WRITEBACK_URL",
                "postgresql+psycopg://pssync_crm_writeback@"
                f"{_str(e, 'PSSYNC_CRM_DB_HOST', pg_host)}:"
                f"{_int(e, 'PSSYNC_CRM_DB_PORT', ports.postgres)}/"
                f"{_str(e, 'PSSYNC_CRM_DB_NAME', 'crm')}",
            ),
            erp_external=bool(e.get("PSSYNC_ERP_URL")),
            psa_external=bool(e.get("PSSYNC_PSA_URL")),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.partitions < 1:
            raise ConfigError("PSSYNC_PARTITIONS must be at least 1")
        if self.batch_size < 1:
            raise ConfigError("PSSYNC_BATCH_SIZE must be at least 1")
        if self.ahead_records < 0:
            raise ConfigError(
                f"PSSYNC_AHEAD_RECORDS={self.ahead_records}: use 0 (prepare nothing ahead) or "
                "a number of records"
            )
        if self.standby_replicas < 0:
            raise ConfigError(
                f"PSSYNC_STANDBY_REPLICAS={self.standby_replicas}: use 0 (restore from the "
                "changelog on takeover) or the number of standby copies per table partition"
            )
        if self.rocksdb_write_buffer_mb < 1 or self.rocksdb_block_cache_mb < 1:
            raise ConfigError(
                f"PSSYNC_ROCKSDB_WRITE_BUFFER_MB={self.rocksdb_write_buffer_mb} and "
                f"PSSYNC_ROCKSDB_BLOCK_CACHE_MB={self.rocksdb_block_cache_mb}: MiB per table "
                "partition, at least 1 each (defaults 16 and 64)"
            )
        if self.fetch_max_bytes < 1024 * 1024:
            raise ConfigError(
                f"PSSYNC_FETCH_MAX_BYTES={self.fetch_max_bytes}: a fetch must hold the largest "
                "record the topics allow; use at least 1048576 (1 MiB), e.g. 8388608"
            )
        if not 1 <= self.fetch_max_wait_ms <= 30_000:
            raise ConfigError(
                f"PSSYNC_FETCH_MAX_WAIT_MS={self.fetch_max_wait_ms}: milliseconds the broker "
                "may hold a fetch for data, from 1 to 30000 (default 50)"
            )
        if self.gc_threshold < 0:
            raise ConfigError(
                f"PSSYNC_GC_THRESHOLD={self.gc_threshold}: use 0 (Python's default) or a "
                "positive number of allocations, e.g. 100000"
            )
        if self.posting_batch_size < 1:
            raise ConfigError(
                "PSSYNC_POSTING_BATCH_SIZE must be at least 1 (postings per ERP batch, e.g. 100)"
            )
        if self.time_entry_wait < 0:
            raise ConfigError(
                f"PSSYNC_TIME_ENTRY_WAIT={self.time_entry_wait}: seconds a time entry waits for "
                "its project or person, 0 or more"
            )
        if self.expense_wait < 0:
            raise ConfigError(
                f"PSSYNC_EXPENSE_WAIT={self.expense_wait}: seconds an expense waits for its "
                "project, 0 or more"
            )
        if self.deal_line_wait < 0:
            raise ConfigError(
                f"PSSYNC_DEAL_LINE_WAIT={self.deal_line_wait}: seconds to wait for late line "
                "items must be 0 or more, e.g. 30"
            )
        if self.invoice_project_wait < 0:
            raise ConfigError(
                f"PSSYNC_INVOICE_PROJECT_WAIT={self.invoice_project_wait}: seconds to look up "
                "an invoice line's project again must be 0 or more, e.g. 300"
            )
        if self.saga_deadline <= 0:
            raise ConfigError(
                f"PSSYNC_SAGA_DEADLINE={self.saga_deadline}: seconds from closed-won to the PSA "
                "project must be positive, e.g. 300"
            )
        if self.change_order_wait < 0:
            raise ConfigError(
                f"PSSYNC_CHANGE_ORDER_WAIT={self.change_order_wait}: seconds a change order "
                "waits for its deal must be 0 or more, e.g. 300"
            )
        if self.invoice_sync_slo <= 0:
            raise ConfigError(
                f"PSSYNC_INVOICE_SYNC_SLO={self.invoice_sync_slo}: seconds from an invoice's ERP "
                "commit to the CRM update must be positive, e.g. 900"
            )
        if self.stop_timeout <= 0:
            raise ConfigError(
                f"PSSYNC_STOP_TIMEOUT={self.stop_timeout}: seconds a stopping worker may take "
                "must be positive, e.g. 180"
            )
        if self.monitor_interval <= 0:
            raise ConfigError(
                f"PSSYNC_MONITOR_INTERVAL={self.monitor_interval}: seconds between monitor "
                "refreshes must be positive, e.g. 15"
            )
        if not self.target_url.startswith("postgresql"):
            raise ConfigError(
                f"PSSYNC_TARGET_URL={self.target_url!r}: only PostgreSQL targets are supported "
                "so far; use a postgresql+psycopg:// URL"
            )
        self.kafka_security.validate()
        self._validate_registry()
        self._validate_connect_secrets()
        if not self.analytics_prefix.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(
                f"PSSYNC_ANALYTICS_TOPIC_PREFIX={self.analytics_prefix!r}: use letters, digits, "
                "'_' or '-' (topics are named <prefix>.<entity>)"
            )
        if self.analytics_policy and not Path(self.analytics_policy).is_file():
            raise ConfigError(
                f"PSSYNC_ANALYTICS_POLICY={self.analytics_policy!r} is not a file; point it at a "
                "masking policy such as schemas/masking.json, or unset it to turn analytics off"
            )

    def _validate_registry(self) -> None:
        tls = [
            n
            for n, v in (
                ("PSSYNC_REGISTRY_CA_FILE", self.registry_ca_file),
                ("PSSYNC_REGISTRY_CERT_FILE", self.registry_cert_file),
                ("PSSYNC_REGISTRY_KEY_FILE", self.registry_key_file),
            )
            if v
        ]
        if tls and not self.registry_url.startswith("https://"):
            raise ConfigError(
                f"{', '.join(tls)} set but PSSYNC_REGISTRY_URL={redact_url(self.registry_url)!r} "
                "is not https://; use the registry's https URL or unset them"
            )
        if self.registry_key_file and not self.registry_cert_file:
            raise ConfigError(
                "PSSYNC_REGISTRY_KEY_FILE needs PSSYNC_REGISTRY_CERT_FILE (the client certificate)"
            )
        for name, path in zip(
            ("PSSYNC_REGISTRY_CA_FILE", "PSSYNC_REGISTRY_CERT_FILE", "PSSYNC_REGISTRY_KEY_FILE"),
            (self.registry_ca_file, self.registry_cert_file, self.registry_key_file),
            strict=True,
        ):
            _check_file(name, path)
        if bool(self.registry_user) != bool(self.registry_password):
            raise ConfigError(
                "registry basic auth needs both PSSYNC_REGISTRY_USER and PSSYNC_REGISTRY_PASSWORD"
            )
        if self.registry_user and urlsplit(self.registry_url).username:
            raise ConfigError(
                "PSSYNC_REGISTRY_URL carries user:password and PSSYNC_REGISTRY_USER is set too; "
                "keep the credentials in PSSYNC_REGISTRY_USER/PASSWORD only"
            )

    def _validate_connect_secrets(self) -> None:
        if self.connect_secrets not in CONNECT_SECRET_PROVIDERS:
            raise ConfigError(
                f"PSSYNC_CONNECT_SECRETS={self.connect_secrets!r}: use `file` (a properties "
                "file on the Connect worker) or `env` (the Connect worker's environment)"
            )
        path = self.connect_secrets_file
        # ${file:<path>:<key>} is split on ':' and ends at '}'; the worker resolves relative
        # paths against its own working directory.
        if self.connect_secrets == "file" and (
            not path.startswith("/") or any(c in path for c in ':}"\\')
        ):
            raise ConfigError(
                f"PSSYNC_CONNECT_SECRETS_FILE={path!r}: use an absolute path (as the Connect "
                "worker sees it) without ':', '}', quotes or backslashes"
            )

    def command_limits(self, target: str) -> CommandLimits:
        """The limits of one of COMMAND_TARGETS."""
        limits: CommandLimits = getattr(self, f"{target}_commands")
        return limits

    @property
    def state_dir(self) -> Path:
        """This app id's table state; another app id has other changelogs, so other files."""
        return self.data_dir / self.app_id

    def describe(self) -> dict[str, str]:
        """Settings as printable strings, secrets masked (nested settings flattened)."""
        return _describe(self, "")

    def __repr__(self) -> str:
        # URLs may carry passwords: a logged or printed Settings shows them masked.
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in self.describe().items())})"


def _describe(obj: Any, prefix: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if is_dataclass(value) and not isinstance(value, type):
            out.update(_describe(value, f"{name}."))
        elif f.metadata.get("secret") or "password" in f.name:
            out[name] = "***" if value else ""
        elif isinstance(value, frozenset):
            out[name] = ",".join(s for s in STAGES if s in value)
        else:
            text = str(value)
            out[name] = redact_url(text) if "://" in text else text
    return out
