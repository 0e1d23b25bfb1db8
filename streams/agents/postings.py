"""The ERP posting stage: `postings.erp` -> batched ERP writes -> `postings.results`.

Why a stage of its own rather than more steps of the command stage (commands.py): saga
commands are one request per deal, applied one after the other per deal; postings are
thousands of small writes of different objects that the ERP takes best as one `create` of
many rows. The two share what must be shared: the ERP's one `Throttle` (rate, concurrency,
retries, circuit), the port factory and the dead-letter handling; each keeps its own topic,
so a period-close backlog of postings never delays a deal's ERP step.

A fetched batch is cut into rounds in which each posting key appears once (a key's
postings stay in order), each round into ERP batches of up to PSSYNC_POSTING_BATCH_SIZE
postings of one kind; each ERP batch is one call of the kind's batch operation under the
throttle, costing the requests it makes. While they wait, nothing more is fetched
(backpressure: the backlog stays in Kafka). An ERP batch the ERP refuses as a whole is
applied again one posting at a time, so one bad posting is rejected alone.

- unavailable ERP (timeouts, 429, 5xx): retried with jittered backoff while the circuit
  holds new batches back, for PSSYNC_COMMAND_RETRY_FOR seconds, then the worker stops;
- refused (`PostingOutcome` rejected, or CommandRejectedError): a `rejected` result with a
  reason code; the producing stage turns it into a business exception;
- not a posting (undecodable, unknown kind, bad payload): `dlq.posting`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import Message

from connectors.applications import PortFactory
from connectors.ports import DONE, POST, REJECTED, REVERSE, Posting, PostingOutcome
from connectors.throttle import Throttle
from schemas import saga
from schemas.conventions import dlq_topic, value_subject
from schemas.registry import Registry
from schemas.serde import Decoder, encode
from streams.agents.batching import StageRunner, batch_stage, bytes_topic
from streams.dlq import send_to_dlq
from streams.errors import (
    ApplicationUnavailableError,
    BadCommandError,
    CommandRejectedError,
    DeliveryError,
    SerdeError,
)
from streams.metrics import metrics
from streams.output import Output
from streams.postings import KINDS, PostingKind, PostingQueue, payload_spec
from streams.settings import Settings

log = logging.getLogger(__name__)
STAGE = "posting"


@dataclass
class Item:
    message: Any
    record: dict[str, Any]
    kind: PostingKind
    posting: Posting


def rounds(items: Sequence[Item]) -> list[list[Item]]:
    """Items cut into rounds, each key at most once per round, a key's items in order."""
    out: list[list[Item]] = []
    seen: dict[tuple[str, str], int] = {}  # (kind, key) -> round of its last item
    for item in items:
        ident = (item.kind.name, item.posting.key)
        n = seen.get(ident, -1) + 1
        seen[ident] = n
        if n == len(out):
            out.append([])
        out[n].append(item)
    return out


def chunks(items: Sequence[Item], size: int) -> list[tuple[PostingKind, list[Item]]]:
    """ERP batches of one kind each, at most `size` postings, in order within a kind."""
    by_kind: dict[str, list[Item]] = {}
    for item in items:
        by_kind.setdefault(item.kind.name, []).append(item)
    return [
        (group[0].kind, group[i : i + size])
        for group in by_kind.values()
        for i in range(0, len(group), size)
    ]


