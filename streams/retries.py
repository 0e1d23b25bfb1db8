"""How `pssync exceptions retry` reaches the stage that owns a parked object, per flow.

A business exception names its flow in `step`: the posting flows of time entries and
expenses by their name, a deal by the saga step it stopped at. Each flow declares the topic
its retries go to and the record it reads there; the CLI only looks the flow up. A retry is
keyed by the exception's key, so it lands on the partition of the object's state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.conventions import posting_control_topic, saga_control_topic
from streams.deals.records import RETRY, Control
from streams.postings import PostingRetry

# (exception record, requested at, requested by) -> the record the owning stage reads.
Request = Callable[[dict[str, Any], str, str], bytes]


@dataclass(frozen=True)
class RetryRoute:
    noun: str  # what the object is called to the operator
    topic: Callable[[str], str]  # topic namespace -> the topic the retry goes to
    request: Request
    resumes: str  # what the stage does with it, in words


def _saga(exc: dict[str, Any], at: str, by: str) -> bytes:
    return Control(RETRY, str(exc["step"]), int(exc["attempt"]), at, by).to_bytes()


def _posting(exc: dict[str, Any], at: str, by: str) -> bytes:
    return PostingRetry(str(exc["step"]), int(exc["attempt"]), at, by).to_bytes()


POSTING_RETRY = "posts it again to the ERP from its current state"
# The posting flows, by the step their exceptions name (streams/agents/timesheets.py,
# streams/expenses/sources.py); a new flow is one entry here.
ROUTES: dict[str, RetryRoute] = {
    "time_entry": RetryRoute("time entry", posting_control_topic, _posting, POSTING_RETRY),
    "expense": RetryRoute("expense", posting_control_topic, _posting, POSTING_RETRY),
}
# Any other step is one of the deal saga's.
SAGA = RetryRoute("deal", saga_control_topic, _saga, "resumes it from the step it stopped at")


def route(step: str) -> RetryRoute:
    return ROUTES.get(step, SAGA)
