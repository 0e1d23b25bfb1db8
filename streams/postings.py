"""The ERP posting queue's declared kinds and how a stage puts a posting on the queue.

Every ERP write of approved work (a time entry, an expense) is a *posting* on the ERP's own
posting topic (`postings.erp`), not a saga command, so a period-close backlog never delays a
deal. The posting stage (streams/agents/postings.py) applies postings in batches, one batch
operation of the ERP port per kind. A kind is declared once, here:

    PostingKind("expense", ExpenseSpec, lambda erp, batch: erp.post_expenses(batch))

- `name`: the `kind` field of the posting records;
- `spec`: the dataclass in connectors/ports.py that a POST posting's payload holds;
- `apply`: the port's batch operation: a list of `Posting` (key, action, spec) in, one
  `PostingOutcome` per posting out, same order. It must be idempotent per key (find the ERP
  record by the key first), so a redelivered batch posts nothing twice;
- `requests`: how many requests one call makes (taken from the ERP's rate per call).

Producers (the time entry stage, the expense stage) build records with `posting_record` and
send them with `PostingQueue.send`; results come back on `postings.results`. An operator's
retry of a refused posting (`PostingRetry`) reaches them on `postings.control`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from connectors.ports import (
    POST,
    REVERSE,
    ExpenseSpec,
    Posting,
    PostingOutcome,
    TimesheetLineSpec,
    from_json,
    to_json,
)
from schemas import saga
from schemas.conventions import posting_results_topic, postings_topic, value_subject
from schemas.registry import Registry
from schemas.serde import encode
from streams.errors import BadEventError
from streams.output import Output

BatchApply = Callable[[Any, list[Posting]], Awaitable[list[PostingOutcome]]]


@dataclass(frozen=True)
class PostingKind:
    """One kind of ERP posting: its name, its spec and the ERP port's batch operation."""

    name: str
    spec: type[Any]
    apply: BatchApply  # (erp port, postings) -> outcomes, same order
    # Requests one call of `apply` makes to the ERP: what it takes from the ERP's rate.
    requests: int = 4


# Every kind of posting the ERP posting stage applies; a new kind is one entry here.
KINDS: tuple[PostingKind, ...] = (
    PostingKind(
        "time_entry", TimesheetLineSpec, lambda erp, batch: erp.post_timesheet_lines(batch)
    ),
    PostingKind("expense", ExpenseSpec, lambda erp, batch: erp.post_expenses(batch)),
)


def kind(name: str) -> PostingKind | None:
    return next((k for k in KINDS if k.name == name), None)


def posting_id(kind_name: str, key: str, revision: int, action: str) -> str:
    return f"{kind_name}:{key}@{revision}:{action}"


def posting_record(
    kind_name: str,
    key: str,
    action: str,
    revision: int,
    spec: object | None,
    *,
    correlation_id: str | None = None,
    project_code: str | None = None,
    psa_id: str | None = None,
    source_changed_at: datetime | None = None,
    issued_at: datetime | None = None,
) -> dict[str, Any]:
    """A posting record (schemas/avro/saga/posting.avsc) for the queue."""
    if action not in (POST, REVERSE):
        raise ValueError(f"posting action {action!r} is neither {POST} nor {REVERSE}")
    if action == POST and spec is None:
        raise ValueError(f"a {POST} posting of {key} needs its spec")
    return {
        "posting_id": posting_id(kind_name, key, revision, action),
        "kind": kind_name,
        "action": action,
        "key": key,
        "revision": revision,
        "correlation_id": correlation_id,
        "project_code": project_code,
        "psa_id": psa_id,
        "payload": "{}" if spec is None else to_json(spec),
        "source_changed_at": source_changed_at,
        "issued_at": issued_at or datetime.now(UTC),
    }


class PostingQueue:
    """Sends posting records to the ERP's posting topic (register once with `prepare`)."""

    def __init__(self, output: Output, registry: Registry, namespace: str = "") -> None:
        self.output = output
        self.registry = registry
        self.topic = postings_topic("erp", namespace)
        self.results_topic = posting_results_topic(namespace)
        self.schema_id: int | None = None

    async def prepare(self) -> None:
        self.schema_id = await asyncio.to_thread(
            self.registry.register, value_subject(self.topic), saga.schema_str(saga.POSTING)
        )

    def send(self, record: dict[str, Any]) -> None:
        assert self.schema_id is not None, "prepare() first"
        value = encode(self.schema_id, saga.parsed(saga.POSTING), record)
        self.output.send(self.topic, str(record["key"]).encode(), value)


@dataclass(frozen=True)
class PostingRetry:
    """Post the object again from its current state: the operator fixed, outside pssync, what
    made the ERP refuse it. `flow` names the producing stage (the exception's step), `attempt`
    the exception it answers, so a retry read again later cannot re-post after another one."""

    flow: str
    attempt: int
    requested_at: str
    requested_by: str = ""

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> PostingRetry:
        try:
            raw = json.loads(data or b"")
            return cls(
                str(raw["flow"]),
                int(raw["attempt"]),
                str(raw.get("requested_at") or ""),
                str(raw.get("requested_by") or ""),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BadEventError(f"not a posting retry (flow, attempt): {exc}") from exc


def retry_for(flow: str, key: bytes | None, value: bytes | None) -> tuple[str, PostingRetry] | None:
    """The object key and retry of a `postings.control` record meant for `flow`; None for
    another flow's. Both posting stages read every retry on the topic."""
    if key is None:
        raise BadEventError("posting control record without a key; the key is the object's")
    request = PostingRetry.from_bytes(value)
    return (key.decode(), request) if request.flow == flow else None


def payload_spec(posting_kind: PostingKind, payload: str) -> Any:
    """The spec a POST posting's JSON payload holds."""
    return from_json(posting_kind.spec, json.loads(payload))
