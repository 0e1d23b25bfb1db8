"""Saga commands -> the target application's port -> saga results; one stage per application.

Each application (ERP, PSA, CRM) has its own stage on its own topic, `saga.commands.<target>`,
so one application's backlog or outage never holds up the others. Within a batch the
commands of one saga key are applied one after the other, in order; different keys run
concurrently, as far as the application's `Throttle` allows (PSSYNC_<TARGET>_CONCURRENCY,
PSSYNC_<TARGET>_RATE). Results (and their audit records) are acknowledged by Kafka before
the batch is.

- unavailable application (timeouts, 429, 5xx, connection errors): retried with capped,
  jittered backoff for PSSYNC_COMMAND_RETRY_FOR seconds, then the worker stops; nothing is
  dead-lettered or parked for it;
- refused on its merits (CommandRejectedError): a `rejected` result with the application's
  message; the saga parks as a business exception naming the step;
- not a command (undecodable bytes, no key, unknown step, payload not the step's spec):
  `dlq.command` with the original bytes; the line keeps running.

There is no dedupe table of command ids: a redelivered or re-issued command is applied again
and gives the same result, because every port operation looks its object up by an external
key first and creates it only when missing. A dedupe table would add a changelog to write
per batch, and would answer from memory even after someone deleted or changed the object in
the application, where applying again repairs or reports it; the saga, not this stage,
decides whether a result is new.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import Message

from connectors.applications import PortFactory
from connectors.ports import (
    CrmInvoiceStatus,
    CrmWriteBack,
    CustomerSpec,
    ErpAmendmentSpec,
    ProjectSpec,
    PsaAmendmentSpec,
    PsaProjectFinancials,
    PsaProjectSpec,
    from_json,
    to_json,
)
from connectors.throttle import Throttle
from schemas import saga
from schemas.conventions import value_subject
from schemas.registry import Registry
from schemas.serde import Decoder, encode
from streams.agents.batching import StageRunner, batch_stage, bytes_topic
from streams.audit import CommandAudit, command_audit_record
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
from streams.settings import Settings
from streams.topology import Topology

log = logging.getLogger(__name__)
STAGE = "command"


@dataclass(frozen=True)
class Step:
    """One saga step: the spec its payload carries and the port operation that applies it."""

    name: str
    spec: type[Any]
    apply: Callable[[Any, Any], Awaitable[object]]  # (port, spec) -> the port's answer or None


@dataclass(frozen=True)
class CommandTarget:
    """An application and the steps its command stage applies."""

    name: str
    steps: tuple[Step, ...]

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)


# Every application pssync sends saga commands to; a new step is one line here.
TARGETS: tuple[CommandTarget, ...] = (
    CommandTarget(
        "erp",
        (
            Step("erp_customer", CustomerSpec, lambda erp, spec: erp.ensure_customer(spec)),
            Step("erp_project", ProjectSpec, lambda erp, spec: erp.ensure_project(spec)),
            Step("erp_amendment", ErpAmendmentSpec, lambda erp, spec: erp.amend_project(spec)),
        ),
    ),
    CommandTarget(
        "psa",
        (
            Step("psa_project", PsaProjectSpec, lambda psa, spec: psa.ensure_project(spec)),
            # Invoicing and revenue of a project (streams/agents/invoices.py).
            Step(
                "psa_financials",
                PsaProjectFinancials,
                lambda psa, spec: psa.set_financials(spec),
            ),
            Step("psa_amendment", PsaAmendmentSpec, lambda psa, spec: psa.amend_project(spec)),
        ),
    ),
    CommandTarget(
        "crm",
        (
            Step("crm_writeback", CrmWriteBack, lambda crm, spec: crm.write_back(spec)),
            Step(
                "crm_invoice_status",
                CrmInvoiceStatus,
                lambda crm, spec: crm.write_invoice_status(spec),
            ),
            # A change order's status, written to the change order's own opportunity.
            Step("crm_change_order", CrmWriteBack, lambda crm, spec: crm.write_back(spec)),
        ),
    ),
)


@dataclass
class _Command:
    message: Any
    key: bytes
    record: dict[str, Any]
    step: Step
    spec: Any


class CommandStage:
    # A stop cancels a batch in progress: its commands are applied again after the restart,
    # which every port operation allows (see above), instead of a stop waiting out a backlog
    # at the application's rate.
    interruptible = True

    def __init__(
        self,
        target: CommandTarget,
        port: PortFactory,
        throttle: Throttle,
        topology: Topology,
        output: Output,
        registry: Registry,
    ) -> None:
        self.target = target
        self.make_port = port
        self.port: Any = None  # built on the first command (see connectors/applications.py)
        self.throttle = throttle
        self.output = output
        self.registry = registry
        self.results_topic = topology.results
        self.dlq_topic = topology.dlq(STAGE)
        self.audit = CommandAudit(output, registry, topology.audit(STAGE))
        self.decoder = Decoder(registry.schema_by_id, json.loads(saga.schema_str(saga.COMMAND)))
        self.result_schema_id: int | None = None

    async def prepare(self) -> None:
        self.result_schema_id = await asyncio.to_thread(
            self.registry.register, value_subject(self.results_topic), saga.schema_str(saga.RESULT)
        )
        await self.audit.prepare()

    def _decode(self, msg: Any) -> _Command:
        if msg.key is None:
            raise SerdeError("saga command without a key; commands are keyed by the saga key")
        record = self.decoder.decode(msg.value)
        record["correlation_id"] = str(record["correlation_id"])  # fastavro reads uuid.UUID
        step = self.target.step(record["step"])
        if step is None:
            known = ", ".join(s.name for s in self.target.steps)
            raise BadCommandError(
                f"step {record['step']!r} is not applied by the {self.target.name} command stage "
                f"(it applies {known}); the saga sent it to the wrong topic or is newer than "
                "this worker"
            )
        try:
            spec = from_json(step.spec, record["payload"])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BadCommandError(
                f"payload of {record['command_id']} is not a {step.spec.__name__}: {exc}"
            ) from exc
        return _Command(msg, msg.key, record, step, spec)

    def _dlq(self, msg: Any, exc: BaseException) -> None:
        log.warning("command: %s/%s@%s to DLQ: %s", msg.topic, msg.partition, msg.offset, exc)
        send_to_dlq(self.output, self.dlq_topic, STAGE, msg, exc)
        metrics().dlq.labels(STAGE, type(exc).__name__).inc()

    async def process(self, messages: Sequence[Message]) -> None:
        by_key: dict[bytes, list[_Command]] = {}
        for msg in messages:
            try:
                command = self._decode(msg)
            except Exception as exc:  # noqa: BLE001 - poison must never stop the line
                self._dlq(msg, exc)
                continue
            by_key.setdefault(command.key, []).append(command)
        if by_key and self.port is None:
            self.port = self.make_port()  # a ConfigError here stops the worker, nothing acked
        # One task per saga key; the throttle bounds how many reach the application at once.
        # A failure that must stop the worker cancels the others: nothing is acknowledged.
        try:
            async with asyncio.TaskGroup() as group:
                for commands in by_key.values():
                    group.create_task(self._apply_in_order(commands))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None  # the worker's one-line reason names it
        await self.output.flush()
        m = metrics()
        m.events_in.labels(STAGE, self.target.name).inc(len(messages))
        m.batch_size.labels(STAGE).observe(len(messages))

    async def _apply_in_order(self, commands: list[_Command]) -> None:
        for command in commands:
            await self._apply(command)

    async def _apply(self, command: _Command) -> None:
        m = metrics()
        target, step = self.target.name, command.step
        started = time.monotonic()
        error: str | None = None
        try:
            answer = await self.throttle.call(
                lambda: step.apply(self.port, command.spec),
                on_retry=m.command_retries.labels(target, step.name).inc,
            )
            status, output = "done", "{}" if answer is None else to_json(answer)
        except CommandRejectedError as exc:
            status, output, error = "rejected", "{}", str(exc)
        except (ApplicationUnavailableError, DeliveryError):
            raise  # unavailable past PSSYNC_COMMAND_RETRY_FOR: the worker stops
        except Exception as exc:  # noqa: BLE001 - an adapter fault must not stop every saga
            # Neither "busy" nor "refused": the adapter failed on this command. Parking the
            # saga (rejected, naming the step) shows it to a person and keeps the other deals
            # moving; `pssync exceptions retry` applies it again once fixed.
            log.error("command %s on %s failed: %r", command.record["command_id"], target, exc)
            status, output = "rejected", "{}"
            error = f"{target}: unexpected {type(exc).__name__} applying {step.name}: {exc}"
        elapsed = time.monotonic() - started
        m.command_apply.labels(target, step.name).observe(elapsed)
        # Specs that carry when their source changed (invoice write-backs) measure the whole
        # way: source commit -> applied in the target application.
        changed_at = getattr(command.spec, "changed_at", 0.0)
        if status == "done" and changed_at:
            m.writeback_latency.labels(target, step.name).observe(
                max(0.0, time.time() - changed_at)
            )
        m.commands.labels(target, step.name, status).inc()
        self._send_result(command, status, output, error, elapsed)

    def _send_result(
        self, command: _Command, status: str, output: str, error: str | None, elapsed: float
    ) -> None:
        assert self.result_schema_id is not None, "prepare() first"
        record, now = command.record, datetime.now(UTC)
        result = {
            "command_id": record["command_id"],
            "correlation_id": record["correlation_id"],
            "saga_key": record["saga_key"],
            "step": record["step"],
            "target": self.target.name,
            "attempt": record["attempt"],
            "status": status,
            "output": output,
            "error": error,
            "completed_at": now,
        }
        key = command.key
        value = encode(self.result_schema_id, saga.parsed(saga.RESULT), result)
        self.output.send(self.results_topic, key, value)
        audited = {**record, "target": self.target.name}
        self.audit.send(
            key,
            command_audit_record(audited, status, output, error, round(elapsed * 1000), now),
        )


def throttle_for(settings: Settings, target: str) -> Throttle:
    limits = settings.command_limits(target)
    m = metrics()
    waits, waited = m.rate_limit_waits.labels(target), m.rate_limit_wait_seconds.labels(target)

    def on_wait(seconds: float) -> None:
        waits.inc()
        waited.inc(seconds)

    circuit = m.circuit_open.labels(target)
    return Throttle(
        target,
        limits.concurrency,
        limits.rate,
        settings.command_retry_for,
        on_wait=on_wait,
        on_in_flight=m.commands_in_flight.labels(target).set,
        on_circuit=lambda is_open: circuit.set(1 if is_open else 0),
    )


def register(
    app: faust.App,
    runners: dict[str, StageRunner],
    settings: Settings,
    topology: Topology,
    output: Output,
    registry: Registry,
    ports: dict[str, PortFactory],
    throttles: dict[str, Throttle] | None = None,
) -> list[CommandStage]:
    """A command stage for every application in TARGETS that has a port factory in `ports`.

    `throttles`: an application's one Throttle when other stages write to it too (the ERP
    posting stage); made here otherwise."""
    stages = []
    shared = throttles or {}
    for target in TARGETS:
        port = ports.get(target.name)
        if port is None:
            log.warning("no %s adapter: its saga commands wait on their topic", target.name)
            continue
        throttle = shared.get(target.name) or throttle_for(settings, target.name)
        stage = CommandStage(target, port, throttle, topology, output, registry)
        topic = bytes_topic(app, topology.commands(target.name))
        batch_stage(app, runners, topic, f"commands-{target.name}", stage, settings)
        stages.append(stage)
    return stages
