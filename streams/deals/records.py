"""The records the deal stage writes and reads besides canonical events: saga commands
(schemas/avro/saga/command.avsc), business exceptions (exception.avsc), results
(result.avsc) and saga control requests (JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.saga import schema_str
from schemas.serde import Encoder
from streams.deals import amendments as amend
from streams.deals.assembly import Deal
from streams.deals.saga import TARGETS, Outcome, Park, Resolve, Saga
from streams.errors import BadEventError


def saga_schema(name: str) -> str:
    """The text of schemas/avro/saga/<name>.avsc (self-contained: no shared types)."""
    return schema_str(name)


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def command_record(
    saga: Saga, step: str, attempt: int, command_id: str, payload: str, now: float
) -> dict[str, Any]:
    return {
        "command_id": command_id,
        "correlation_id": saga.correlation_id,
        "saga_key": saga.key,
        "step": step,
        "target": TARGETS[step],
        "attempt": attempt,
        "payload": payload,
        "issued_at": _at(now),
    }


def exception_record(
    saga: Saga,
    deal: Deal,
    exc: Park | Resolve,
    raised_at: float,
    resolved_at: float | None = None,
) -> dict[str, Any]:
    """The BusinessException record of a raised (Park) or resolved (Resolve) exception."""
    opp = deal.opportunity
    return {
        "exception_id": f"{saga.correlation_id}:{exc.number}",
        "saga_key": saga.key,
        "correlation_id": saga.correlation_id,
        "reason": exc.reason,
        "reasons": list(exc.reasons or (exc.reason,)),
        "message": exc.message,
        "step": exc.step,
        "attempt": exc.attempt,
        "status": "open" if isinstance(exc, Park) else "resolved",
        "opportunity_id": deal.key,
        "crm_id": opp.crm_id if opp else None,
        "customer_id": opp.customer_id if opp else None,
        "line_item_ids": sorted(deal.lines),
        "milestone_ids": sorted(deal.milestones),
        "deal_revision": deal.revision,
        "raised_at": _at(raised_at),
        "resolved_at": None if resolved_at is None else _at(resolved_at),
    }


def change_order_exception(
    deal_key: str, correlation_id: str, effect: amend.Raise | amend.Clear, now: float
) -> dict[str, Any]:
    """The BusinessException record of a change order's exception (raised or cleared).

    Keyed by the change order while it waits for its deal (the fix is there, or in the deal's
    own exception); by the deal when the deal's applications refused the amendment, where
    `pssync exceptions retry` sends the retry.
    """
    order = effect.order
    on_deal = effect.reason == amend.REJECTED
    waited = effect.reason in (amend.UNKNOWN_PARENT, amend.NOT_PROVISIONED)
    raised = order.wait_until if waited and isinstance(effect, amend.Clear) else now
    message = (
        effect.message
        if isinstance(effect, amend.Raise)
        else f"change order {order.crm_id}: resolved ({effect.reason} no longer holds)"
    )
    return {
        "exception_id": f"{correlation_id}:{order.key or deal_key}:{effect.reason}",
        "saga_key": deal_key if on_deal else order.key,
        "correlation_id": correlation_id,
        "reason": effect.reason,
        "reasons": [effect.reason],
        "message": message,
        "step": effect.step if isinstance(effect, amend.Raise) else "change_order",
        "attempt": effect.attempt if isinstance(effect, amend.Raise) else 1,
        "status": "open" if isinstance(effect, amend.Raise) else "resolved",
        "opportunity_id": order.key or deal_key,
        "crm_id": order.crm_id,
        "customer_id": None,
        "line_item_ids": sorted(x.key for x in order.lines),
        "milestone_ids": sorted(m.key for m in order.milestones),
        "deal_revision": order.revision,
        "raised_at": _at(raised),
        "resolved_at": None if isinstance(effect, amend.Raise) else _at(now),
    }


def outcome_of(record: dict[str, Any]) -> Outcome:
    """A decoded SagaResult."""
    try:
        return Outcome(
            command_id=str(record["command_id"]),
            step=str(record["step"]),
            attempt=int(record.get("attempt", 1)),
            status=str(record["status"]),
            output=str(record.get("output") or "{}"),
            error=record.get("error"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BadEventError(f"saga result lacks {exc}: not a SagaResult record") from exc


class Encoders:
    """Encoders of the saga records, one per subject, registering on first use."""

    def __init__(self, register: Any) -> None:
        self._register = register
        self._encoders: dict[str, Encoder] = {}

    def encoder(self, topic: str, schema: str) -> Encoder:
        enc = self._encoders.get(topic)
        if enc is None:
            enc = self._encoders[topic] = Encoder(
                self._register, f"{topic}-value", saga_schema(schema)
            )
        return enc

    def register(self, topic: str, schema: str) -> int:
        """Register the subject now (blocking): call it off the event loop."""
        return self.encoder(topic, schema).schema_id


# -- control: `pssync exceptions retry` asks the deal stage to resume one saga ------------

RETRY = "retry"
# A closed-won change order, sent by its own deal to the deal it amends (keyed by that deal,
# so it reaches the partition holding the deal's state).
CHANGE_ORDER = "change_order"


@dataclass(frozen=True)
class Control:
    action: str
    step: str
    attempt: int
    requested_at: str
    requested_by: str = ""
    payload: str = ""  # JSON, for actions that carry data (a change order)

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> Control:
        try:
            raw = json.loads(data or b"")
            return cls(
                action=str(raw["action"]),
                step=str(raw["step"]),
                attempt=int(raw["attempt"]),
                requested_at=str(raw.get("requested_at", "")),
                requested_by=str(raw.get("requested_by", "")),
                payload=str(raw.get("payload", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BadEventError(
                f"saga control record is not JSON with action, step and attempt ({exc}); "
                "write control records with `pssync exceptions retry`"
            ) from exc
