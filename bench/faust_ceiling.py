"""A Faust agent that only batches events (take_events) and counts them: the framework's
ceiling on a topic, for comparison with the pssync worker. Prints `RATE <events/s>`.

    python bench/faust_ceiling.py <topic> <events> <group>
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.worker import Worker

from streams.security import faust_credentials
from streams.settings import Settings


def main() -> None:
    topic_name, total, group = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    settings = Settings.from_env()
    app = faust.App(
        group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings),
        store="memory://",
        # Faust creates its data dir even for the memory store; keep it out of the repo.
        datadir=tempfile.mkdtemp(prefix="pssync-ceiling-"),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
    )
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw", allow_empty=True)
    seen = {"n": 0, "start": 0.0}

    @app.agent(topic)
    async def count(stream: faust.StreamT[Any]) -> AsyncIterator[None]:
        async for events in stream.take_events(1000, within=0.2):  # type: ignore[attr-defined]
            if not seen["n"]:
                seen["start"] = time.monotonic()
            seen["n"] += len(events)
            # The rate is read once 99% are in: the tail batch may wait for a fetch timeout.
            if seen["n"] >= total * 0.99:
                print(f"RATE {seen['n'] / (time.monotonic() - seen['start']):.0f}", flush=True)
                os._exit(0)  # a measuring tool: nothing to clean up
            yield None

    # The figure goes to stdout for the benchmark to read, not into the log.
    Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
