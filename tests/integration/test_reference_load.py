"""`pssync reference load | show` against the real Kafka and registry: the file's entries on
compacted reference topics, keyed by code, decodable by any registry-aware consumer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas.conventions import reference_topic
from schemas.registry import Registry, client_config
from streams.admin import delete_topics
from streams.reference.model import SECTIONS
from streams.settings import Settings
from tests.integration.kafka_util import read_all
from tests.sandbox import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
DEFAULT = REPO / "schemas" / "reference" / "default.json"


@pytest.fixture
def ns_env() -> Iterator[dict[str, str]]:
    ns = "r" + uuid.uuid4().hex[:10]
    env = {**os.environ, "PSSYNC_TOPIC_NAMESPACE": ns, "PSSYNC_APP_ID": f"pssync-{ns}"}
    yield env
    settings = Settings.from_env(env)
    delete_topics(settings, [reference_topic(n, ns) for n in SECTIONS.values()])
    registry = Registry(settings)
    for subject in registry.subjects():
        if subject.startswith(f"{ns}."):
            registry.delete_subject(subject)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "reference", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_load_show_reload_and_change(ns_env: dict[str, str], tmp_path: Path) -> None:
    env = ns_env
    ns = env["PSSYNC_TOPIC_NAMESPACE"]
    settings = Settings.from_env(env)
    dry = _cli(env, "load", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: 21 record(s) would be published" in dry.stdout

    first = _cli(env, "load")
    assert first.returncode == 0, first.stderr
    assert "published 21 record(s), acknowledged by Kafka" in first.stdout

    # Keyed by code, Avro through the registry, readable without pssync.
    topic = reference_topic("service_line", ns)
    deserializer = AvroDeserializer(SchemaRegistryClient(client_config(settings)))
    lines = {
        (m.key() or b"").decode(): deserializer(
            m.value(), SerializationContext(topic, MessageField.VALUE)
        )
        for m in read_all(settings, topic)
    }
    assert set(lines) == {"CONSULT", "IMPL", "ARCH", "PM"}
    assert lines["IMPL"]["data"]["project_template"] == "TPL-IMPL"
    assert lines["IMPL"]["envelope"]["entity_version"] == 1
    assert Registry(settings).compatibility(f"{topic}-value") == "FULL"

    shown = _cli(env, "show", "--set", "project_template")
    assert shown.returncode == 0, shown.stderr
    assert f"{ns}.reference.project_template: 4 entries" in shown.stdout
    assert "TPL-IMPL" in shown.stdout and "3 phases, 6 tasks, 212 h" in shown.stdout

    again = _cli(env, "load")
    assert again.returncode == 0 and "nothing to publish" in again.stdout

    doc = json.loads(DEFAULT.read_text())
    doc["regions"][0]["countries"].append("BE")
    doc["jurisdictions"] = doc["jurisdictions"][:-1]
    changed = tmp_path / "reference.json"
    changed.write_text(json.dumps(doc))
    refused = _cli(env, "load", "--file", str(changed))
    assert refused.returncode == 2 and "raise 'version'" in refused.stderr

    doc["version"] = 2
    changed.write_text(json.dumps(doc))
    applied = _cli(env, "load", "--file", str(changed))
    assert applied.returncode == 0, applied.stderr
    assert "update " + reference_topic("region", ns) + " EMEA (was version 1)" in applied.stdout
    assert "delete " + reference_topic("jurisdiction", ns) + " US" in applied.stdout
    listed = _cli(env, "show", "--set", "jurisdiction", "--json")
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    by_code = {e["code"]: e for e in entries}
    assert by_code["US"]["data"] is None and by_code["US"]["version"] == 2
    assert by_code["DE"]["data"]["tax_code"] == "VAT-DE-19"
