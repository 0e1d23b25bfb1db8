"""Interpreter settings for a long-running worker process."""

from __future__ import annotations

import gc

from streams.settings import Settings

# Python's own thresholds: generation 0, 1 and 2.
DEFAULT_THRESHOLDS = (700, 10, 10)


def gc_thresholds(settings: Settings) -> tuple[int, int, int]:
    """Collect young objects every `gc_threshold` allocations and the older generations
    rarely: a batch's records are short-lived, but while a batch is alive they outlive the
    young collections, and with the defaults each batch triggered full collections."""
    if settings.gc_threshold == 0:
        return DEFAULT_THRESHOLDS
    return settings.gc_threshold, 50, 100


def tune_gc(settings: Settings) -> None:
    gc.set_threshold(*gc_thresholds(settings))
    # What is alive once the app is composed (modules, contracts, parsed schemas) lives as
    # long as the process: full collections need not walk it again.
    gc.freeze()
