"""PSSYNC_STAGES on the real stack: a normalize worker and a sink worker, each its own group,
carry CRM changes to the target together."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from streams.admin import delete_topics
from streams.settings import Settings
from streams.state import changelog_specs
from tests.integration.conftest import SliceEnv
from tests.sandbox import Worker, worker_metrics

pytestmark = pytest.mark.integration

INSERT = (
    "INSERT INTO sales.opportunity (id, account_id, name, stage_name, amount, currency_iso_code, "
    "close_date, billing_type__c, service_lines__c) VALUES (:id, NULL, :name, 'Prospecting', "
    "'900.00', 'EUR', '2027-02-01', 'Time and Materials', 'CONSULT')"
)


def _split(env: SliceEnv, stages: str) -> tuple[Worker, Settings]:
    worker = env.worker()
    worker.env = {**worker.env, "PSSYNC_STAGES": stages}
    return worker, Settings.from_env(worker.env)


@pytest.fixture
def split(slice_env: SliceEnv) -> Iterator[tuple[SliceEnv, list[tuple[Worker, Settings]]]]:
    env = slice_env
    workers = [_split(env, "normalize"), _split(env, "sink")]
    yield env, workers
    for worker, settings in workers:
        worker.stop()
        # The sandbox deletes the full group's state topics; these are the split groups'.
        names = [s.name for s in changelog_specs(settings)]
        delete_topics(settings, [*names, f"{settings.app_id}-__assignor-__leader"])


def _events_in(port: str) -> dict[str, float]:
    """pssync_events_in_total by stage, from a worker's /metrics."""
    counts: dict[str, float] = {}
    for line in worker_metrics(int(port)):
        m = re.match(r'pssync_events_in_total\{.*stage="(\w+)".*\} ([0-9.e+]+)', line)
        if m:
            counts[m[1]] = counts.get(m[1], 0.0) + float(m[2])
    return counts


def test_a_normalize_worker_and_a_sink_worker_fill_the_target(
    split: tuple[SliceEnv, list[tuple[Worker, Settings]]],
) -> None:
    env, workers = split
    (normalize, n_settings), (sink, s_settings) = workers
    assert n_settings.app_id == f"{env.settings.app_id}.normalize"
    assert s_settings.app_id == f"{env.settings.app_id}.sink"
    for worker, _ in workers:
        worker.start()

    for i in range(3):
        env.crm(INSERT, {"id": f"006S{i}", "name": f"Split {i}"})
    env.wait_for(lambda: len(env.target_rows()) == 3, what="3 rows applied by the split workers")
    names = sorted(r["name"] for r in env.target_rows())
    assert names == ["Split 0", "Split 1", "Split 2"]

    # Each worker did its own part: the normalize worker read no canonical event, the sink
    # worker no raw change.
    by_normalize = _events_in(normalize.env["PSSYNC_WEB_PORT"])
    by_sink = _events_in(sink.env["PSSYNC_WEB_PORT"])
    assert by_normalize.get("normalize", 0) >= 3 and not by_normalize.get("sink")
    assert by_sink.get("sink", 0) >= 3 and not by_sink.get("normalize")
    for worker, settings in workers:
        log = worker.log.read_text(errors="replace")
        stages = settings.describe()["stages"]
        assert f"pssync worker: stages {stages}, consumer group {settings.app_id}" in log
