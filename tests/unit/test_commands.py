"""The command stages with stub ports: order per saga key, concurrency across keys, the rate
limit, retry classification, rejected results, poison to the DLQ, and a property test against
a sequential reference model."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.ports import CrmWriteBack, CustomerSpec, ErpCustomer, to_json
from connectors.throttle import Backoff, Throttle
from schemas import saga
from schemas.serde import Decoder, encode
from streams.agents.commands import TARGETS, CommandStage, CommandTarget
from streams.audit import command_schema_str
from streams.dlq import read_context
from streams.errors import ApplicationUnavailableError, CommandRejectedError, ConfigError
from streams.metrics import metrics
from streams.settings import Settings
from streams.topology import Topology, topology

TOPO: Topology = topology(Settings.from_env({"PSSYNC_TOPIC_NAMESPACE": "t"}))


@dataclass
class FakeOutput:
    sent: list[tuple[str, bytes | None, bytes | None, Any]] = field(default_factory=list)
    flushed: int = 0  # records sent before the last flush

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
        self.sent.append((topic, key, value, headers))

    async def flush(self) -> None:
        self.flushed = len(self.sent)


@dataclass
class FakeRegistry:
    schemas: dict[str, int] = field(default_factory=dict)

    def register(self, subject: str, schema_str: str) -> int:
        return self.schemas.setdefault(schema_str, len(self.schemas) + 1)

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        text = next(s for s, i in self.schemas.items() if i == schema_id)
        parsed: dict[str, Any] = json.loads(text)
        return parsed


@dataclass
class Msg:
    topic: str
    key: bytes | None
    value: bytes | None
    offset: int = 0
    partition: int = 0
    timestamp: float = 1_700_000_000.0
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class StubErp:
    """Idempotent like the real port: ensure_customer finds a customer by code or creates it."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.ids: dict[str, int] = {}
        self.calls: list[tuple[str, str]] = []  # (code, name) in the order requests arrived
        self.flying = 0
        self.peak = 0
        self.fail: Callable[[CustomerSpec], Exception | None] = lambda spec: None
        self.rng = rng

    async def ensure_customer(self, spec: CustomerSpec) -> ErpCustomer:
        self.calls.append((spec.code, spec.name))
        self.flying += 1
        self.peak = max(self.peak, self.flying)
        try:
            await asyncio.sleep(self.rng.choice((0, 0, 0.001)) if self.rng else 0.002)
            error = self.fail(spec)
            if error is not None:
                raise error
            if not spec.name:
                raise CommandRejectedError("erp", "a party needs a name; set the account name")
            # Lookup and create in one step, as the port's unique code guarantees.
            customer_id = self.ids.setdefault(spec.code, len(self.ids) + 1)
            return ErpCustomer(customer_id, spec.code)
        finally:
            self.flying -= 1


class StubCrm:
    def __init__(self) -> None:
        self.written: list[CrmWriteBack] = []

    async def write_back(self, change: CrmWriteBack) -> None:
        self.written.append(change)


def target(name: str) -> CommandTarget:
    return next(t for t in TARGETS if t.name == name)


def make_stage(
    port: Any,
    name: str = "erp",
    concurrency: int = 4,
    rate: float = 10_000,
    retry_for: float = 5,
    throttle: Throttle | None = None,
) -> tuple[CommandStage, FakeOutput, FakeRegistry]:
    out, reg = FakeOutput(), FakeRegistry()
    throttle = throttle or Throttle(
        name, concurrency, rate, retry_for, Backoff(0.001, 0.004), rng=random.Random(0)
    )
    stage = CommandStage(target(name), lambda: port, throttle, TOPO, out, reg)  # type: ignore[arg-type]
    asyncio.run(stage.prepare())
    return stage, out, reg


def command(
    reg: FakeRegistry,
    key: str,
    step: str,
    spec: Any,
    target_name: str = "erp",
    offset: int = 0,
    attempt: int = 1,
) -> Msg:
    correlation = str(uuid.uuid5(uuid.NAMESPACE_URL, key))
    record = {
        "command_id": f"{correlation}:{step}",
        "correlation_id": correlation,
        "saga_key": key,
        "step": step,
        "target": target_name,
        "attempt": attempt,
        "payload": spec if isinstance(spec, str) else to_json(spec),
        "issued_at": datetime(2026, 11, 30, tzinfo=UTC),
    }
    schema_id = reg.register("t.saga.commands-value", saga.schema_str(saga.COMMAND))
    value = encode(schema_id, saga.parsed(saga.COMMAND), record)
    return Msg(TOPO.commands(target_name), key.encode(), value, offset)


