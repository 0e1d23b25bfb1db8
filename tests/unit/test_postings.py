"""The ERP posting stage against a model ERP: batches of one kind, at most the batch size,
each key once per ERP call and in order, one result per posting, the same end state as
applying every posting one after the other; a refused batch is split; the circuit."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.ports import (
    DONE,
    POST,
    REJECTED,
    REVERSE,
    Posting,
    PostingOutcome,
    TimesheetLineSpec,
)
from connectors.throttle import Backoff, Throttle
from schemas import saga
from schemas.serde import Decoder, encode
from streams.agents.postings import PostingStage
from streams.errors import ApplicationUnavailableError, CommandRejectedError
from streams.postings import KINDS, posting_record
from streams.settings import Settings
from tests.unit.test_commands import FakeOutput, FakeRegistry, Msg


@dataclass
class ModelErp:
    """Timesheet lines by key: hours, and whether an invoice holds them."""

    lines: dict[str, Decimal] = field(default_factory=dict)
    invoiced: set[str] = field(default_factory=set)
    calls: list[list[Posting]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # keys whose batch the ERP refuses whole

    def apply_one(self, p: Posting) -> PostingOutcome:
        if p.key in self.invoiced and p.key in self.lines:
            return PostingOutcome(p.key, REJECTED, p.key, "invoiced", "invoiced")
        if p.action == REVERSE:
            self.lines.pop(p.key, None)
            return PostingOutcome(p.key, DONE)
        self.lines[p.key] = p.spec.hours
        return PostingOutcome(p.key, DONE, p.key)

    async def post_timesheet_lines(self, postings: list[Posting]) -> list[PostingOutcome]:
        self.calls.append(list(postings))
        if any(p.key in self.refuse for p in postings):
            raise CommandRejectedError("ERP", "refused")
        return [self.apply_one(p) for p in postings]


def spec(key: str, hours: int) -> TimesheetLineSpec:
    return TimesheetLineSpec(key, 1, None, "psa:user:x", date(2026, 11, 30), Decimal(hours))


def stage_for(erp: ModelErp, batch_size: int) -> tuple[PostingStage, FakeOutput, FakeRegistry]:
    out, reg = FakeOutput(), FakeRegistry()
    s = Settings.from_env({"PSSYNC_POSTING_BATCH_SIZE": str(batch_size)})
    throttle = Throttle("erp", 4, 1e6, 5.0)
    stage = PostingStage(lambda: erp, throttle, out, reg, s)  # type: ignore[arg-type]
    asyncio.run(stage.prepare())
    return stage, out, reg


def messages(reg: FakeRegistry, ops: list[tuple[str, str, int]]) -> list[Msg]:
    sid = reg.register("postings.erp-value", saga.schema_str(saga.POSTING))
    msgs = []
    for offset, (key, action, hours) in enumerate(ops):
        rec = posting_record(
            "time_entry", key, action, offset, spec(key, hours) if action == POST else None
        )
        value = encode(sid, saga.parsed(saga.POSTING), rec)
        msgs.append(Msg("postings.erp", key.encode(), value, offset))
    return msgs


def results(out: FakeOutput, reg: FakeRegistry) -> list[dict[str, Any]]:
    dec = Decoder(reg.schema_by_id, json.loads(saga.schema_str(saga.POSTING_RESULT)))
    return [dec.decode(v) for t, _k, v, _h in out.sent if t.endswith("postings.results")]


OPS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.sampled_from([POST, REVERSE]),
        st.integers(1, 9),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, batch_size=st.integers(1, 7), invoiced=st.sets(st.sampled_from("abcde")))
def test_batched_postings_end_like_one_at_a_time(
    ops: list[tuple[str, str, int]], batch_size: int, invoiced: set[str]
) -> None:
    erp = ModelErp(lines={k: Decimal(1) for k in invoiced}, invoiced=set(invoiced))
    stage, out, reg = stage_for(erp, batch_size)
    asyncio.run(stage.process(messages(reg, ops)))  # type: ignore[arg-type]

    reference = ModelErp(lines={k: Decimal(1) for k in invoiced}, invoiced=set(invoiced))
    expected = [
        reference.apply_one(Posting(k, a, spec(k, h) if a == POST else None)) for k, a, h in ops
    ]
    assert erp.lines == reference.lines
    got = results(out, reg)
    assert len(got) == len(ops)
    # Per key, results come in the postings' order, with the reference's statuses.
    for key in "abcde":
        mine = [(r["revision"], r["status"]) for r in got if r["key"] == key]
        want = [
            (i, o.status)
            for i, ((k, _a, _h), o) in enumerate(zip(ops, expected, strict=True))
            if k == key
        ]
        assert mine == want
    for call in erp.calls:
        assert len(call) <= batch_size
        assert len({p.key for p in call}) == len(call)
    assert out.flushed == len(out.sent)


def test_a_refused_batch_is_split_and_only_the_culprit_rejected() -> None:
    erp = ModelErp(refuse={"b"})
    stage, out, reg = stage_for(erp, 10)
    asyncio.run(stage.process(messages(reg, [("a", POST, 1), ("b", POST, 2), ("c", POST, 3)])))  # type: ignore[arg-type]
    got = {r["key"]: (r["status"], r["reason"]) for r in results(out, reg)}
    assert got == {"a": ("done", None), "b": ("rejected", "rejected"), "c": ("done", None)}
    assert erp.lines == {"a": Decimal(1), "c": Decimal(3)}


def test_unknown_kind_goes_to_the_dlq() -> None:
    erp = ModelErp()
    stage, out, reg = stage_for(erp, 10)
    sid = reg.register("postings.erp-value", saga.schema_str(saga.POSTING))
    rec = posting_record("time_entry", "a", REVERSE, 1, None)
    rec["kind"] = "mileage"
    msg = Msg("postings.erp", b"a", encode(sid, saga.parsed(saga.POSTING), rec))
    asyncio.run(stage.process([msg]))  # type: ignore[list-item]
    assert [t for t, *_ in out.sent] == ["dlq.posting"]
    assert [k.name for k in KINDS] == ["time_entry", "expense"]


def test_circuit_holds_new_requests_while_the_application_is_down() -> None:
    async def run() -> list[str]:
        order: list[str] = []
        down = {"n": 2}
        throttle = Throttle("erp", 4, 1000.0, 30.0, Backoff(first=0.01, cap=0.02))

        async def failing() -> str:
            if down["n"] > 0:
                down["n"] -= 1
                order.append("probe failed")
                raise ApplicationUnavailableError("ERP", "down")
            order.append("probe ok")
            return "up"

        async def newcomer() -> str:
            order.append("newcomer sent")
            return "ok"

        first = asyncio.create_task(throttle.call(failing))
        await asyncio.sleep(0.001)
        assert throttle.circuit_open
        second = asyncio.create_task(throttle.call(newcomer))
        await asyncio.gather(first, second)
        assert not throttle.circuit_open
        return order

    order = asyncio.run(run())
    assert order.index("newcomer sent") > order.index("probe ok")
