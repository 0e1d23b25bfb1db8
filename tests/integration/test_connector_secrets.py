"""A real connector gets its CRM credentials from a config provider: it captures changes,
while Kafka Connect's REST API, its internal topics and its log never show the password."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from connectors.debezium import crm_connector
from streams.security import kafka_config
from streams.settings import Settings
from streams.topology import topology
from tests.integration.conftest import SliceEnv
from tests.integration.kafka_util import read_all

pytestmark = pytest.mark.integration

# Local PostgreSQL trusts local connections, so any password works; a unique one can be
# searched for everywhere Connect might leak it.
TOKEN = f"pw-{uuid.uuid4().hex}"
SECRETS = Path(Settings.from_env().connect_secrets_file).parent / f"it-{TOKEN[3:15]}.properties"


@pytest.mark.parametrize(
    "slice_env",
    [{"PSSYNC_CRM_DB_PASSWORD": TOKEN, "PSSYNC_CONNECT_SECRETS_FILE": str(SECRETS)}],
    indirect=True,
)
def test_connector_password_never_leaves_the_secrets_file(slice_env: SliceEnv) -> None:
    env = slice_env
    settings = env.settings
    assert TOKEN in SECRETS.read_text() and SECRETS.stat().st_mode & 0o077 == 0
    name = crm_connector(settings)["name"]
    raw_topic = topology(settings).routes[0].raw_topic

    # The connector (RUNNING, deployed by the fixture) captures a change. Its database user
    # comes from the same file: an unresolved reference would be no PostgreSQL role at all.
    env.crm(
        "INSERT INTO sales.opportunity (id, name, stage_name, currency_iso_code) "
        "VALUES ('006S1', 'Secret-free', 'Prospecting', 'EUR')"
    )
    env.wait_for(
        lambda: any(b"006S1" in (m.key() or b"") for m in read_all(settings, raw_topic)),
        what="the change captured on the raw topic",
    )

    http = httpx.Client(base_url=settings.connect_url, timeout=10)
    config = http.get(f"/connectors/{name}/config").json()
    assert config["database.password"] == f"${{file:{SECRETS}:crm.password}}"
    assert config["database.user"] == f"${{file:{SECRETS}:crm.user}}"
    for path in (f"/connectors/{name}", f"/connectors/{name}/config", f"/connectors/{name}/tasks"):
        body = http.get(path)
        assert body.status_code == 200, path
        assert TOKEN not in body.text, path
    tasks = http.get(f"/connectors/{name}/tasks").json()
    assert tasks and all(TOKEN not in json.dumps(t["config"]) for t in tasks)

    # Connect's own topics (configs, offsets, status of every Connect cluster on this Kafka).
    admin = AdminClient(kafka_config(settings))
    internal = [t for t in admin.list_topics(timeout=10).topics if t.startswith("_connect")]
    assert internal
    for topic in internal:
        for m in read_all(settings, topic):
            assert TOKEN.encode() not in (m.value() or b""), topic

    # The worker's log, when the stack runs from this clone.
    log = settings.stack_dir / "logs" / "connect.log"
    if log.exists():
        assert TOKEN not in log.read_text(errors="replace")
