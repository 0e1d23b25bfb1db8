"""The sink stage: one batch stage for every entity and reference set, one lane each."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import faust

from connectors.sinks.postgres import PostgresTarget
from schemas.registry import Registry
from streams.agents import sink
from streams.agents.batching import StageRunner
from streams.output import Output
from streams.reference.model import SECTIONS
from streams.settings import Settings
from streams.topology import DERIVED, INVOICED, JOINED, Route, Topology

URL = "postgresql+psycopg://nobody@127.0.0.1:1/none"


def _unused(*args: Any) -> Any:
    raise AssertionError("not called")


def test_one_stage_reads_every_entity_topic_into_a_table_each() -> None:
    async def run() -> None:
        settings = Settings.from_env({"PSSYNC_TOPIC_NAMESPACE": "ns", "PSSYNC_TARGET_URL": URL})
        topo = Topology(
            routes=[
                Route("crm.sales.opportunity", "opportunity", _unused),
                Route("crm.sales.account", "customer", _unused),
                Route("erp.public.currency_currency", "currency", _unused),
            ],
            namespace="ns",
        )
        app = faust.App("sink-test", broker="kafka://127.0.0.1:1", autodiscover=False)
        runners: dict[str, StageRunner] = {}
        target = PostgresTarget(URL)
        stage = sink.register(
            app, runners, settings, topo, cast(Output, None), Registry(settings), target
        )
        # Reference sets are read where they are published: reference.<set>; those of
        # pssync's reference file land too.
        published = [f"ns.reference.{name}" for name in SECTIONS.values()]
        topics = ["ns.canonical.customer", "ns.canonical.opportunity", "ns.reference.currency"]
        # The saga's contract, project and task events land too, the invoices and the joined
        # expenses.
        derived = [f"ns.canonical.{e}" for e in (*DERIVED, *INVOICED, *JOINED)]
        assert sorted(runners) == sorted(topics + published + derived)
        assert len(set(runners.values())) == 1
        lanes = {t: (lane.entity, lane.table.spec.table, lane.table.spec.key)
                 for t, lane in stage.lanes.items() if t in topics}  # fmt: skip
        assert lanes == {
            "ns.canonical.customer": ("customer", "customer", "customer_id"),
            "ns.canonical.opportunity": ("opportunity", "opportunity", "opportunity_id"),
            "ns.reference.currency": ("currency", "currency", "code"),
        }
        assert stage.lanes["ns.reference.project_template"].table.spec.key == "code"
        # One connection pool for the target, audit records naming each table.
        assert {lane.table.engine for lane in stage.lanes.values()} == {target.engine}
        assert stage.lanes["ns.reference.currency"].audit.target.endswith("/none/currency")
        await target.close()

    asyncio.run(run())
