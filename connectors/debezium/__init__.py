"""Debezium connector configs (JSON templates) and how to render them from settings.

Rendered configs never hold a credential: database user and password are Kafka Connect
config-provider references (``${file:...}`` or ``${env:...}``) that the Connect worker resolves
when it starts a task, so the REST API, the config topic and the logs only see the reference.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from string import Template
from typing import Any

from sqlalchemy import create_engine, text

from connectors.sql import db_url
from streams.errors import ConfigError
from streams.settings import Settings, SourceDb

CONFIG_DIR = Path(__file__).resolve().parent


def slot_name(topic_prefix: str) -> str:
    # Replication slot / publication names allow only [a-z0-9_].
    return "pssync_" + re.sub(r"[^a-z0-9_]", "_", topic_prefix.lower())


def secret_ref(settings: Settings, system: str, what: str) -> str:
    """Config-provider reference to `what` (user | password) of a source system's database."""
    if settings.connect_secrets == "env":
        return f"${{env:PSSYNC_{system.upper()}_DB_{what.upper()}}}"
    return f"${{file:{settings.connect_secrets_file}:{system}.{what}}}"


def _escape(value: str) -> str:
    # java.util.Properties: backslash escapes; separators and comment marks are escaped too.
    out = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    for c in "=:#!":
        out = out.replace(c, "\\" + c)
    return "\\" + out if out[:1] in (" ", "\t") else out


def source_dbs(settings: Settings) -> list[tuple[str, SourceDb]]:
    """Every captured database by system: the CRM, the ERP and the PSA."""
    return [("crm", settings.crm_db), ("erp", settings.erp_db), ("psa", settings.psa_db)]


def secrets_properties(settings: Settings) -> str:
    """The secrets file the `file` provider reads: `<system>.user` / `<system>.password`."""
    lines = ["# Credentials Debezium connectors reference; keep this file mode 0600."]
    for system, db in source_dbs(settings):
        lines.append(f"{system}.user={_escape(db.user)}")
        lines.append(f"{system}.password={_escape(db.password)}")
    return "\n".join(lines) + "\n"


def write_secrets_file(settings: Settings, path: Path | None = None) -> Path:
    """Write the secrets file (default PSSYNC_CONNECT_SECRETS_FILE), readable by its owner only."""
    target = Path(path or settings.connect_secrets_file)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_name(f".{target.name}.tmp")
    # Created 0600 from the start, then renamed: the secret is never readable by others.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets_properties(settings))
    os.chmod(tmp, 0o600)
    os.replace(tmp, target)
    return target


def connector_values(
    db: SourceDb, topic_prefix: str, settings: Settings, system: str = "crm"
) -> dict[str, str]:
    return {
        "connector_name": f"{topic_prefix}-postgres",
        "db_host": db.host,
        "db_port": str(db.port),
        "db_user": secret_ref(settings, system, "user"),
        "db_password": secret_ref(settings, system, "password"),
        "db_name": db.dbname,
        "topic_prefix": topic_prefix,
        "slot_name": slot_name(topic_prefix),
        "partitions": str(settings.partitions),
        "replication": str(settings.replication),
    }


def render(template: str, values: dict[str, str]) -> dict[str, Any]:
    """Fill a connector template; a missing value is a ConfigError naming it."""
    path = CONFIG_DIR / f"{template}.json"
    try:
        text = Template(path.read_text()).substitute(values)
    except KeyError as exc:
        raise ConfigError(
            f"{path.name} needs a value for {exc}; add it to connector_values"
        ) from None
    rendered: dict[str, Any] = json.loads(text)
    return rendered


def crm_connector(settings: Settings) -> dict[str, Any]:
    return render(
        "crm-postgres", connector_values(settings.crm_db, settings.crm_topic_prefix, settings)
    )


def erp_connector(settings: Settings) -> dict[str, Any]:
    """Tryton's database: parties, companies, currencies, taxes, projects, time, invoices."""
    return render(
        "erp-postgres",
        connector_values(settings.erp_db, settings.erp_topic_prefix, settings, "erp"),
    )


def psa_connector(settings: Settings) -> dict[str, Any]:
    """Redmine's database: projects, issues, versions, members, custom values, time, users."""
    return render(
        "psa-postgres",
        connector_values(settings.psa_db, settings.psa_topic_prefix, settings, "psa"),
    )


def all_connectors(settings: Settings) -> list[dict[str, Any]]:
    return [crm_connector(settings), erp_connector(settings), psa_connector(settings)]


def captured_tables(connector: dict[str, Any]) -> list[tuple[str, str]]:
    """(schema, table) of every table a rendered connector captures."""
    listed = connector["config"].get("table.include.list", "")
    out = []
    for name in listed.split(","):
        schema, _, table = name.strip().partition(".")
        if not table:
            raise ConfigError(
                f"connector {connector['name']}: table.include.list entry {name!r} is not "
                "<schema>.<table>; list tables by exact name"
            )
        out.append((schema, table))
    return out


# Tables without a primary key carry no old row in their update and delete events unless
# their replica identity is FULL; PostgreSQL then even refuses those updates and deletes
# while the table is in a publication.
_NO_KEY = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relreplident <> 'f'
  AND (n.nspname, c.relname) IN (SELECT s, t FROM unnest(CAST(:schemas AS text[]),
                                                         CAST(:tables AS text[])) AS x(s, t))
  AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
"""


def ensure_replica_identity(db: SourceDb, tables: list[tuple[str, str]]) -> list[str]:
    """Give each listed table without a primary key REPLICA IDENTITY FULL (idempotent).

    Only the replica identity changes, never a column: the applications own their schemas.
    Returns the tables changed.
    """
    engine = create_engine(db_url(db))
    changed = []
    try:
        with engine.begin() as conn:
            rows = conn.execute(
                text(_NO_KEY),
                {"schemas": [s for s, _ in tables], "tables": [t for _, t in tables]},
            ).all()
            for schema, table in rows:
                conn.execute(text(f'ALTER TABLE "{schema}"."{table}" REPLICA IDENTITY FULL'))
                changed.append(f"{schema}.{table}")
    finally:
        engine.dispose()
    return changed
