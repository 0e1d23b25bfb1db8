"""The expense stage: PSA issues + their custom values -> approved expenses -> the ERP.

Reads, co-partitioned by the issue's canonical id: canonical.psa_issue,
canonical.psa_custom_value, postings.results (its own postings' answers) and
postings.control (an operator's retry of a refused posting). Joins an
issue and its values in a table keyed by the issue (tables/expenses.py), decides what the
ERP should hold (streams/expenses/model.py) and writes, per batch: postings on the ERP's
posting queue (kind "expense"), the canonical expense (approved ones, and what became of
one approved before), business exceptions keyed by the expense; records first, flushed,
then the state, whose changelog is flushed before the offsets are committed.

A timer decides again the expenses waiting for their project: when their wait is over (a
business exception) or when the projects' view moved (the project may have come in).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import Message

from connectors.ports import POST, REVERSE
from schemas import contracts
from schemas.conventions import posting_control_topic
from schemas.registry import Registry
from schemas.serde import Decoder, Encoder
from streams.agents.batching import StageRunner, bytes_topic
from streams.agents.fanout import attach
from streams.agents.owned import Owned, every
from streams.deals.records import Encoders
from streams.dlq import send_to_dlq
from streams.errors import BadEventError
from streams.expenses import sources
from streams.expenses.model import (
    Effect,
    ExpenseState,
    Post,
    Project,
    Publish,
    Raise,
    Resolve,
    Reverse,
    decide,
    facts,
    on_result,
    retry,
)
from streams.metrics import metrics
from streams.output import Output
from streams.postings import PostingQueue, posting_record, retry_for
from streams.settings import Settings
from streams.topology import Topology
from tables.expenses import ExpenseTable
from tables.views import View, ViewReader

log = logging.getLogger(__name__)
STAGE = "expense"


class ExpenseStage:
    def __init__(
        self,
        settings: Settings,
        topology: Topology,
        output: Output,
        registry: Registry,
        table: ExpenseTable,
        projects: View[Any],
        fields: View[Any],
        users: View[Any] | None = None,
        reader: ViewReader | None = None,
        owns: Callable[[int], bool] = lambda _p: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.output = output
        self.registry = registry
        self.table = table
        self.projects = projects
        self.fields = fields
        self.users = users
        self.reader = reader
        self.owns = owns
        self.clock = clock
        self.decoder = Decoder(registry.schema_by_id)
        self.encoders = Encoders(registry.register)
        self.queue = PostingQueue(output, registry, settings.topic_namespace)
        self.issue_topic = topology.canonical(sources.ISSUE)
        self.value_topic = topology.canonical(sources.VALUE)
        self.results_topic = self.queue.results_topic
        self.control_topic = posting_control_topic(settings.topic_namespace)
        self.topics = {self.issue_topic, self.value_topic, self.results_topic, self.control_topic}
        self.expense_encoder: Encoder | None = None
        self.lock = asyncio.Lock()
        self.prepared = asyncio.Event()
        self._preparing: asyncio.Task[None] | None = None
        # Expenses waiting for their project (key -> partition): in memory, rebuilt from the
        # table whenever the assignment moves.
        self.waiting: dict[str, int] = {}
        self._assignment: frozenset[int] | None = None
        self._versions: tuple[int, int] = (-1, -1)
        self._field_ids: tuple[int, dict[str, str]] = (-1, {})

    async def prepare(self) -> None:
        """Once, however many runners the stage joined (its inputs, and the posting
        results, may be read by different runners)."""
        if self._preparing is None:
            self._preparing = asyncio.ensure_future(self._prepare())
        await asyncio.shield(self._preparing)

    async def _prepare(self) -> None:
        if self.reader is not None:
            self.reader.start()
        await self.queue.prepare()
        await asyncio.to_thread(self.encoders.register, self.topology.exceptions, "exception")
        topic = self.topology.canonical(sources.EXPENSE)
        self.expense_encoder = Encoder(
            self.registry.register, f"{topic}-value", contracts.schema_str(sources.EXPENSE)
        )
        await asyncio.to_thread(lambda: self.expense_encoder.schema_id)  # type: ignore[union-attr]
        waited = 0.0
        views = [self.projects, self.fields] + ([self.users] if self.users else [])
        for view in views:
            while not await view.wait_ready(timeout=30):
                waited += 30
                log.warning("expense stage: view %s not caught up after %.0fs", view.topic, waited)
        self.prepared.set()

    def field_ids(self) -> dict[str, str]:
        version, ids = self._field_ids
        if version != self.fields.version:
            ids = sources.field_ids(self.fields)
            self._field_ids = (self.fields.version, ids)
        return ids

    # -- batches ------------------------------------------------------------------------

    async def process(self, messages: Sequence[Message]) -> None:
        m = metrics()
        seen: Counter[str] = Counter()
        async with self.lock:
            now = self.clock()
            work: dict[str, ExpenseState] = {}
            touched: set[str] = set()
            for msg in messages:
                seen[msg.topic] += 1
                try:
                    if msg.topic == self.results_topic:
                        self._result(work, msg, now)
                    elif msg.topic == self.control_topic:
                        self._retry(work, msg, now)
                    else:
                        key = self._source(work, msg)
                        if key is not None:
                            touched.add(key)
                except Exception as exc:  # noqa: BLE001 - poison must never stop the line
                    log.warning(
                        "expense: %s/%s@%s to DLQ: %s", msg.topic, msg.partition, msg.offset, exc
                    )
                    send_to_dlq(self.output, self.topology.dlq(STAGE), STAGE, msg, exc)
                    m.dlq.labels(STAGE, type(exc).__name__).inc()
            for key in sorted(touched):
                self._decide(work, work[key], now)
            await self._finish(work)
        for topic, n in seen.items():
            m.events_in.labels(STAGE, topic).inc(n)
        m.batch_size.labels(STAGE).observe(len(messages))

    async def _finish(self, work: dict[str, ExpenseState]) -> None:
        await self.output.flush()
        self.table.write(work.values())

    def _state(self, work: dict[str, ExpenseState], key: str, partition: int) -> ExpenseState:
        return work.get(key) or self.table.get(key) or ExpenseState(key, partition)

    def _decode(self, msg: Message) -> dict[str, Any] | None:
        return None if msg.value is None else self.decoder.decode(msg.value)

    def _source(self, work: dict[str, ExpenseState], msg: Message) -> str | None:
        if msg.key is None:
            raise BadEventError("PSA issue or custom value without a key; keys are canonical ids")
        record = self._decode(msg)
        if msg.topic == self.issue_topic:
            key = msg.key.decode()
            state = self._state(work, key, msg.partition)
            version = sources.version_of(record) if record else state.version + 1
            if record is not None and version <= state.version:
                return None  # replayed or stale
            issue = None if record is None else sources.issue_of(record)
            work[key] = replace(state, issue=issue, version=version, partition=msg.partition)
            return key
        if record is None:
            return None  # a tombstone names only the value; its delete event came before
        found = sources.value_of(record)
        if found is None:
            return None  # a value of something other than an issue
        key, field_id, value = found
        state = self._state(work, key, msg.partition)
        held = state.values.get(field_id)
        if held is not None and value.version <= held.version:
            return None
        if record.get("data") is None:
            values = {k: v for k, v in state.values.items() if k != field_id}
        else:
            values = {**state.values, field_id: value}
        work[key] = replace(state, values=values, partition=msg.partition)
        return key

    def _project(self, state: ExpenseState) -> Project | None:
        if state.issue is None:
            return None
        return sources.find_project(self.projects, state.issue.psa_project_id)

    def _decide(self, work: dict[str, ExpenseState], state: ExpenseState, now: float) -> None:
        f = facts(state, self.field_ids())
        project = self._project(state)
        new, effects = decide(state, f, project, now, self.settings.expense_wait)
        self._apply(new, f, project, effects, now)
        if new != state or new.key in work:
            work[new.key] = new
        if new.waiting_since is not None:
            self.waiting[new.key] = new.partition
        else:
            self.waiting.pop(new.key, None)

    def _result(self, work: dict[str, ExpenseState], msg: Message, now: float) -> None:
        record = self._decode(msg)
        if record is None or record.get("kind") != sources.KIND:
            return
        key = str(record["key"])
        state = work.get(key) or self.table.get(key)
        if state is None:
            metrics().dropped.labels(STAGE, "posting_result", "unknown_expense").inc()
            return
        new, effects = on_result(
            state,
            int(record.get("revision") or 0),
            record.get("status") == "done",
            record.get("reason"),
            record.get("error"),
            record.get("erp_id"),
            now,
        )
        if new != state or effects:
            self._apply(new, None, self._project(new), effects, now)
            work[key] = new

    def _retry(self, work: dict[str, ExpenseState], msg: Message, now: float) -> None:
        found = retry_for(sources.STEP, msg.key, msg.value)
        if found is None:
            return  # another flow's retry (time entries)
        key, request = found
        state = work.get(key) or self.table.get(key)
        new, effects = (None, []) if state is None else retry(state, request.attempt)
        if new is None or not effects:
            log.info("expense %s: retry of attempt %s: nothing to post", key, request.attempt)
            metrics().dropped.labels(STAGE, "retry", "nothing_to_retry").inc()
            return
        log.info("expense %s: retried by %s", key, request.requested_by or "?")
        self._apply(new, None, self._project(new), effects, now)
        work[key] = new

    # -- effects ------------------------------------------------------------------------

    def _apply(
        self,
        state: ExpenseState,
        f: Any,
        project: Project | None,
        effects: list[Effect],
        now: float,
    ) -> None:
        m = metrics()
        flow = sources.flow_of(state, project)
        changed = _at(state.issue.modified_at) if state.issue and state.issue.modified_at else None
        for effect in effects:
            if isinstance(effect, Post | Reverse):
                action = POST if isinstance(effect, Post) else REVERSE
                revision = effect.spec.revision if isinstance(effect, Post) else effect.revision
                spec = effect.spec if isinstance(effect, Post) else None
                code = spec.project_code if spec else (project.code if project else None)
                self.queue.send(
                    posting_record(
                        sources.KIND,
                        state.expense_id,
                        action,
                        revision,
                        spec,
                        correlation_id=flow,
                        project_code=code,
                        psa_id=state.psa_id,
                        source_changed_at=changed,
                        issued_at=_at(now),
                    )
                )
                m.expenses.labels("posted" if action == POST else "reversed").inc()
            elif isinstance(effect, Raise | Resolve):
                resolved = isinstance(effect, Resolve)
                record = sources.exception_record(
                    state, project, effect.problem, effect.number, now, resolved
                )
                enc = self.encoders.encoder(self.topology.exceptions, "exception")
                self.output.send(
                    self.topology.exceptions, state.expense_id.encode(), enc.encode(record)
                )
                m.expenses.labels("resolved" if resolved else "exception").inc()
                if not resolved:
                    m.business_exceptions.labels(effect.problem.reason, sources.STEP).inc()
            elif isinstance(effect, Publish):
                record = sources.expense_record(
                    state,
                    f if effect.approval_state != "deleted" else None,
                    project,
                    effect.approval_state,
                    now,
                    self.users,
                )
                assert self.expense_encoder is not None, "prepare() first"
                self.output.send(
                    self.topology.canonical(sources.EXPENSE),
                    state.expense_id.encode(),
                    self.expense_encoder.encode(record),
                )
                m.events_out.labels(STAGE, sources.EXPENSE).inc()
                m.expenses.labels(
                    "published" if effect.approval_state == "approved" else "withdrawn"
                ).inc()

    # -- the timer ------------------------------------------------------------------------

    async def tick(self, assignment: frozenset[int]) -> None:
        """Decide again on expenses waiting for their project whose wait is over, or all of
        them when the projects' view (or the PSA's field definitions) moved."""
        if not self.prepared.is_set():
            return
        async with self.lock:
            now = self.clock()
            if assignment != self._assignment:
                self._rescan(assignment)
            versions = (self.projects.version, self.fields.version)
            moved = versions != self._versions
            fields_moved = versions[1] != self._versions[1]
            self._versions = versions
            work: dict[str, ExpenseState] = {}
            wait = self.settings.expense_wait
            if fields_moved:
                # The PSA's field definitions came in (or changed) after issues and values
                # that need them: every expense of this worker is decided again (a no-op for
                # those already decided on the same facts).
                for held in list(self.table.states()):
                    if held.partition in assignment:
                        self._decide(work, held, now)
            for key, partition in sorted(self.waiting.items()):
                if not self.owns(partition):
                    self.waiting.pop(key, None)
                    continue
                state = work.get(key) or self.table.get(key)
                if state is None or state.waiting_since is None:
                    self.waiting.pop(key, None)
                    continue
                overdue = state.problem is None and now - state.waiting_since >= wait
                if moved or overdue:
                    self._decide(work, state, now)
            if work:
                await self._finish(work)
            metrics().expenses_waiting.set(len(self.waiting))

    def _rescan(self, assignment: frozenset[int]) -> None:
        self._assignment = assignment
        self.waiting = {
            s.key: s.partition
            for s in self.table.states()
            if s.waiting_since is not None and s.partition in assignment
        }


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def register(
    app: faust.App,
    runners: dict[str, StageRunner],
    settings: Settings,
    topology: Topology,
    output: Output,
    registry: Registry,
    table: ExpenseTable,
) -> ExpenseStage:
    decoder = Decoder(registry.schema_by_id)
    projects = sources.project_view(settings, decoder.decode)
    fields = sources.field_view(settings)
    users = sources.user_view(settings)
    reader = ViewReader(settings, [projects, fields, users])

    owned = Owned()
    stage = ExpenseStage(
        settings,
        topology,
        output,
        registry,
        table,
        projects,
        fields,
        users,
        reader,
        owns=owned,
    )
    # Its PSA inputs join the runner of the sink (which reads every canonical topic), the
    # posting results that of any other stage reading them (the time entries'): two
    # subscriptions, so the two runners stay apart and neither waits for the other.
    inputs = bytes_topic(app, stage.issue_topic, stage.value_topic)
    attach(app, runners, inputs, STAGE, stage, settings)
    answers = bytes_topic(app, stage.results_topic, stage.control_topic)
    attach(app, runners, answers, f"{STAGE}-results", stage, settings)

    every(app, "decide_waiting_expenses", 2.0, lambda: stage.issue_topic, owned, stage.tick)

    reader.stop_on_shutdown(app)
    return stage