def on(out: FakeOutput, topic: str) -> list[tuple[bytes | None, bytes | None, Any]]:
    return [(k, v, h) for t, k, v, h in out.sent if t == topic]


def results(out: FakeOutput, reg: FakeRegistry) -> list[dict[str, Any]]:
    decoder = Decoder(reg.schema_by_id)
    return [decoder.decode(v) for _, v, _ in on(out, TOPO.results) if v is not None]


def audits(out: FakeOutput, reg: FakeRegistry) -> list[dict[str, Any]]:
    decoder = Decoder(reg.schema_by_id, json.loads(command_schema_str()))
    return [decoder.decode(v) for _, v, _ in on(out, TOPO.audit("command")) if v is not None]


def test_done_result_carries_the_answer_and_is_flushed_with_its_audit() -> None:
    erp = StubErp()
    stage, out, reg = make_stage(erp)
    msg = command(reg, "crm:opportunity:1", "erp_customer", CustomerSpec("C1", "Acme"))
    asyncio.run(stage.process([msg]))  # type: ignore[list-item]
    [result] = results(out, reg)
    assert result["status"] == "done" and result["error"] is None
    assert json.loads(result["output"]) == {"id": 1, "code": "C1"}
    assert result["saga_key"] == "crm:opportunity:1" and result["step"] == "erp_customer"
    assert result["command_id"].endswith(":erp_customer") and result["target"] == "erp"
    assert [k for k, _, _ in on(out, TOPO.results)] == [b"crm:opportunity:1"]
    [audit] = audits(out, reg)
    assert (audit["status"], audit["output"], audit["command_id"]) == (
        "done",
        result["output"],
        result["command_id"],
    )
    assert out.flushed == len(out.sent) == 2  # results and audit acked before the batch is


def test_writeback_without_answer_gives_empty_output() -> None:
    crm = StubCrm()
    stage, out, reg = make_stage(crm, "crm")
    change = CrmWriteBack(opportunity_id="006A", project_code="PRJ7", sync_status="provisioned")
    asyncio.run(stage.process([command(reg, "k", "crm_writeback", change, "crm")]))  # type: ignore[list-item]
    assert crm.written == [change]
    assert [(r["status"], r["output"]) for r in results(out, reg)] == [("done", "{}")]


def test_commands_of_one_key_in_order_other_keys_concurrently() -> None:
    erp = StubErp()
    stage, out, reg = make_stage(erp, concurrency=3)
    batch = [
        command(reg, f"k{i % 4}", "erp_customer", CustomerSpec(f"C{i}", f"n{i}"), offset=i)
        for i in range(16)
    ]
    asyncio.run(stage.process(batch))  # type: ignore[arg-type]
    for k in range(4):
        codes = [f"C{i}" for i in range(16) if i % 4 == k]
        assert [c for c, _ in erp.calls if c in codes] == codes
        outs = [
            json.loads(r["output"])["code"] for r in results(out, reg) if r["saga_key"] == f"k{k}"
        ]
        assert outs == codes
    assert erp.peak == 3  # keys overlap, never more than the application's limit


def test_rate_limit_spaces_requests_and_counts_waits() -> None:
    erp = StubErp()
    waits = metrics().rate_limit_waits.labels("erp-rate-test")
    before = waits._value.get()
    throttle = Throttle("erp-rate-test", 1, rate=40, retry_for=1, on_wait=lambda s: waits.inc())
    stage, out, reg = make_stage(erp, throttle=throttle)
    batch = [
        command(reg, f"k{i}", "erp_customer", CustomerSpec(f"C{i}", "n"), offset=i)
        for i in range(6)
    ]
    started = time.monotonic()
    asyncio.run(stage.process(batch))  # type: ignore[arg-type]
    assert time.monotonic() - started >= 5 / 40 * 0.9  # one burst token, then 40/s
    assert waits._value.get() - before >= 4
    assert len(results(out, reg)) == 6


def test_unavailable_retried_then_done() -> None:
    erp = StubErp()
    failures = iter([ApplicationUnavailableError("erp", "HTTP 503"), ConnectionResetError()])
    erp.fail = lambda spec: next(failures, None)
    stage, out, reg = make_stage(erp)
    retries = metrics().command_retries.labels("erp", "erp_customer")
    before = retries._value.get()
    msg = command(reg, "k", "erp_customer", CustomerSpec("C1", "Acme"))
    asyncio.run(stage.process([msg]))  # type: ignore[list-item]
    assert [r["status"] for r in results(out, reg)] == ["done"]
    assert len(erp.calls) == 3 and retries._value.get() - before == 2


