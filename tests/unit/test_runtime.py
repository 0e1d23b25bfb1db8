"""The worker's garbage-collector settings."""

from __future__ import annotations

import gc

import pytest

from streams.errors import ConfigError
from streams.runtime import DEFAULT_THRESHOLDS, gc_thresholds, tune_gc
from streams.settings import Settings


def test_the_worker_collects_young_objects_every_100000_allocations_by_default() -> None:
    assert gc_thresholds(Settings.from_env({})) == (100_000, 50, 100)
    assert gc_thresholds(Settings.from_env({"PSSYNC_GC_THRESHOLD": "5000"}))[0] == 5000


def test_zero_keeps_pythons_defaults() -> None:
    assert gc_thresholds(Settings.from_env({"PSSYNC_GC_THRESHOLD": "0"})) == DEFAULT_THRESHOLDS


def test_a_negative_threshold_is_refused_with_what_to_use() -> None:
    with pytest.raises(ConfigError, match="PSSYNC_GC_THRESHOLD=-1: use 0"):
        Settings.from_env({"PSSYNC_GC_THRESHOLD": "-1"}).validate()


def test_tune_gc_sets_the_thresholds_and_freezes_what_is_alive() -> None:
    before = gc.get_threshold()
    try:
        tune_gc(Settings.from_env({"PSSYNC_GC_THRESHOLD": "20000"}))
        assert gc.get_threshold() == (20_000, 50, 100)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
