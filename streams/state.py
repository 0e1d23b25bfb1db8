"""Local table state must come from the changelog topics that exist now.

RocksDB table files remember up to which changelog offset they hold, and a restart reads only
the changelog after it. If a changelog topic was deleted (e.g. to reset the app's state) and
created again, those files describe a topic that no longer exists: the worker would keep
dropping changes as duplicates of positions nobody can see, or stop on offsets beyond the end
of the new topic. Each topic has a new id when it is created again, so the ids the files were
built from are kept beside them, and files of another topic id are removed before the worker
starts; it then restores them from the changelog, as the memory store always does.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from streams.admin import TopicSpec, ensure_topics
from streams.errors import KafkaUnavailableError
from streams.security import kafka_config
from streams.settings import Settings
from tables.deals import changelog_topics as deal_changelogs
from tables.dedupe import changelog_topic
from tables.invoices import changelog_topics as invoice_changelogs
from tables.timesheets import changelog_topics as time_entry_changelogs

log = logging.getLogger(__name__)
MARKER = "changelog-topic-ids.json"


def changelog_specs(settings: Settings) -> list[TopicSpec]:
    # As Faust would create it on first start; created here first so its id is known. Only
    # the tables of the stages this worker runs.
    by_stage = {
        "normalize": [changelog_topic(settings.app_id)],
        "deal": deal_changelogs(settings.app_id),
        "invoice": invoice_changelogs(settings.app_id),
        "time_entry": time_entry_changelogs(settings.app_id),
    }
    names = [name for stage, held in by_stage.items() if stage in settings.stages for name in held]
    return [
        TopicSpec(name, settings.partitions, settings.replication, {"cleanup.policy": "compact"})
        for name in names
    ]


def topic_ids(settings: Settings, names: list[str], timeout: float = 30.0) -> dict[str, str]:
    admin = AdminClient(kafka_config(settings))
    futures = admin.describe_topics(TopicCollection(names), request_timeout=timeout)
    try:
        return {name: str(fut.result().topic_id) for name, fut in futures.items()}
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot describe the changelog topics {names}: {exc}") from exc


def built_from_other_topics(state: Path, current: dict[str, str]) -> bool:
    """True if `state` holds table files not recorded as built from the `current` topic ids."""
    if not state.exists() or all(p.name == MARKER for p in state.iterdir()):
        return False
    marker = state / MARKER
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return True  # unknown origin: rebuilding from the changelog is always safe
    return bool(recorded != current)


def check_local_state(settings: Settings) -> bool:
    """Remove local table files not built from today's changelog topics; True if removed."""
    specs = changelog_specs(settings)
    ensure_topics(settings, specs)
    current = topic_ids(settings, [s.name for s in specs])
    state = settings.state_dir
    removed = built_from_other_topics(state, current)
    if removed:
        log.warning(
            "table state in %s was built from other changelog topics than today's %s: "
            "removed, restoring it from the changelog",
            state,
            current,
        )
        shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)
    (state / MARKER).write_text(json.dumps(current, sort_keys=True) + "\n")
    return removed
