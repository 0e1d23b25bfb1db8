"""The fault soak's own logic: schedules, poison, crash reasons, the table (no stack needed)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from streams.changes import parse
from streams.errors import BadEventError
from streams.mappings.crm import map_opportunity
from tests.soak import poison
from tests.soak.profiles import PROFILES, FaultKind
from tests.soak.report import Outcome, table
from tests.soak.verify import Findings
from tests.soak.workers import Crash, crash_reason


def test_short_profile_has_every_fault_and_long_the_full_schedule() -> None:
    short = PROFILES["short"](random.Random("1/schedule")).planned()
    assert short[FaultKind.WORKER_KILL] >= 2
    assert all(short[k] >= 1 for k in FaultKind)
    long = PROFILES["long"](random.Random("1/schedule"))
    assert long.planned()[FaultKind.WORKER_KILL] >= 10
    assert all(f.outage >= 20 for f in long.faults)


def test_same_seed_same_schedule() -> None:
    a = PROFILES["long"](random.Random("42/schedule"))
    b = PROFILES["long"](random.Random("42/schedule"))
    assert a == b
    assert a != PROFILES["long"](random.Random("43/schedule"))


@pytest.mark.parametrize("variant", sorted(poison.RAW))
def test_every_raw_poison_is_rejected_by_normalize_and_keeps_its_marker(variant: str) -> None:
    mark = poison.marker(7)
    key, value = poison.RAW[variant](mark)
    assert poison.find_marker(key) == mark
    with pytest.raises(BadEventError):
        change = parse(key, value, "crm.sales.opportunity")
        assert change is not None
        map_opportunity(change, "")


def test_canonical_poison_keys_carry_the_marker() -> None:
    for variant, build in poison.CANONICAL.items():
        key, value = build(poison.marker(3))
        assert poison.find_marker(key) == "soak-poison-000003", variant
        assert value[:1] != b"\x00" or len(value) < 5


def test_crash_reason_prefers_the_first_exception_over_shutdown_noise(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    log.write_bytes(
        b"[INFO] Ready\n"
        b"[ERROR] Crashed reason=CardinalityViolation('ON CONFLICT DO UPDATE command')\n"
        b"Traceback (most recent call last):\n"
        b"psycopg.errors.CardinalityViolation: ON CONFLICT DO UPDATE command cannot affect "
        b"row a second time\n"
        b"RuntimeError: Event loop is closed\n"
    )
    assert crash_reason(log, 0).startswith("psycopg.errors.CardinalityViolation: ON CONFLICT")
    assert crash_reason(log, log.stat().st_size, -11).startswith(
        "no exception in the log, exit code -11"
    )
    with log.open("ab") as f:
        f.write(b"pssync: error: cannot reach Kafka at 127.0.0.1:9092\n")
    assert crash_reason(log, 0) == "cannot reach Kafka at 127.0.0.1:9092"


def test_table_fails_on_a_crash_and_names_its_error() -> None:
    profile = PROFILES["short"](random.Random("1/schedule"))
    findings = Findings(source_changes=10, captured=10, canonical_distinct=10,
                        canonical_messages=12, dlq_expected={"normalize": 1, "sink": 0},
                        dlq_found={"normalize": 1, "sink": 0})
    crash = Crash("worker-a", 1, "psycopg.errors.CardinalityViolation: ON CONFLICT", 12.0)
    outcome = Outcome(profile, 1, "run", Counter(profile.planned()), findings, [crash], [], 30.0,
                      240.0)
    text = table(outcome)
    assert outcome.failed
    assert "1x psycopg.errors.CardinalityViolation" in text
    assert text.splitlines()[-2].split("|")[4].strip() == "FAIL"
    clean = Outcome(profile, 1, "run", Counter(profile.planned()), findings, [], [], 30.0, 240.0)
    assert not clean.failed and "PASS" in table(clean)
