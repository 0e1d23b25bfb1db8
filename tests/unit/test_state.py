from __future__ import annotations

import json
from pathlib import Path

from streams.settings import Settings
from streams.state import MARKER, built_from_other_topics, changelog_specs

IDS = {"pssync-dedupe-positions-changelog": "hLOPsm4JSHW4ORPgHLc3iQ"}


def _state(tmp_path: Path, recorded: object | None) -> Path:
    state = tmp_path / "pssync"
    (state / "v1" / "tables" / "dedupe-positions-0.db").mkdir(parents=True)
    if recorded is not None:
        (state / MARKER).write_text(json.dumps(recorded))
    return state


def test_no_files_yet_is_not_stale(tmp_path: Path) -> None:
    assert not built_from_other_topics(tmp_path / "absent", IDS)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / MARKER).write_text(json.dumps({"x": "y"}))
    assert not built_from_other_topics(tmp_path / "empty", IDS)


def test_files_of_the_same_topics_are_kept(tmp_path: Path) -> None:
    assert not built_from_other_topics(_state(tmp_path, IDS), IDS)


def test_files_of_a_recreated_topic_are_stale(tmp_path: Path) -> None:
    old = {"pssync-dedupe-positions-changelog": "AAAAAAAAAAAAAAAAAAAAAA"}
    assert built_from_other_topics(_state(tmp_path, old), IDS)


def test_files_of_unknown_origin_are_stale(tmp_path: Path) -> None:
    assert built_from_other_topics(_state(tmp_path, None), IDS)
    state = tmp_path / "pssync"
    (state / MARKER).write_text("{not json")
    assert built_from_other_topics(state, IDS)


def test_changelog_is_created_as_faust_would() -> None:
    specs = changelog_specs(Settings.from_env({"PSSYNC_APP_ID": "a", "PSSYNC_PARTITIONS": "4"}))
    assert [s.name for s in specs] == [
        "a-dedupe-positions-changelog",
        "a-deal-assembly-changelog",
        "a-deal-children-changelog",
        "a-saga-state-changelog",
        "a-time-entries-changelog",
    ]
    for spec in specs:
        assert spec.partitions == 4
        assert spec.config == {"cleanup.policy": "compact"}
