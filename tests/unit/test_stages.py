"""PSSYNC_STAGES: a worker runs the stages it names, as its own consumer group."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

import pytest

import streams.app as app_module
from streams.agents import commands, deal, expense, invoices, normalize, postings, sink, timesheets
from streams.agents.batching import install as install_batch_path
from streams.errors import ConfigError
from streams.settings import STAGES, Settings
from streams.state import changelog_specs
from streams.topology import topology
from tables.dedupe import NAME as DEDUPE


def test_every_stage_module_is_a_stage_name() -> None:
    modules = [normalize, sink, deal, commands, postings, invoices, timesheets, expense]
    assert {m.STAGE for m in modules} == set(STAGES)


def test_all_stages_by_default_under_the_app_id() -> None:
    for env in ({}, {"PSSYNC_STAGES": "all"}, {"PSSYNC_STAGES": ",".join(STAGES)}):
        s = Settings.from_env({"PSSYNC_APP_ID": "crm-sync", **env})
        assert s.stages == frozenset(STAGES)
        assert s.app_id == "crm-sync"


def test_a_subset_is_its_own_group_named_in_stage_order() -> None:
    s = Settings.from_env({"PSSYNC_APP_ID": "crm-sync", "PSSYNC_STAGES": " Sink, normalize "})
    assert s.stages == {"normalize", "sink"}
    assert s.app_id == "crm-sync.normalize.sink"
    assert s.describe()["stages"] == "normalize,sink"
    assert s.state_dir.name == "crm-sync.normalize.sink"


@pytest.mark.parametrize(
    ("raw", "says"), [("sinks", "unknown stage sinks"), (" , ", "no stage"), ("sink,x", "x")]
)
def test_bad_stage_lists_say_what_to_set(raw: str, says: str) -> None:
    with pytest.raises(ConfigError, match="PSSYNC_STAGES") as err:
        Settings.from_env({"PSSYNC_STAGES": raw})
    assert says in str(err.value)
    assert "normalize, sink, deal" in str(err.value)


def test_changelogs_only_of_the_stages_run() -> None:
    every = {t.name for t in changelog_specs(Settings.from_env({"PSSYNC_APP_ID": "a"}))}
    sink_only = changelog_specs(Settings.from_env({"PSSYNC_APP_ID": "a", "PSSYNC_STAGES": "sink"}))
    assert sink_only == []
    dedupe = changelog_specs(
        Settings.from_env({"PSSYNC_APP_ID": "a", "PSSYNC_STAGES": "normalize"})
    )
    assert [t.name for t in dedupe] == [f"a.normalize-{DEDUPE}-changelog"]
    assert len(every) > 1 and all(name.startswith("a-") for name in every)


class Offline:
    """Stands in for the app's Kafka clients (producer, lag admin), which connect when built:
    these tests only compose apps."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


@pytest.fixture
def runners(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The topic -> stage runner map each create_app call builds."""
    monkeypatch.setattr(app_module, "Output", Offline)
    monkeypatch.setattr(app_module, "Replayer", Offline)
    seen: dict[str, Any] = {}
    real = install_batch_path

    def capture(app: Any, runners: dict[str, Any], **kw: Any) -> None:
        seen.clear()
        seen.update(runners)
        real(app, runners, **kw)

    monkeypatch.setattr(app_module, "install_batch_path", capture)
    yield seen


def test_a_sink_only_worker_reads_canonical_topics_and_keeps_no_tables(
    runners: dict[str, Any],
) -> None:
    settings = Settings.from_env({"PSSYNC_STAGES": "sink"})
    app = app_module.create_app(settings)
    topo = topology(settings)
    assert runners, "no stage registered"
    assert all(r.raw_topic not in runners for r in topo.routes)
    assert topo.output("opportunity") in runners
    assert {r.name for r in runners.values()} == {"sink-postgres"}
    assert len(app.tables) == 0


def test_every_stage_reads_what_the_subsets_read_together(runners: dict[str, Any]) -> None:
    app_module.create_app(Settings.from_env({}))
    every = set(runners)
    parts: set[str] = set()
    for stage in STAGES:
        app_module.create_app(Settings.from_env({"PSSYNC_STAGES": stage}))
        parts |= set(runners)
    assert parts == every


def test_the_app_keeps_the_standby_copies_asked_for(runners: dict[str, Any]) -> None:
    assert app_module.create_app(Settings.from_env({})).conf.table_standby_replicas == 0
    app = app_module.create_app(Settings.from_env({"PSSYNC_STANDBY_REPLICAS": "1"}))
    assert app.conf.table_standby_replicas == 1


def test_the_workers_kafka_consumer_fetches_with_the_configured_broker_wait(
    runners: dict[str, Any],
) -> None:
    # Faust builds its consumer with a fixed 1.5 s; aiokafka reads the value when it starts.
    async def built() -> int:
        app = app_module.create_app(Settings.from_env({"PSSYNC_FETCH_MAX_WAIT_MS": "40"}))
        thread: Any = cast(Any, app.consumer)._thread
        consumer = thread._create_worker_consumer(app.transport)
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    assert asyncio.run(built()) == 40
