"""Composes the pssync Faust app from settings. Nothing here runs at import time."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from prometheus_client import generate_latest

from connectors.applications import port_factories
from connectors.sinks.postgres import PostgresTarget
from schemas.registry import Registry
from streams.agents import (
    commands,
    deal,
    expense,
    invoices,
    normalize,
    postings,
    sink,
    timesheets,
)
from streams.agents.batching import StageRunner
from streams.agents.batching import install as install_batch_path
from streams.agents.shared_decode import SharedDecoder
from streams.analytics import analytics_copies
from streams.flow import hold_flow_until_streams_resume
from streams.metrics import metrics
from streams.output import Output
from streams.replay import Replayer
from streams.security import faust_credentials
from streams.settings import Settings
from streams.topology import topology
from tables.deals import deal_tables
from tables.dedupe import Positions, dedupe_table
from tables.expenses import expense_table
from tables.invoices import invoice_tables
from tables.store import bound_store_memory, rocksdb_options

log = logging.getLogger(__name__)


def _report_lag(replayer: Replayer, settings: Settings, topics: list[str]) -> None:
    gauge = metrics().consumer_lag
    for topic in topics:
        try:
            for partition, lag in replayer.lag(settings.app_id, topic).items():
                gauge.labels(topic, str(partition)).set(lag)
        except Exception as exc:  # noqa: BLE001 - a metrics hiccup must not stop the worker
            log.warning("consumer lag of %s not measured: %s", topic, exc)


# Faust 0.15's "rocksdb://" store runs on rocksdict (it has no "rocksdict://" scheme).
STORE_URLS = {"rocksdb": "rocksdb://", "memory": "memory://"}


def create_app(settings: Settings) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings),
        store=STORE_URLS[settings.store],
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        table_standby_replicas=settings.standby_replicas,
        # Per app id: RocksDB files remember changelog offsets of this app id's topics only.
        datadir=str(settings.state_dir),
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_host="127.0.0.1",
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=settings.fetch_max_bytes,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        producer_acks=-1,
        autodiscover=False,
    )
    hold_flow_until_streams_resume(app)
    topo = topology(settings)
    output = Output(settings, client_id=settings.app_id)
    registry = Registry(settings)
    runners: dict[str, StageRunner] = {}
    on = settings.stages
    # Any stage registered after another on one of its topics joins that stage's runner
    # (streams/agents/fanout.py): the deal stage the sink's, for canonical.opportunity, the
    # expense stage the sink's PSA inputs. A stage registered later on one of them must join
    # through fanout.attach too, or it takes the topic over.
    if "normalize" in on:
        positions = Positions(dedupe_table(app, settings.partitions), output)
        analytics = analytics_copies(settings, topo, output, registry)
        normalize.register(app, runners, settings, topo, output, registry, positions, analytics)
    # The sink and the deal stage decode each canonical opportunity once between them.
    decoded = SharedDecoder.of(registry)
    if "sink" in on:
        target = PostgresTarget(settings.target_url)
        sink.register(app, runners, settings, topo, output, registry, target, decoded)
    ports = port_factories(settings)
    # One ERP throttle for the saga's ERP commands and the postings: one rate for the ERP.
    throttles = {"erp": commands.throttle_for(settings, "erp")}
    if "command" in on:
        commands.register(app, runners, settings, topo, output, registry, ports, throttles)
    if "posting" in on:
        postings.register(app, runners, settings, output, registry, ports, throttles["erp"])
    if "deal" in on:
        tables = deal_tables(app, settings.partitions, output)
        deal.register(app, runners, settings, topo, output, registry, tables, decoded)
    if "invoice" in on:
        invoice_state = invoice_tables(app, settings.partitions, output)
        invoices.register(app, runners, settings, topo, output, registry, invoice_state)
    if "time_entry" in on:
        # Joins postings.results through fanout: a stage of another posting kind may read it.
        timesheets.register(app, runners, settings, output, registry)
    if "expense" in on:
        expense_state = expense_table(app, settings.partitions, output)
        expense.register(app, runners, settings, topo, output, registry, expense_state)
    if settings.store == "rocksdb":
        bound_store_memory(
            app,
            rocksdb_options(settings.rocksdb_write_buffer_mb, settings.rocksdb_block_cache_mb),
        )
    # Dedupe positions go to their changelog after their batch is acknowledged; they must be
    # in Kafka before the offsets that skip those changes are committed.
    install_batch_path(
        app, runners, before_commit=[output.flush], fetch_max_wait_ms=settings.fetch_max_wait_ms
    )

    emitted = [r.raw_topic for r in topo.routes] + [topo.output(e) for e in topo.emitted]
    lag_topics = [t for t in emitted if t in runners]  # those this worker's stages read

    # Committed-offset lag, as a Kafka exporter would report it for this group: one admin
    # client for the worker's life, not one per report.
    lag_admin = Replayer(settings, timeout=10)

    @app.timer(interval=15.0)  # type: ignore[untyped-decorator]
    async def report_lag() -> None:
        await asyncio.to_thread(_report_lag, lag_admin, settings, lag_topics)

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        # aiohttp takes the charset separately from the content type.
        return web.bytes(
            generate_latest(metrics().registry), content_type="text/plain; version=0.0.4"
        )

    return app
