"""The masked-copy producer: listed entities only, masked, same key, one registry call each."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from schemas import contracts
from schemas.masking import hash_value, load_policy
from schemas.samples import Sampler
from schemas.serde import Decoder
from streams.analytics import AnalyticsCopies, analytics_copies
from streams.errors import ConfigError
from streams.settings import Settings
from streams.topology import topology

POLICY = Path(__file__).resolve().parents[2] / "schemas" / "masking.json"
KEY = "unit-test-key-0123456789"


@dataclass
class FakeOutput:
    sent: list[tuple[str, bytes | None, bytes | None]] = field(default_factory=list)

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
        self.sent.append((topic, key, value))


@dataclass
class FakeRegistry:
    registered: list[str] = field(default_factory=list)

    def register(self, subject: str, schema_str: str) -> int:
        self.registered.append(subject)
        return 42

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        assert schema_id == 42
        return contracts.schema("opportunity")


def _copies(out: FakeOutput, reg: FakeRegistry) -> AnalyticsCopies:
    settings = Settings.from_env({"PSSYNC_TOPIC_NAMESPACE": "ns"})
    return AnalyticsCopies(topology(settings), out, reg, load_policy(POLICY), KEY)  # type: ignore[arg-type]


def test_emit_masks_listed_entities_once_registered() -> None:
    out, reg = FakeOutput(), FakeRegistry()
    copies = _copies(out, reg)
    asyncio.run(copies.prepare())
    asyncio.run(copies.prepare())  # idempotent: no second registration
    # Every entity the topology emits and the policy lists, once each.
    assert sorted(reg.registered) == [
        "ns.analytics.customer-value",
        "ns.analytics.legal_entity-value",
        "ns.analytics.opportunity-value",
    ]
    record = Sampler(contracts.schema("opportunity"), optional=1.0).record()
    record["data"]["project_manager"] = "pm@example.com"
    other = ("invoice", "k2", record)  # not emitted by this worker's topology: skipped
    assert copies.emit([("opportunity", "crm:opportunity:1", record), other]) == 1
    [(topic, key, value)] = out.sent
    assert (topic, key) == ("ns.analytics.opportunity", b"crm:opportunity:1")
    decoded = Decoder(reg.schema_by_id).decode(value)  # type: ignore[arg-type]
    assert decoded["data"]["project_manager"] == hash_value("pm@example.com", KEY.encode())
    assert record["data"]["project_manager"] == "pm@example.com"  # canonical record untouched


def test_off_without_policy_and_refused_without_key() -> None:
    settings = Settings.from_env({})
    assert analytics_copies(settings, topology(settings), FakeOutput(), FakeRegistry()) is None  # type: ignore[arg-type]
    on = Settings.from_env({"PSSYNC_ANALYTICS_POLICY": str(POLICY)})
    with pytest.raises(ConfigError, match="PSSYNC_MASKING_KEY"):
        analytics_copies(on, topology(on), FakeOutput(), FakeRegistry())  # type: ignore[arg-type]
