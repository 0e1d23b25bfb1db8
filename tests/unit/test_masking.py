"""Masking policy: checked against the contracts at load time; masking is a pure function."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema
from fastavro.validation import validate
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import contracts
from schemas.masking import (
    REDACTED,
    FieldRule,
    check_key,
    load_policy,
    mask_record,
    parse_policy,
    partial,
)
from schemas.samples import Sampler
from streams.errors import ConfigError
from streams.settings import Settings
from streams.topology import analytics_entities, topic_specs, topology

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "schemas" / "masking.json"
KEY = b"k" * 32
# Timing varies on a shared machine; correctness, not speed, is under test here.
relaxed = settings(deadline=None)


def test_shipped_policy_fits_the_contracts() -> None:
    policy = load_policy(POLICY)
    assert set(policy.rules) == {"opportunity", "customer", "legal_entity", "resource"}
    assert {r.field: r.action for r in policy.rules["opportunity"]} == {"project_manager": "hash"}
    assert policy.needs_key


@pytest.mark.parametrize(
    ("doc", "fix"),
    [
        (
            {"entities": {"opportunity": {"pm_email": "hash"}}},
            "opportunity has no field 'pm_email'",
        ),
        ({"entities": {"deal": {"name": "hash"}}}, "no contract named 'deal'"),
        ({"entities": {"opportunity": {"name": "encrypt"}}}, "unknown action 'encrypt'"),
        ({"entities": {"opportunity": {"amount": "hash"}}}, "hash works on text fields only"),
        ({"entities": {"opportunity": {"probability": "partial"}}}, "partial works on text"),
        ({"entities": {"opportunity": {"is_won": "redact"}}}, "cannot be redacted"),
        ({"entities": {"opportunity": {}}}, "needs an object"),
        ({"opportunity": {"name": "hash"}}, "expected"),
    ],
)
def test_bad_policies_fail_at_load_with_what_to_fix(doc: dict[str, Any], fix: str) -> None:
    with pytest.raises(ConfigError, match=fix):
        parse_policy(doc, "masking.json")


def test_policy_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "p.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_policy(bad)
    with pytest.raises(ConfigError, match="PSSYNC_ANALYTICS_POLICY"):
        load_policy(tmp_path / "missing.json")


def test_hashing_needs_a_real_key() -> None:
    policy = load_policy(POLICY)
    with pytest.raises(ConfigError, match="PSSYNC_MASKING_KEY"):
        check_key(policy, "")
    with pytest.raises(ConfigError, match="at least 16"):
        check_key(policy, "short")
    assert check_key(policy, "x" * 16) == b"x" * 16
    no_hash = parse_policy({"entities": {"customer": {"billing_address": "redact"}}})
    assert check_key(no_hash, "") == b""


def _opportunity(pm: str | None) -> dict[str, Any]:
    record: dict[str, Any] = Sampler(contracts.schema("opportunity"), optional=1.0).record()
    record["data"]["project_manager"] = pm
    return record


def test_opportunity_project_manager_is_hashed_and_nothing_else_changes() -> None:
    policy = load_policy(POLICY)
    record = _opportunity("ada@example.com")
    before = json.dumps(record, default=str)
    masked = mask_record(record, policy.rules["opportunity"], KEY)
    assert json.dumps(record, default=str) == before  # input untouched
    expected = hmac.new(KEY, b"ada@example.com", hashlib.sha256).hexdigest()
    assert masked["data"]["project_manager"] == expected
    assert {k: v for k, v in masked["data"].items() if k != "project_manager"} == {
        k: v for k, v in record["data"].items() if k != "project_manager"
    }
    assert masked["envelope"] == record["envelope"]
    assert validate(masked, parse_schema(contracts.schema("opportunity")), raise_errors=True)


def test_deletes_and_nulls_pass_through() -> None:
    rules = load_policy(POLICY).rules["opportunity"]
    deleted = {**_opportunity(None), "data": None}
    assert mask_record(deleted, rules, KEY) == deleted
    assert mask_record(_opportunity(None), rules, KEY)["data"]["project_manager"] is None


def test_redact_and_partial() -> None:
    nullable = FieldRule("x", "redact", nullable=True)
    required = FieldRule("x", "redact", nullable=False)
    record = {"envelope": {}, "data": {"x": "secret"}}
    assert mask_record(record, (nullable,), KEY)["data"]["x"] is None
    assert mask_record(record, (required,), KEY)["data"]["x"] == REDACTED
    assert partial("ada.lovelace@example.com") == "***@example.com"
    assert partial("DE123456789") == "*******6789"
    assert partial("abc") == "***"


text = st.text(min_size=0, max_size=60)


@relaxed
@given(a=text, b=text)
def test_hash_is_deterministic_and_joinable(a: str, b: str) -> None:
    rule = (FieldRule("project_manager", "hash", True),)
    ha = mask_record({"data": {"project_manager": a}}, rule, KEY)["data"]["project_manager"]
    hb = mask_record({"data": {"project_manager": b}}, rule, KEY)["data"]["project_manager"]
    assert (ha == hb) == (a == b)
    assert len(ha) == 64 and set(ha) <= set("0123456789abcdef")
    other = mask_record({"data": {"project_manager": a}}, rule, b"z" * 32)
    assert other["data"]["project_manager"] != ha  # keyed: another key, another value


@relaxed
@given(
    local=st.from_regex(r"[a-z0-9._]{1,20}", fullmatch=True),
    domain=st.from_regex(r"[a-z0-9-]{1,15}\.[a-z]{2,6}", fullmatch=True),
)
def test_partial_email_keeps_only_the_domain(local: str, domain: str) -> None:
    out = partial(f"{local}@{domain}")
    assert out == f"***@{domain}" and local not in out.split("@")[0]


@relaxed
@given(value=st.text(min_size=5, max_size=40).filter(lambda v: "@" not in v))
def test_partial_text_keeps_last_four_and_length(value: str) -> None:
    out = partial(value)
    assert len(out) == len(value) and out.endswith(value[-4:])
    assert set(out[:-4]) <= {"*"}


@relaxed
@given(seed=st.integers(min_value=0, max_value=10_000))
def test_masked_records_still_fit_their_contract(seed: int) -> None:
    for entity, rules in load_policy(POLICY).rules.items():
        record = Sampler(contracts.schema(entity), seed=seed).record()
        masked = mask_record(record, rules, KEY)
        assert validate(masked, contracts.parsed(entity), raise_errors=True)


def test_analytics_topics_follow_the_setting() -> None:
    off = Settings.from_env({})
    assert analytics_entities(off, topology(off)) == []
    on = Settings.from_env(
        {
            "PSSYNC_ANALYTICS_POLICY": str(POLICY),
            "PSSYNC_TOPIC_NAMESPACE": "stg",
            "PSSYNC_ANALYTICS_TOPIC_PREFIX": "bi",
        }
    )
    assert topology(on).analytics("opportunity") == "stg.bi.opportunity"
    names = [t.name for t in topic_specs(on)]
    assert "stg.bi.opportunity" in names and "stg.canonical.opportunity" in names
    with pytest.raises(ConfigError, match="PSSYNC_ANALYTICS_POLICY"):
        Settings.from_env({"PSSYNC_ANALYTICS_POLICY": "/nope.json"})
