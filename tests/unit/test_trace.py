"""The trace of one deal, assembled from decoded records (streams/deals/trace.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.deals.trace import assemble, render
from streams.deals.trace_read import saga_key_of

KEY = "crm:opportunity:006A1"
CID = "993587bf-b905-59bd-acc6-05ad440e7f42"
T0 = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def opportunity(version: int, stage: str, seconds: float, key: str = KEY) -> dict[str, Any]:
    return {
        "envelope": {
            "event_id": f"ev-{version}",
            "entity_version": version,
            "emitted_at": at(seconds + 0.1),
            "source": {"committed_at": at(seconds), "position": f"0/{version}"},
        },
        "data": {
            "opportunity_id": key,
            "crm_id": key.rsplit(":", 1)[1],
            "customer_id": "crm:account:001A",
            "stage": stage,
        },
    }


def command(
    step: str, target: str, seconds: float, attempt: int = 1, **payload: Any
) -> dict[str, Any]:
    suffix = f":{attempt}" if attempt > 1 else ""
    return {
        "command_id": f"{CID}:{step}{suffix}",
        "saga_key": KEY,
        "step": step,
        "target": target,
        "attempt": attempt,
        "payload": json.dumps(payload),
        "issued_at": at(seconds),
    }


def result(
    cmd: dict[str, Any], seconds: float, output: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    return {
        "command_id": cmd["command_id"],
        "saga_key": cmd["saga_key"],
        "step": cmd["step"],
        "target": cmd["target"],
        "attempt": cmd["attempt"],
        "status": kw.get("status", "done"),
        "output": json.dumps(output or {}),
        "error": kw.get("error"),
        "completed_at": at(seconds),
    }


CUSTOMER = command("erp_customer", "erp", 1.0)
PROJECT = command("erp_project", "erp", 2.0)
PSA = command("psa_project", "psa", 3.0)
WRITEBACK = command(
    "crm_writeback",
    "crm",
    8.0,
    opportunity_id="006A1",
    erp_customer_id="186",
    project_code="PRJ-00478",
    psa_project_url="http://psa/projects/prj-00478",
    sync_status="provisioned",
)
COMMANDS = [CUSTOMER, PROJECT, PSA, WRITEBACK]
RESULTS = [
    result(CUSTOMER, 1.5, {"id": 186, "code": "crm:account:001A"}),
    result(PROJECT, 2.5, {"id": 478, "number": "PRJ-00478", "task_ids": {"Kick-off": 9}}),
    result(
        PSA, 7.5, {"id": 135, "identifier": "prj-00478", "url": "http://psa/projects/prj-00478"}
    ),
    result(WRITEBACK, 8.2),
]
EVENTS = [opportunity(1, "negotiation", -5.0), opportunity(2, "closed_won", 0.0)]


def test_the_happy_path_reads_from_the_crm_event_to_the_write_back() -> None:
    trace = assemble(KEY, CID, EVENTS, COMMANDS, RESULTS)
    assert [(e.system, e.what, e.status) for e in trace.entries] == [
        ("crm", "opportunity negotiation", "captured"),
        ("crm", "opportunity closed won", "captured"),
        ("pssync", "erp customer -> erp", "issued"),
        ("erp", "erp customer", "done"),
        ("pssync", "erp project -> erp", "issued"),
        ("erp", "erp project", "done"),
        ("pssync", "psa project -> psa", "issued"),
        ("psa", "psa project", "done"),
        ("pssync", "crm writeback -> crm", "issued"),
        ("crm", "crm writeback", "done"),
    ]
    assert trace.closed_won_at == at(0.0)
    by = {(e.system, e.what): e.ids for e in trace.entries}
    assert by[("erp", "erp customer")] == {"party id": "186", "party code": "crm:account:001A"}
    assert by[("erp", "erp project")] == {"work id": "478", "project number": "PRJ-00478"}
    assert by[("psa", "psa project")]["url"] == "http://psa/projects/prj-00478"
    assert by[("pssync", "crm writeback -> crm")]["sync status"] == "provisioned"
    assert by[("crm", "opportunity closed won")]["event id"] == "ev-2"


def test_other_deals_echoes_and_redeliveries_add_nothing() -> None:
    other_key = "crm:opportunity:006B2"
    other_cmd = {**CUSTOMER, "saga_key": other_key, "command_id": "x:erp_customer"}
    # The write-back's echo: a newer CRM event of the deal in the same stage.
    events = [
        *EVENTS,
        opportunity(3, "closed_won", 9.0),
        opportunity(1, "closed_won", 0, other_key),
    ]
    trace = assemble(KEY, CID, events, [*COMMANDS, CUSTOMER, other_cmd], [*RESULTS, RESULTS[0]])
    assert trace.entries == assemble(KEY, CID, EVENTS, COMMANDS, RESULTS).entries


def test_an_unanswered_command_is_pending_and_last() -> None:
    trace = assemble(KEY, CID, EVENTS, COMMANDS[:3], RESULTS[:2])
    last = trace.entries[-1]
    assert (last.at, last.system, last.what, last.status) == (None, "psa", "psa project", "pending")
    assert "--:--:--.---" in render(trace)[-2]


def test_a_rejected_step_its_exception_the_retry_and_the_resolution() -> None:
    rejected = result(PSA, 4.0, status="rejected", error="no Redmine user nobody@x")
    retry = command("psa_project", "psa", 20.0, attempt=2)
    exception = {
        "saga_key": KEY,
        "reason": "rejected",
        "step": "psa_project",
        "attempt": 1,
        "message": "no Redmine user nobody@x: correct the project manager in the CRM",
        "status": "resolved",
        "raised_at": at(4.1),
        "resolved_at": at(19.0),
    }
    trace = assemble(
        KEY,
        CID,
        EVENTS,
        [CUSTOMER, PROJECT, PSA, retry],
        [*RESULTS[:2], rejected, result(retry, 21.0, {"id": 1})],
        exception,
    )
    rows = [(e.system, e.what, e.status) for e in trace.entries]
    assert rows[7:] == [
        ("psa", "psa project", "rejected"),
        ("pssync", "business exception", "open"),
        ("pssync", "business exception resolved", "resolved"),
        ("pssync", "psa project (attempt 2) -> psa", "issued"),
        ("psa", "psa project (attempt 2)", "done"),
    ]
    assert trace.entries[7].ids["error"] == "no Redmine user nobody@x"
    assert "correct the project manager" in trace.entries[8].ids["what to fix"]


def test_render_shows_seconds_since_closed_won_and_the_ids() -> None:
    lines = render(assemble(KEY, CID, EVENTS, COMMANDS, RESULTS))
    assert lines[0] == f"trace of {KEY} (correlation id {CID})"
    assert any("-5.00s" in ln and "opportunity negotiation" in ln for ln in lines)
    assert any("+7.50s" in ln and "psa project" in ln and "done" in ln for ln in lines)
    assert any(ln.strip() == "project number: PRJ-00478" for ln in lines)
    assert "nothing found" in render(assemble(KEY, CID, [], [], []))[1]


def test_a_deal_is_named_by_its_crm_id_or_its_saga_key() -> None:
    assert saga_key_of("006A1") == KEY
    assert saga_key_of(KEY) == KEY


@given(
    st.permutations(COMMANDS + COMMANDS[:2]),
    st.permutations(RESULTS + RESULTS[1:3]),
)
def test_the_trace_does_not_depend_on_read_order_or_redelivery(
    commands: list[dict[str, Any]], results: list[dict[str, Any]]
) -> None:
    # The reference: each command once, each answered once, everything in time order.
    expected = assemble(KEY, CID, EVENTS, COMMANDS, RESULTS).entries
    assert assemble(KEY, CID, EVENTS[::-1], commands, results).entries == expected


def test_pssync_trace_takes_a_deal_and_json() -> None:
    from streams.cli import build_parser

    args = build_parser().parse_args(["trace", "006A1", "--json"])
    assert (args.command, args.deal, args.json) == ("trace", "006A1", True)


def test_time_and_expenses_of_the_deal_are_summed_in_one_entry_each() -> None:
    project = command("erp_project", "erp", 2)
    done = result(project, 3, {"id": 7, "number": "PRJ-00042"})

    def entry(key: str, hours: float, posted: bool, cid: str = "", code: str = "") -> Any:
        data = {"time_entry_id": key, "hours": hours, "project_code": code or None}
        if posted:
            data |= {"erp_posting_ref": f"timesheet.line,{key}", "posted_at": at(100 + hours)}
        return {"envelope": {"correlation_id": cid}, "data": data}

    flows = {
        "time_entry": [
            entry("1", 2.0, True, cid=CID),
            entry("2", 3.5, True, code="PRJ-00042"),  # matched by the learned project code
            entry("3", 1.0, False, cid=CID),  # not posted yet
            entry("4", 8.0, True, cid="another deal"),
        ],
        "expense": [
            {
                "envelope": {"correlation_id": CID},
                "data": {
                    "amount": "120.50",
                    "currency": "EUR",
                    "erp_posting_ref": "account.invoice.line,9",
                    "last_modified_at": at(200),
                },
            }
        ],
    }
    trace = assemble(KEY, CID, [], [project], [done], None, flows)
    time = next(e for e in trace.entries if e.what == "approved time posted")
    assert time.ids["objects"] == "3" and time.ids["posted"] == "2"
    assert time.ids["total"] == "5.5 h" and time.status == "partial"
    assert time.at == at(103.5) and time.system == "erp"
    expense = next(e for e in trace.entries if e.what == "approved expenses posted")
    assert expense.ids["total"] == "120.5 EUR" and expense.status == "done"
    assert [e.what for e in trace.entries][-2:] == [
        "approved time posted",
        "approved expenses posted",
    ]
