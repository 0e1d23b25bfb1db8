"""Debezium connector configs (JSON templates) and how to render them from settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from string import Template
from typing import Any

from streams.errors import ConfigError
from streams.settings import Settings, SourceDb

CONFIG_DIR = Path(__file__).resolve().parent


def slot_name(topic_prefix: str) -> str:
    # Replication slot / publication names allow only [a-z0-9_].
    return "pssync_" + re.sub(r"[^a-z0-9_]", "_", topic_prefix.lower())


def connector_values(db: SourceDb, topic_prefix: str, settings: Settings) -> dict[str, str]:
    return {
        "connector_name": f"{topic_prefix}-postgres",
        "db_host": db.host,
        "db_port": str(db.port),
        "db_user": db.user,
        "db_password": db.password,
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


def all_connectors(settings: Settings) -> list[dict[str, Any]]:
    return [crm_connector(settings)]
