"""The deal stage's orchestration without Kafka: which records it writes for which inputs.

The registry, the producer and the tables are small in-memory stand-ins here; the same
paths run on the real stack in tests/integration/test_deal_saga.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.ports import ErpCustomer, to_json
from schemas import contracts
from schemas.serde import Decoder, Encoder
from streams.agents.deal import DealStage, Work
from streams.deals.assembly import on_opportunity
from streams.deals.records import Control, saga_schema
from streams.deals.sources import VIEWS, Stamp, opportunity_of, stamp_of
from streams.mappings.envelope import correlation_id
from streams.settings import Settings
from streams.topology import topology
from tables.deals import DealTables
from tables.json_table import JsonTable
from tables.views import View

KEY = "crm:opportunity:006A"
CID = correlation_id(KEY)
# Line items have no contract yet: the fields the stage reads (streams/deals/sources.py).
LINE_ITEM = json.dumps(
    {
        "type": "record",
        "name": "LineItemEvent",
        "fields": [
            {
                "name": "envelope",
                "type": {
                    "type": "record",
                    "name": "Envelope",
                    "fields": [{"name": "entity_version", "type": "long"}],
                },
            },
            {
                "name": "data",
                "type": [
                    "null",
                    {
                        "type": "record",
                        "name": "LineItem",
                        "fields": [
                            {"name": n, "type": "string"}
                            for n in ("opportunity_id", "service_line", "quantity", "unit_price")
                        ],
                    },
                ],
            },
        ],
    }
)


class Registry:
    def __init__(self) -> None:
        self.schemas: dict[int, dict[str, Any]] = {}
        self.ids: dict[str, int] = {}

    def register(self, subject: str, schema: str) -> int:
        if schema not in self.ids:
            self.ids[schema] = len(self.ids) + 1
            self.schemas[self.ids[schema]] = json.loads(schema)
        return self.ids[schema]

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        return self.schemas[schema_id]


class Output:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, *_: Any, **__: Any) -> None:
        self.sent.append((topic, key, value))

    async def flush(self) -> None:
        return None


class Table:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return iter(list(self.data.items()))

    def write(self, values: Iterable[tuple[int, str, dict[str, Any]]]) -> None:
        for _, key, value in values:
            self.data[key] = json.loads(json.dumps(value))


@dataclass
class Msg:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int = 0
    offset: int = 0
    headers: Any = None
    timestamp: float | None = None


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, wait: float = 30.0, stage: type[DealStage] = DealStage) -> None:
        self.settings = Settings(deal_line_wait=wait)
        self.topo = topology(self.settings)
        self.registry = Registry()
        self.output = Output()
        self.clock = Clock()
        # Views read JSON here; on the stack they decode wire-format Avro the same way.
        self.views: dict[str, View[Any]] = {
            name: View(src.topic(""), json.loads, src.adapt, src.aliases)
            for name, src in VIEWS.items()
        }
        self.decoder = Decoder(self.registry.schema_by_id)
        self.version = 0
        for view in self.views.values():
            view.ready.set()
        self.stage_class = stage
        self.stage = self.start(DealTables(*(cast(JsonTable, Table()) for _ in range(3))))

    def start(self, tables: DealTables) -> DealStage:
        """A stage on `tables`, prepared: a restarted worker has only what they hold."""
        stage = self.stage_class(
            self.settings,
            self.topo,
            cast(Any, self.output),
            cast(Any, self.registry),
            tables,
            self.views,
            clock=self.clock,
        )
        asyncio.run(stage.prepare())
        return stage

    def encode(self, schema: str, record: dict[str, Any]) -> bytes:
        return Encoder(self.registry.register, "s", schema).encode(record)

    def view(self, name: str, key: str, data: dict[str, Any]) -> None:
        self.views[name].apply(key, json.dumps({"envelope": {}, "data": data}).encode())

    def envelope(self) -> dict[str, Any]:
        self.version += 1
        now = datetime.fromtimestamp(self.clock.now, UTC)
        return {
            "event_id": "00000000-0000-4000-8000-000000000000",
            "correlation_id": CID,
            "causation_id": None,
            "source": {
                "system": "crm",
                "connector": "crm",
                "entity": "sales.opportunity",
                "key": "006A",
                "position": str(self.version),
                "sequence": self.version,
                "committed_at": now,
            },
            "op": "update",
            "entity_version": self.version,
            "emitted_at": now,
        }

    def opportunity(self, **changes: Any) -> Msg:
        data = {
            "opportunity_id": KEY,
            "crm_id": "006A",
            "customer_id": "crm:account:001A",
            "name": "Acme platform",
            "stage": "closed_won",
            "is_closed": True,
            "is_won": True,
            "amount": Decimal("1000.00"),
            "currency": "EUR",
            "billing_type": "time_and_materials",
            "delivery_region": "EMEA",
            "project_manager": "pm@example.com",
            "service_lines": ["ARCH"],
            **changes,
        }
        record = {"envelope": self.envelope(), "data": data}
        value = self.encode(contracts.schema_str("opportunity"), record)
        return Msg(self.topo.canonical("opportunity"), KEY.encode(), value)

    def line(self, key: str, service: str) -> Msg:
        data = {
            "opportunity_id": KEY,
            "service_line": service,
            "quantity": "8",
            "unit_price": "100",
        }
        value = self.encode(LINE_ITEM, {"envelope": {"entity_version": 1}, "data": data})
        return Msg(self.topo.canonical("opportunity_line_item"), key.encode(), value)

    def result(self, command: dict[str, Any], status: str, output: str = "{}") -> Msg:
        record = {
            **{
                k: command[k]
                for k in ("command_id", "correlation_id", "saga_key", "step", "target", "attempt")
            },
            "status": status,
            "output": output,
            "error": None if status == "done" else "refused",
            "completed_at": command["issued_at"],
        }
        return Msg(self.topo.results, KEY.encode(), self.encode(saga_schema("result"), record))

    def feed(self, *msgs: Msg) -> None:
        asyncio.run(self.stage.process(cast(Any, list(msgs))))

    def tick(self) -> None:
        asyncio.run(self.stage.tick(frozenset({0})))

    def records(self, topic: str) -> list[dict[str, Any]]:
        return [self.decoder.decode(v) for t, _, v in self.output.sent if t == topic and v]

    def commands(self, target: str) -> list[dict[str, Any]]:
        return self.records(self.topo.commands(target))

    def all_commands(self) -> list[dict[str, Any]]:
        return [c for target in ("erp", "psa", "crm") for c in self.commands(target)]


def reference(h: Harness) -> None:
    h.view(
        "customer",
        "crm:account:001A",
        {
            "customer_id": "crm:account:001A",
            "crm_account_id": "001A",
            "name": "Acme",
            "billing_country": "DE",
        },
    )
    h.view(
        "legal_entity",
        "LE-DE",
        {"code": "LE-DE", "name": "GmbH", "country": "DE", "base_currency": "EUR"},
    )
    h.view("tax_code", "DE19", {"code": "DE19", "jurisdiction": "DE"})
    h.view(
        "service_line", "ARCH", {"code": "ARCH", "name": "Architecture", "project_template": "T"}
    )
    h.view(
        "project_template",
        "T",
        {
            "code": "T",
            "name": "T",
            "phases": [{"name": "Plan", "tasks": [{"name": "Design", "hours": 8}]}],
        },
    )
    h.view("project_manager", "r1", {"resource_id": "r1", "email": "pm@example.com"})


def test_complete_deal_fires_once_and_advances_on_the_awaited_result_only() -> None:
    h = Harness()
    reference(h)
    h.feed(h.opportunity())
    assert h.commands("erp") == []  # no line item yet: waiting
    h.feed(h.line("l1", "ARCH"), h.opportunity(name="Acme platform"))  # an echo too
    [first] = h.commands("erp")
    assert first["command_id"] == f"{CID}:erp_customer"
    done = h.result(first, "done", to_json(ErpCustomer(5, "crm:account:001A")))
    h.feed(done, done)
    assert [c["step"] for c in h.commands("erp")] == ["erp_customer", "erp_project"]


def test_a_fired_deal_whose_saga_state_was_lost_begins_again_on_the_next_assignment() -> None:
    # A kill between the changelog sends of one batch: the fired deal landed, its saga not.
    h = Harness()
    reference(h)
    h.feed(h.line("l1", "ARCH"), h.opportunity())
    [first] = h.commands("erp")
    tables = h.stage.tables
    cast(Any, tables.sagas).data.clear()
    h.stage = h.start(tables)
    h.feed(h.opportunity(name="Acme platform"))  # the replayed input changes nothing
    assert len(h.commands("erp")) == 1
    h.tick()  # the restarted worker's first tick sees its assignment
    again = h.commands("erp")[1:]
    assert [c["command_id"] for c in again] == [first["command_id"]]
    done = h.result(first, "done", to_json(ErpCustomer(5, "crm:account:001A")))
    h.feed(done)
    assert [c["step"] for c in h.commands("erp")][-1] == "erp_project"
    h.tick()
    assert [c["step"] for c in h.commands("erp")][-1] == "erp_project"  # begun once


def test_waiting_deal_is_judged_by_the_timer_and_a_late_customer_resumes_it() -> None:
    h = Harness(wait=10)
    reference(h)
    h.views["customer"].apply("crm:account:001A", None)  # not captured yet
    h.feed(h.opportunity())
    h.tick()
    assert h.records(h.topo.exceptions) == []
    h.clock.now += 11
    h.tick()
    [parked] = h.records(h.topo.exceptions)
    assert (parked["reason"], parked["step"], parked["status"]) == (
        "customer_missing",
        "validate",
        "open",
    )
    [notice] = h.commands("crm")
    assert notice["command_id"] == f"{CID}:crm_writeback:exception:1"
    # The customer arrives in its view: the parked deal is checked again and goes on.
    reference(h)
    h.clock.now += 1
    h.tick()
    assert [r["status"] for r in h.records(h.topo.exceptions)] == ["open", "resolved"]
    assert [c["step"] for c in h.commands("erp")] == ["erp_customer"]


def test_a_step_that_cannot_be_built_parks_on_that_step_and_a_retry_resumes_it() -> None:
    h = Harness(wait=0)
    reference(h)
    h.feed(h.opportunity())
    [first] = h.commands("erp")
    # The template is withdrawn after the deal was checked: the project cannot be built.
    h.views["project_template"].apply("T", None)
    h.feed(h.result(first, "done", to_json(ErpCustomer(5, "crm:account:001A"))))
    [parked] = h.records(h.topo.exceptions)
    assert (parked["reason"], parked["step"], parked["attempt"]) == (
        "template_missing",
        "erp_project",
        1,
    )
    assert len(h.commands("erp")) == 1
    reference(h)
    retry = Control("retry", "erp_project", 1, "now")
    h.feed(Msg(h.topo.saga_control, KEY.encode(), retry.to_bytes()))
    assert [(c["step"], c["attempt"]) for c in h.commands("erp")] == [
        ("erp_customer", 1),
        ("erp_project", 2),
    ]
    h.feed(Msg(h.topo.saga_control, KEY.encode(), retry.to_bytes()))  # replayed: nothing
    assert len(h.commands("erp")) == 2


def test_a_rejected_writeback_parks_without_a_crm_notice_and_poison_goes_to_the_dlq() -> None:
    h = Harness(wait=0)
    reference(h)
    h.feed(h.opportunity())
    outputs = {
        "erp_customer": to_json(ErpCustomer(5, "c")),
        "erp_project": '{"id": 9, "number": "P9", "task_ids": {}}',
        "psa_project": '{"id": 3, "identifier": "prj-p9", "url": "http://psa/projects/prj-p9"}',
    }
    for step in ("erp_customer", "erp_project", "psa_project"):
        command = next(c for c in h.all_commands() if c["step"] == step)
        h.feed(h.result(command, "done", outputs[step]))
    [writeback] = h.commands("crm")
    assert '"project_code":"P9"' in writeback["payload"]
    h.feed(h.result(writeback, "rejected"))
    [parked] = h.records(h.topo.exceptions)
    assert (parked["step"], parked["reason"]) == ("crm_writeback", "rejected")
    assert len(h.commands("crm")) == 1  # no notice through the CRM that refused
    h.feed(Msg(h.topo.results, KEY.encode(), b"not avro"))
    assert [t for t, _, _ in h.output.sent].count(h.topo.dlq("deal")) == 1


class KeepsEveryDeal(DealStage):
    """The reference: state for every deal from its first event on, open or not."""

    def _opportunity(self, work: Work, msg: Any, now: float) -> None:
        key = msg.key.decode()
        record = self._decode(msg)
        opp = None if record is None else opportunity_of(key, record)
        stamp = Stamp(-1, 0.0) if record is None else stamp_of(record)
        deal = self._deal(work, key, msg.partition)
        wait = self.settings.deal_line_wait
        updated, changed = on_opportunity(deal, msg.partition, opp, stamp, now, wait)
        if updated != deal:
            self._after(work, updated, changed, now)


STAGES = ["prospecting", "negotiation", "closed_won", "closed_lost", None]  # None: a delete


@settings(max_examples=150, deadline=None)
@given(
    source=st.lists(
        st.one_of(
            st.tuples(st.just("opp"), st.sampled_from(STAGES), st.sampled_from(["ARCH", "X"])),
            st.tuples(st.just("line"), st.sampled_from(["l1", "l2"]), st.sampled_from(["ARCH"])),
        ),
        min_size=1,
        max_size=12,
    ),
    rewinds=st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11)), max_size=3),
    cuts=st.lists(st.integers(1, 30), max_size=6),
    wait=st.sampled_from([0.0, 10.0]),
)
def test_deals_without_state_until_closed_won_issue_what_full_state_issues(
    source: list[tuple[str, str | None, str]],
    rewinds: list[tuple[int, int]],
    cuts: list[int],
    wait: float,
) -> None:
    """The canonical stream of one deal: its source changes in order, and from any point a
    replay of an earlier suffix (normalize re-emits what it had not recorded). Cut into
    batches, with the timer ticking between them, the stage issues the same commands,
    exceptions and notices as a stage keeping every deal's state (the revision aside)."""
    # After emitting source change `at`, normalize restarts from `back` (<= at): a replay
    # re-emits only what was emitted already, in order, then goes on.
    crash = {min(at, len(source) - 1): min(back, at, len(source) - 1) for at, back in rewinds}
    stream: list[int] = []
    i = 0
    while i < len(source):
        stream.append(i)
        if i in crash:
            i = crash.pop(i)
            continue
        i += 1
    outputs = []
    for kind in (DealStage, KeepsEveryDeal):
        h = Harness(wait=wait, stage=kind)
        reference(h)
        msgs: list[Msg] = []
        for what, arg, service in source:
            if what == "line":
                msgs.append(h.line(str(arg), service))
            elif arg is None:
                h.version += 1
                msgs.append(Msg(h.topo.canonical("opportunity"), KEY.encode(), None))
            else:
                msgs.append(h.opportunity(stage=arg, service_lines=[service]))
        feed = [msgs[i] for i in stream]
        start = 0
        for cut in [*sorted(set(cuts)), len(feed)]:
            if cut > start:
                h.feed(*feed[start:cut])
                start = cut
            h.clock.now += 6
            h.tick()
        sent = []
        for topic, key, value in h.output.sent:
            record = h.decoder.decode(value) if value else None
            if record is not None:
                record.pop("deal_revision", None)
            sent.append((topic, key, record))
        outputs.append(sent)
    assert outputs[0] == outputs[1]