def test_unavailable_past_retry_for_stops_without_acking() -> None:
    erp = StubErp()
    erp.fail = lambda spec: ApplicationUnavailableError("erp", "HTTP 502 Bad Gateway")
    stage, out, reg = make_stage(erp, retry_for=0.05)
    batch = [
        command(reg, "good", "erp_customer", CustomerSpec("C1", "Acme")),
        command(reg, "k", "erp_customer", CustomerSpec("C2", "Beta")),
    ]
    with pytest.raises(ApplicationUnavailableError, match=r"^erp: unavailable for 0s"):
        asyncio.run(stage.process(batch))  # type: ignore[arg-type]
    assert out.flushed == 0  # nothing flushed: the batch is processed again after a restart


def test_rejected_and_adapter_faults_become_rejected_results() -> None:
    erp = StubErp()
    erp.fail = lambda spec: KeyError("party") if spec.code == "BUG" else None
    stage, out, reg = make_stage(erp)
    counted = metrics().commands
    before = {
        r: counted.labels("erp", "erp_customer", r)._value.get() for r in ("done", "rejected")
    }
    batch = [
        command(reg, "a", "erp_customer", CustomerSpec("C1", "")),
        command(reg, "b", "erp_customer", CustomerSpec("BUG", "x")),
        command(reg, "c", "erp_customer", CustomerSpec("C3", "ok")),
    ]
    asyncio.run(stage.process(batch))  # type: ignore[arg-type]
    by_key = {r["saga_key"]: r for r in results(out, reg)}
    assert by_key["a"]["status"] == "rejected" and "needs a name" in by_key["a"]["error"]
    assert by_key["b"]["status"] == "rejected" and "unexpected KeyError" in by_key["b"]["error"]
    assert by_key["c"]["status"] == "done"
    assert {a["status"] for a in audits(out, reg)} == {"rejected", "done"}
    after = {r: counted.labels("erp", "erp_customer", r)._value.get() for r in before}
    assert (after["done"] - before["done"], after["rejected"] - before["rejected"]) == (1, 2)


def test_poison_goes_to_the_dlq_and_the_line_keeps_running() -> None:
    erp = StubErp()
    stage, out, reg = make_stage(erp)
    topic = TOPO.commands("erp")
    poison = [
        Msg(topic, b"k1", b"\x00\x00\x00\x00\x07garbage", 1),  # unknown schema id / bytes
        Msg(topic, b"k2", b"not avro", 2),
        Msg(topic, None, command(reg, "k3", "erp_customer", CustomerSpec("C", "n")).value, 3),
        command(reg, "k4", "psa_project", CustomerSpec("C", "n"), offset=4),  # not an ERP step
        command(reg, "k5", "erp_customer", '{"code": "C", "nom": "x"}', offset=5),
        command(reg, "k6", "erp_customer", "{not json", offset=6),
    ]
    good = command(reg, "k7", "erp_customer", CustomerSpec("C7", "n"), offset=7)
    asyncio.run(stage.process([*poison, good]))  # type: ignore[list-item]
    dead = on(out, TOPO.dlq("command"))
    assert [(k, v) for k, v, _ in dead] == [(m.key, m.value) for m in poison]
    contexts = [read_context(h) for _, _, h in dead]
    assert [c["offset"] for c in contexts] == ["1", "2", "3", "4", "5", "6"]
    assert {c["stage"] for c in contexts} == {"command"}
    assert [c["error.class"] for c in contexts[3:]] == ["BadCommandError"] * 3
    assert "psa_project" in contexts[3]["error.message"]
    assert [r["saga_key"] for r in results(out, reg)] == ["k7"]
    assert out.flushed == len(out.sent)


def test_duplicate_command_is_applied_again_with_the_same_result() -> None:
    erp = StubErp()
    stage, out, reg = make_stage(erp)
    msg = command(reg, "k", "erp_customer", CustomerSpec("C1", "Acme"))

    async def run() -> None:
        await stage.process([msg, msg])  # type: ignore[list-item]
        await stage.process([msg])  # type: ignore[list-item]  # a redelivery

    asyncio.run(run())
    rs = results(out, reg)
    assert len(erp.calls) == 3 and len(erp.ids) == 1
    assert {(r["command_id"], r["status"], r["output"]) for r in rs} == {
        (rs[0]["command_id"], "done", '{"code":"C1","id":1}')
    }
    assert len({a["audit_id"] for a in audits(out, reg)}) == 1


