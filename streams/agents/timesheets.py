"""Approved time to the ERP: PSA time entries -> canonical time_entry -> postings.

Two stages:
- intake: the PSA's raw `time_entries` and `custom_values` rows, re-keyed by the time
  entry's canonical id onto the entry's partition of `time_entries.inputs` (Debezium
  partitions each table by its own key; the join needs an entry and its values together);
- time entry: joins them in the `time-entries` table (streams/timesheets/model.py decides),
  enriches approved entries from views (streams/timesheets/sources.py), puts postings on the
  ERP posting queue (streams/postings.py), publishes canonical `time_entry` events, and
  raises or resolves business exceptions from the postings' results and from references
  that do not arrive in time (PSSYNC_TIME_ENTRY_WAIT), and posts a refused entry again on
  an operator's retry (`postings.control`, `pssync exceptions retry`).

Per batch: records first, flushed, then the table, whose changelog is flushed before the
offsets are committed (as the deal stage does). A crash in between re-sends the same
postings (same ids); the ERP adapter finds their lines by key, so nothing posts twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import Message

from connectors.ports import POST, TimesheetLineSpec, from_json
from schemas import contracts, saga
from schemas.conventions import (
    canonical_topic,
    dlq_topic,
    exceptions_topic,
    partition_for,
    posting_control_topic,
    time_entry_inputs_topic,
    value_subject,
)
from schemas.registry import Registry
from schemas.serde import Decoder, Encoder, encode
from streams.agents.batching import StageRunner, bytes_topic
from streams.agents.fanout import attach
from streams.changes import parse
from streams.dlq import send_to_dlq
from streams.errors import BadEventError
from streams.ids import name_id
from streams.mappings.envelope import correlation_id as root_correlation
from streams.metrics import metrics
from streams.output import Output
from streams.postings import PostingQueue, posting_record, retry_for
from streams.settings import Settings
from streams.timesheets import sources
from streams.timesheets.model import (
    Effect,
    Issue,
    Problem,
    Raise,
    Resolve,
    TimeEntry,
    decide,
    on_result,
    retry,
)
from streams.timesheets.sources import Lookups
from tables.timesheets import TimeEntryTable, time_entry_table
from tables.views import ViewReader

log = logging.getLogger(__name__)
STAGE = "time_entry"
KIND = "time_entry"
_NS = uuid.UUID("5d0f3a52-6c1e-4b7a-9f57-3f1c2b8e9a10")
# Seconds between checks of entries waiting for a project or person.
TICK = 2.0
# Seconds the stage waits for its views to catch up before it starts.
VIEW_WAIT = 30.0


def _at(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


class IntakeStage:
    """Raw PSA rows -> inputs keyed and partitioned by their time entry."""

    def __init__(self, settings: Settings, output: Output) -> None:
        self.topics = sources.raw_topics(settings)
        self.inputs = time_entry_inputs_topic(settings.topic_namespace)
        self.partitions = settings.partitions
        self.output = output
        self.dlq_topic = dlq_topic(STAGE, settings.topic_namespace)

    async def prepare(self) -> None:
        return None

    async def process(self, messages: Sequence[Message]) -> None:
        for msg in messages:
            try:
                change = parse(msg.key, msg.value, msg.topic)
                taken = None if change is None else sources.intake(change, self.topics, msg.topic)
            except Exception as exc:  # noqa: BLE001 - poison must never stop the line
                send_to_dlq(self.output, self.dlq_topic, STAGE, msg, exc)
                metrics().dlq.labels(STAGE, type(exc).__name__).inc()
                continue
            if taken is None:
                continue
            key, record = taken
            raw = key.encode()
            self.output.send(
                self.inputs,
                raw,
                json.dumps(record, separators=(",", ":")).encode(),
                partition=partition_for(raw, self.partitions),
            )
        await self.output.flush()
        metrics().events_in.labels("time_entry_intake", "raw").inc(len(messages))


class TimeEntryStage:
    def __init__(
        self,
        settings: Settings,
        output: Output,
        registry: Registry,
        table: TimeEntryTable,
        views: Lookups,
        reader: ViewReader | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.output = output
        self.registry = registry
        self.table = table
        self.views = views
        self.reader = reader
        self.clock = clock
        self.wait = settings.time_entry_wait
        ns = settings.topic_namespace
        self.inputs = time_entry_inputs_topic(ns)
        self.queue = PostingQueue(output, registry, ns)
        self.results_topic = self.queue.results_topic
        self.control_topic = posting_control_topic(ns)
        self.exceptions_topic = exceptions_topic("business", ns)
        self.canonical_topic = canonical_topic("time_entry", ns)
        self.dlq_topic = dlq_topic(STAGE, ns)
        self.decoder = Decoder(registry.schema_by_id)
        self.canonical: Encoder | None = None
        self.exception_schema_id: int | None = None
        self.lock = asyncio.Lock()
        self.waiting: set[str] = set()
        self.unjudged: set[str] = set()
        self._scanned_at = 0.0
        self._versions: tuple[int, ...] = ()

    async def prepare(self) -> None:
        if self.reader is not None:
            self.reader.start()
        await self.queue.prepare()
        self.canonical = Encoder(
            self.registry.register,
            value_subject(self.canonical_topic),
            contracts.schema_str("time_entry"),
        )
        await asyncio.to_thread(lambda: self.canonical.schema_id if self.canonical else None)
        self.exception_schema_id = await asyncio.to_thread(
            self.registry.register,
            value_subject(self.exceptions_topic),
            saga.schema_str("exception"),
        )
        # Bounded: a view whose topic does not exist yet (no PSA or ERP capture) must not
        # hold up the worker; entries judged before it arrives are judged again when it does.
        deadline = time.monotonic() + VIEW_WAIT
        for view in self.views.all():
            left = max(0.0, deadline - time.monotonic())
            if not await view.wait_ready(timeout=left):
                log.warning("time entry stage: view %s not caught up; going on", view.topic)

    # -- batches ------------------------------------------------------------------------

    async def process(self, messages: Sequence[Message]) -> None:
        async with self.lock:
            now = self.clock()
            work: dict[str, TimeEntry] = {}
            for msg in messages:
                try:
                    if msg.topic == self.inputs:
                        self._input(work, msg, now)
                    elif msg.topic == self.control_topic:
                        self._retry(work, msg, now)
                    else:
                        self._result(work, msg, now)
                except Exception as exc:  # noqa: BLE001 - poison must never stop the line
                    log.warning("time entry: %s@%s to DLQ: %s", msg.topic, msg.offset, exc)
                    send_to_dlq(self.output, self.dlq_topic, STAGE, msg, exc)
                    metrics().dlq.labels(STAGE, type(exc).__name__).inc()
            await self._finish(work)
        metrics().events_in.labels(STAGE, "inputs").inc(len(messages))

    async def _finish(self, work: dict[str, TimeEntry]) -> None:
        await self.output.flush()
        self.table.write(work.values())

    def _state(self, work: dict[str, TimeEntry], key: str, partition: int) -> TimeEntry:
        return work.get(key) or self.table.get(key) or TimeEntry(key, partition)

    def _input(self, work: dict[str, TimeEntry], msg: Message, now: float) -> None:
        if msg.key is None or msg.value is None:
            raise BadEventError("time entry input without key or value")
        key = msg.key.decode()
        state = sources.take(self._state(work, key, msg.partition), json.loads(msg.value))
        work[key] = self._evaluate(state, now)

    def _result(self, work: dict[str, TimeEntry], msg: Message, now: float) -> None:
        if msg.key is None or msg.value is None:
            return
        record = self.decoder.decode(msg.value)
        if record.get("kind") != KIND:
            return  # another kind's result (expenses)
        key = str(record["key"])
        state = self._state(work, key, msg.partition)
        updated, effects = on_result(
            state,
            int(record["revision"]),
            str(record["status"]),
            record.get("erp_id"),
            record.get("reason"),
            record.get("error"),
            now,
        )
        if updated is state:
            return
        self._effects(updated, effects, now)
        if record["status"] == "done" and record["action"] == POST and updated.sent:
            self._canonical(updated, "approved", now, posted_at=record.get("completed_at"))
        work[key] = updated

    def _retry(self, work: dict[str, TimeEntry], msg: Message, now: float) -> None:
        found = retry_for(KIND, msg.key, msg.value)
        if found is None:
            return  # another flow's retry (expenses)
        key, request = found
        state = work.get(key) or self.table.get(key)
        updated, effects = (None, []) if state is None else retry(state, request.attempt)
        if updated is None or not effects:
            log.info("time entry %s: retry of attempt %s: nothing to post", key, request.attempt)
            metrics().dropped.labels(STAGE, "retry", "nothing_to_retry").inc()
            return
        log.info("time entry %s: retried by %s", key, request.requested_by or "?")
        metrics().time_entries.labels("retried").inc()
        self._effects(updated, effects, now)
        work[key] = updated

    def _evaluate(self, state: TimeEntry, now: float) -> TimeEntry:
        field = self.views.approved_field()
        unknown = field is None and bool(state.values)
        if unknown:
            self.unjudged.add(state.key)  # the "Approved" field is not known yet
        if unknown != state.field_unknown:
            state = dataclasses.replace(state, field_unknown=unknown)
        approved = state.approved(field)
        enriched = self.views.enrich(state) if approved else None
        updated, effects = decide(state, approved, enriched, now, self.wait)
        self._effects(updated, effects, now)
        m = metrics()
        for effect in effects:
            if isinstance(effect, Issue):
                decision = (
                    "reversed"
                    if effect.action != POST
                    else ("corrected" if effect.revision > 1 else "posted")
                )
                m.time_entries.labels(decision).inc()
                self._canonical(updated, "approved" if effect.action == POST else "withdrawn", now)
        if updated.waiting_since is not None:
            self.waiting.add(updated.key)
        else:
            self.waiting.discard(updated.key)
        return updated

    # -- effects ------------------------------------------------------------------------

    def _effects(self, state: TimeEntry, effects: list[Effect], now: float) -> None:
        entry = state.entry
        for effect in effects:
            if isinstance(effect, Issue):
                spec = None
                if effect.spec is not None:
                    spec = from_json(TimesheetLineSpec, effect.spec)
                self.queue.send(
                    posting_record(
                        KIND,
                        state.key,
                        effect.action,
                        effect.revision,
                        spec,
                        correlation_id=state.correlation_id,
                        project_code=state.project_code,
                        psa_id=entry.psa_id if entry else state.key.rsplit(":", 1)[-1],
                        source_changed_at=_at(entry.changed_at) if entry else None,
                        issued_at=_at(now),
                    )
                )
            elif isinstance(effect, Raise | Resolve):
                self._exception(state, effect.problem)
                if isinstance(effect, Raise):
                    metrics().business_exceptions.labels(effect.problem.reason, STAGE).inc()

    def _exception(self, state: TimeEntry, problem: Problem) -> None:
        assert self.exception_schema_id is not None, "prepare() first"
        project = self._project(state)
        record = {
            "exception_id": f"{state.key}:{problem.number}",
            "saga_key": state.key,
            "correlation_id": state.correlation_id or root_correlation(state.key),
            "reason": problem.reason,
            "reasons": [problem.reason],
            "message": problem.message,
            "step": STAGE,
            "attempt": problem.number,
            "status": problem.status,
            "opportunity_id": str((project or {}).get("opportunity_id") or ""),
            "crm_id": None,
            "customer_id": None,
            "line_item_ids": [],
            "milestone_ids": [],
            "deal_revision": state.revision,
            "raised_at": _at(problem.raised_at),
            "resolved_at": _at(problem.resolved_at),
        }
        value = encode(self.exception_schema_id, saga.parsed("exception"), record)
        self.output.send(self.exceptions_topic, state.key.encode(), value)

    def _project(self, state: TimeEntry) -> dict[str, Any] | None:
        if state.entry is None:
            return None
        return self.views.projects.get(f"psa:{state.entry.project}")

    def _canonical(
        self, state: TimeEntry, approval: str, now: float, posted_at: Any = None
    ) -> None:
        """The canonical time_entry event of the entry's current posting."""
        assert self.canonical is not None, "prepare() first"
        entry, sent = state.entry, state.sent
        spec = sent.spec if sent and sent.spec else {}
        project = self._project(state) or {}
        if entry is None:
            payload = None
        else:
            billing = project.get("billing_type")
            payload = {
                "time_entry_id": state.key,
                "psa_id": entry.psa_id,
                "project_id": state.project_code or f"psa:project:{entry.project}",
                "task_id": self.views.task_id(state) if spec.get("task") else None,
                "resource_id": spec.get("employee") or f"psa:user:{entry.user}",
                "work_date": datetime.fromisoformat(entry.spent_on).date(),
                "hours": float(entry.hours),
                "is_billable": billing in ("time_and_materials", "retainer"),
                "approval_state": approval,
                "approved_by": None,
                "approved_at": None,
                "description": entry.comments or None,
                "bill_rate": self.views.bill_rate(project.get("erp_project_id"), spec.get("task")),
                "cost_rate": self.views.cost_rate(spec.get("employee"), entry.spent_on),
                "currency": project.get("currency"),
                "erp_posting_ref": state.erp_id if posted_at is not None else None,
                "last_modified_at": _at(entry.changed_at),
                "project_code": state.project_code,
                "erp_project_id": project.get("erp_project_id"),
                "legal_entity_id": project.get("legal_entity_id"),
                "cost_center": project.get("cost_center"),
                "department": project.get("department"),
                "erp_employee": spec.get("employee"),
                "posting_revision": state.revision,
                "posted_at": posted_at,
            }
        stamp = "posted" if posted_at is not None else "issued"
        record = {
            "envelope": {
                "event_id": name_id(_NS, f"{state.key}|{state.revision}|{stamp}"),
                "correlation_id": state.correlation_id or root_correlation(state.key),
                "causation_id": None,
                "source": {
                    "system": "psa",
                    "connector": "pssync",
                    "entity": "public.time_entries",
                    "key": entry.psa_id if entry else state.key,
                    "position": str(state.entry_seq),
                    "sequence": max(state.entry_seq, 0),
                    "committed_at": _at(entry.changed_at if entry else now),
                },
                "op": "delete" if entry is None else "update",
                "entity_version": state.revision * 2 + (1 if posted_at is not None else 0),
                "emitted_at": _at(now),
            },
            "data": payload,
        }
        self.output.send(self.canonical_topic, state.key.encode(), self.canonical.encode(record))
        metrics().events_out.labels(STAGE, "time_entry").inc()

    # -- timer --------------------------------------------------------------------------

    async def tick(self) -> None:
        """Entries waiting for a reference: judged again when a view moved or a wait ran
        out; the owned table is scanned for them now and then (after a rebalance)."""
        now = self.clock()
        async with self.lock:
            if now - self._scanned_at > 30:
                self._scanned_at = now
                self.waiting.clear()
                for held in self.table.owned():
                    if held.waiting_since is not None:
                        self.waiting.add(held.key)
                    if held.field_unknown:
                        self.unjudged.add(held.key)
            versions = self.views.version()
            moved = versions != self._versions
            self._versions = versions
            work: dict[str, TimeEntry] = {}
            if moved and self.unjudged and self.views.approved_field() is not None:
                keys, self.unjudged = self.unjudged, set()
                for key in keys:
                    state = self.table.get(key)
                    if state is not None:
                        updated = self._evaluate(state, now)
                        if updated != state:
                            work[key] = updated
            for key in list(self.waiting):
                state = work.get(key) or self.table.get(key)
                if state is None or state.waiting_since is None:
                    self.waiting.discard(key)
                    continue
                open_problem = state.problem is not None and state.problem.status == "open"
                due = now - state.waiting_since >= self.wait and not open_problem
                if moved or due:
                    updated = self._evaluate(state, now)
                    if updated != state:
                        work[key] = updated
            if work:
                await self._finish(work)