class PostingStage:
    def __init__(
        self,
        port: PortFactory,
        throttle: Throttle,
        output: Output,
        registry: Registry,
        settings: Settings,
        kinds: Sequence[PostingKind] = KINDS,
    ) -> None:
        self.make_port = port
        self.port: Any = None
        self.throttle = throttle
        self.output = output
        self.registry = registry
        self.batch_size = settings.posting_batch_size
        self.kinds = {k.name: k for k in kinds}
        queue = PostingQueue(output, registry, settings.topic_namespace)
        self.topic = queue.topic
        self.results_topic = queue.results_topic
        self.dlq_topic = dlq_topic(STAGE, settings.topic_namespace)
        self.decoder = Decoder(registry.schema_by_id, json.loads(saga.schema_str(saga.POSTING)))
        self.result_schema_id: int | None = None

    async def prepare(self) -> None:
        self.result_schema_id = await asyncio.to_thread(
            self.registry.register,
            value_subject(self.results_topic),
            saga.schema_str(saga.POSTING_RESULT),
        )

    def _decode(self, msg: Any) -> Item:
        if msg.key is None:
            raise SerdeError("posting without a key; postings are keyed by the source's id")
        record = self.decoder.decode(msg.value)
        kind = self.kinds.get(record["kind"])
        if kind is None:
            raise BadCommandError(
                f"posting kind {record['kind']!r} is not declared (known: "
                f"{', '.join(self.kinds)}); this worker is older than its producer"
            )
        action = record["action"]
        if action not in (POST, REVERSE):
            raise BadCommandError(f"posting action {action!r} is neither {POST} nor {REVERSE}")
        try:
            spec = payload_spec(kind, record["payload"]) if action == POST else None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BadCommandError(
                f"payload of {record['posting_id']} is not a {kind.spec.__name__}: {exc}"
            ) from exc
        return Item(msg, record, kind, Posting(record["key"], action, spec))

    async def process(self, messages: Sequence[Message]) -> None:
        items: list[Item] = []
        for msg in messages:
            try:
                items.append(self._decode(msg))
            except Exception as exc:  # noqa: BLE001 - poison must never stop the line
                log.warning(
                    "posting: %s/%s@%s to DLQ: %s", msg.topic, msg.partition, msg.offset, exc
                )
                send_to_dlq(self.output, self.dlq_topic, STAGE, msg, exc)
                metrics().dlq.labels(STAGE, type(exc).__name__).inc()
        if items and self.port is None:
            self.port = self.make_port()
        for batch_round in rounds(items):
            try:
                async with asyncio.TaskGroup() as group:
                    for kind, chunk in chunks(batch_round, self.batch_size):
                        group.create_task(self._apply(kind, chunk))
            except ExceptionGroup as failed:
                raise failed.exceptions[0] from None
        await self.output.flush()
        metrics().events_in.labels(STAGE, "posting").inc(len(messages))

    async def _call(self, kind: PostingKind, items: list[Item]) -> list[PostingOutcome]:
        postings = [i.posting for i in items]
        outcomes = await self.throttle.call(
            lambda: kind.apply(self.port, postings),
            cost=kind.requests,
        )
        if len(outcomes) != len(items):
            raise CommandRejectedError(
                "ERP", f"{kind.name}: {len(outcomes)} outcomes for {len(items)} postings"
            )
        return outcomes

    async def _apply(self, kind: PostingKind, items: list[Item]) -> None:
        m = metrics()
        started = time.monotonic()
        try:
            outcomes = await self._call(kind, items)
        except (ApplicationUnavailableError, DeliveryError):
            raise  # unavailable past PSSYNC_COMMAND_RETRY_FOR: the worker stops
        except Exception as exc:  # noqa: BLE001 - refused as a whole: find the one to blame
            if len(items) > 1:
                for item in items:
                    await self._apply(kind, [item])
                return
            reason = "rejected" if isinstance(exc, CommandRejectedError) else "error"
            if reason == "error":
                log.error("posting %s failed: %r", items[0].record["posting_id"], exc)
            outcomes = [PostingOutcome(items[0].posting.key, REJECTED, None, reason, str(exc))]
        m.posting_apply.labels(kind.name).observe(time.monotonic() - started)
        m.posting_batches.labels(kind.name).observe(len(items))
        for item, outcome in zip(items, outcomes, strict=True):
            m.postings.labels(kind.name, item.posting.action, outcome.status).inc()
            self._send_result(item, outcome)

    def _send_result(self, item: Item, outcome: PostingOutcome) -> None:
        assert self.result_schema_id is not None, "prepare() first"
        record = item.record
        result = {
            "posting_id": record["posting_id"],
            "kind": record["kind"],
            "action": record["action"],
            "key": record["key"],
            "revision": record["revision"],
            "correlation_id": record.get("correlation_id"),
            "project_code": record.get("project_code"),
            "psa_id": record.get("psa_id"),
            "status": outcome.status if outcome.status in (DONE, REJECTED) else "unknown",
            "erp_id": outcome.erp_id,
            "reason": outcome.reason,
            "error": outcome.message,
            "source_changed_at": record.get("source_changed_at"),
            "completed_at": datetime.now(UTC),
        }
        value = encode(self.result_schema_id, saga.parsed(saga.POSTING_RESULT), result)
        self.output.send(self.results_topic, str(record["key"]).encode(), value)


def register(
    app: faust.App,
    runners: dict[str, StageRunner],
    settings: Settings,
    output: Output,
    registry: Registry,
    ports: dict[str, PortFactory],
    throttle: Throttle,
) -> PostingStage | None:
    """The ERP posting stage, sharing `throttle` (the ERP's) with the saga's ERP commands."""
    port = ports.get("erp")
    if port is None:
        log.warning("no ERP adapter: postings wait on their topic")
        return None
    stage = PostingStage(port, throttle, output, registry, settings)
    runner = batch_stage(
        app, runners, bytes_topic(app, stage.topic), "postings-erp", stage, settings
    )
    # A posting backlog waits in Kafka, never in the fetch loop the other stages share.
    runner.defer_when_full = True
    return stage