# -- property: any stream, any batching, any interleaving = the sequential model ----------

CODES = ("A", "B", "C", "D")
commands_st = st.lists(
    st.tuples(
        st.sampled_from(("k0", "k1", "k2", "k3")),
        st.sampled_from(CODES),
        st.sampled_from(("x", "y", "")),  # "" is refused by the application
        st.booleans(),  # fails once as unavailable before it answers
    ),
    min_size=1,
    max_size=30,
)


def _model(stream: list[tuple[str, str, str, bool]]) -> dict[str, list[tuple[str, str]]]:
    """Apply one command after the other; per saga key: (code, status) in order."""
    out: dict[str, list[tuple[str, str]]] = {}
    for key, code, name, _ in stream:
        out.setdefault(key, []).append((code, "done" if name else "rejected"))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=commands_st,
    cuts=st.lists(st.integers(1, 30), max_size=4),
    redelivered=st.lists(st.booleans(), min_size=5, max_size=5),
    concurrency=st.integers(1, 4),
    rng=st.randoms(use_true_random=False),
)
def test_any_stream_matches_the_sequential_model(
    stream: list[tuple[str, str, str, bool]],
    cuts: list[int],
    redelivered: list[bool],
    concurrency: int,
    rng: random.Random,
) -> None:
    erp = StubErp(rng)
    attempts: dict[str, int] = {}

    def fail(spec: CustomerSpec) -> Exception | None:
        # tax_id carries the command's position; a flaky one fails only its first request.
        index = spec.tax_id or "0"
        attempts[index] = attempts.get(index, 0) + 1
        if stream[int(index)][3] and attempts[index] == 1:
            return ApplicationUnavailableError("erp", "HTTP 429")
        return None

    erp.fail = fail
    stage, out, reg = make_stage(erp, concurrency=concurrency)
    msgs = [
        command(reg, key, "erp_customer", CustomerSpec(code, name, tax_id=str(i)), offset=i)
        for i, (key, code, name, _) in enumerate(stream)
    ]
    bounds = sorted({0, len(msgs), *(c for c in cuts if c < len(msgs))})
    applied: list[tuple[str, str, str, bool]] = []

    async def run() -> None:  # one event loop, as in the worker
        for n, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            # A redelivered batch (a crash before its acknowledgement) comes again, whole.
            for _ in range(2 if redelivered[n] else 1):
                await stage.process(msgs[lo:hi])  # type: ignore[arg-type]
                applied.extend(stream[lo:hi])

    asyncio.run(run())

    got: dict[str, list[tuple[str, str]]] = {}
    for r in results(out, reg):
        answer = json.loads(r["output"])
        got.setdefault(r["saga_key"], []).append((answer.get("code", ""), r["status"]))
    # Per key: the same commands, in the same order, with the same outcome.
    assert got == {
        k: [(c if s == "done" else "", s) for c, s in v] for k, v in _model(applied).items()
    }
    # Exactly one customer per code, and every answer names that customer.
    assert set(erp.ids) == {code for _, code, name, _ in stream if name}
    for r in results(out, reg):
        if r["status"] == "done":
            answer = json.loads(r["output"])
            assert answer["id"] == erp.ids[answer["code"]]
    assert out.flushed == len(out.sent)


def test_port_is_built_on_the_first_command_and_a_config_error_stops_the_stage() -> None:
    built: list[int] = []

    def broken() -> Any:
        built.append(1)
        raise ConfigError("PSSYNC_ERP_PASSWORD_FILE='/nope' cannot be read")

    out, reg = FakeOutput(), FakeRegistry()
    throttle = Throttle("erp", 1, 100, 1)
    stage = CommandStage(target("erp"), broken, throttle, TOPO, out, reg)  # type: ignore[arg-type]
    asyncio.run(stage.prepare())
    asyncio.run(stage.process([Msg(TOPO.commands("erp"), b"k", b"poison")]))  # type: ignore[list-item]
    assert built == []  # only poison so far: no port needed
    msg = command(reg, "k", "erp_customer", CustomerSpec("C1", "Acme"))
    with pytest.raises(ConfigError, match="PSSYNC_ERP_PASSWORD_FILE"):
        asyncio.run(stage.process([msg]))  # type: ignore[list-item]
    assert built == [1] and not results(out, reg)
