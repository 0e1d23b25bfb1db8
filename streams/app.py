"""Composes the pssync Faust app from settings. Nothing here runs at import time."""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import generate_latest

from connectors.sinks.postgres import PostgresSink
from schemas.registry import Registry
from streams.agents import normalize, sink
from streams.metrics import metrics
from streams.output import Output
from streams.settings import Settings
from streams.topology import topology
from tables.dedupe import dedupe_table


def create_app(settings: Settings) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        datadir=str(settings.data_dir),
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_host="127.0.0.1",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        autodiscover=False,
    )
    topo = topology(settings)
    output = Output(settings.kafka_bootstrap, client_id=settings.app_id)
    registry = Registry(settings)
    table = dedupe_table(app, settings.partitions)
    normalize.register(app, settings, topo, output, registry, table)
    sink.register(app, settings, topo, output, registry, PostgresSink(settings.target_url))

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        # aiohttp takes the charset separately from the content type.
        return web.bytes(
            generate_latest(metrics().registry), content_type="text/plain; version=0.0.4"
        )

    return app