def register(
    app: faust.App,
    runners: dict[str, StageRunner],
    settings: Settings,
    output: Output,
    registry: Registry,
) -> TimeEntryStage:
    """The intake and time entry stages, their table and views, and the waiting timer."""
    intake = IntakeStage(settings, output)
    raw = bytes_topic(app, intake.topics[sources.ENTRY], intake.topics[sources.VALUE])
    # psa custom_values is also a route of the normalize stage (issues' values): share it.
    attach(app, runners, raw, "time-entry-intake", intake, settings)

    decoder = Decoder(registry.schema_by_id)
    views = sources.lookups(settings, decoder.decode)
    reader = ViewReader(settings, views.all())
    table = time_entry_table(app, settings.partitions, output)
    stage = TimeEntryStage(settings, output, registry, table, views, reader)
    topic = bytes_topic(app, stage.inputs, stage.results_topic, stage.control_topic)
    # postings.results and .control are shared with other posting kinds' stages: fanout.
    attach(app, runners, topic, STAGE, stage, settings)

    @app.timer(interval=TICK)  # type: ignore[untyped-decorator]
    async def judge_waiting_time_entries() -> None:
        if app.rebalancing or app.in_recovery:
            return
        await stage.tick()

    reader.stop_on_shutdown(app)
    return stage
