"""What `pssync exceptions list | show | retry` do, and what they print.

The deals' exceptions are read from the compacted exceptions topic (the latest record per
deal). A retry is a control record on the topic its flow declares (streams/retries.py: the
saga control topic for a deal, the posting control topic for a time entry or an expense),
keyed by the exception's key so it reaches the worker that owns the object; it names the
exception's step and attempt, so a retry read again later (a replay) cannot resume a later
exception by accident.
"""

from __future__ import annotations

import argparse
import getpass
import json
from datetime import UTC, datetime
from typing import Any

from schemas.conventions import PARTITIONER
from schemas.registry import Registry
from schemas.serde import Decoder
from streams.errors import PssyncError
from streams.output import produce_sync
from streams.retries import route
from streams.settings import Settings
from streams.topology import topology
from tables.views import read_latest


def load(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every deal's latest exception record, by saga key."""
    decoder = Decoder(Registry(settings).schema_by_id)
    return read_latest(settings, topology(settings).exceptions, decoder.decode)


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else str(value or "")


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    return {k: _when(v) if isinstance(v, datetime) else v for k, v in record.items()}


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    records = [
        r
        for r in load(settings).values()
        if (args.all or r.get("status") == "open")
        and (not args.reason or r["reason"] == args.reason)
    ]
    records.sort(key=lambda r: r.get("raised_at") or datetime.min.replace(tzinfo=UTC))
    if args.json:
        print(json.dumps([_plain(r) for r in records], indent=2, default=str))
        return 0
    if not records:
        print("no open business exceptions" if not args.all else "no business exceptions")
        return 0
    print(f"{'deal':<34} {'status':<8} {'reason':<24} {'step':<13} {'raised at':<25} message")
    for r in records:
        print(
            f"{r['saga_key']:<34} {r['status']:<8} {r['reason']:<24} {r['step']:<13} "
            f"{_when(r['raised_at']):<25} {_short(r['message'])}"
        )
    print(f"{len(records)} exception(s); `pssync exceptions show <deal>` for one in full")
    return 0


def _find(settings: Settings, key: str) -> dict[str, Any]:
    record = load(settings).get(key)
    if record is None:
        raise PssyncError(
            f"{key} has no business exception; `pssync exceptions list --all` lists them "
            "(keys look like crm:opportunity:<CRM id>, psa:time_entry:<id>, psa:issue:<id>)"
        )
    return record


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    r = _find(settings, args.key)
    if args.json:
        print(json.dumps(_plain(r), indent=2, default=str))
        return 0
    # Deals are keyed by their opportunity; other objects (time entries, expenses, ...) by
    # their own canonical id, and have no CRM id, customer, line items nor milestones.
    deal = str(r["saga_key"]).startswith("crm:opportunity:")
    lines = [
        f"deal         {r['saga_key']} (CRM {r.get('crm_id') or '?'})"
        if deal
        else f"object       {r['saga_key']}",
        f"status       {r['status']}",
        f"reason       {r['reason']}"
        + (f" ({', '.join(r['reasons'])})" if r.get("reasons") else ""),
        f"step         {r['step']}, attempt {r['attempt']}",
        f"raised at    {_when(r['raised_at'])}",
        f"resolved at  {_when(r.get('resolved_at')) or '-'}",
        f"correlation  {r['correlation_id']}",
    ]
    if deal:
        lines += [
            f"customer     {r.get('customer_id') or '-'}",
            f"line items   {', '.join(r.get('line_item_ids') or []) or '-'}",
            f"milestones   {', '.join(r.get('milestone_ids') or []) or '-'}",
            f"revision     {r.get('deal_revision', 0)}",
        ]
    lines.append(f"what to fix  {r['message']}")
    if r["status"] == "open" and not deal:
        lines.append(
            "then         do what it says; the exception resolves once the object posts (fixed "
            f"outside the PSA: pssync exceptions retry {r['saga_key']} --execute)"
        )
    elif r["status"] == "open":
        lines.append(
            "then         fix it in the CRM (the deal resumes by itself), or after fixing it "
            f"elsewhere: pssync exceptions retry {r['saga_key']} --execute"
        )
    print("\n".join(lines))
    return 0


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    r = _find(settings, args.key)
    flow = route(str(r["step"]))
    if r["status"] != "open":
        raise PssyncError(
            f"the exception of {flow.noun} {args.key} ({r['reason']}) is {r['status']}, not "
            "open: nothing to retry"
        )
    at = datetime.now(UTC).isoformat(timespec="seconds")
    request = flow.request(r, at, getpass.getuser())
    print(
        f"retry {flow.noun} {args.key} from step {r['step']} "
        f"(attempt {r['attempt']} stopped: {r['reason']}): {flow.resumes}"
    )
    if not args.execute:
        print("dry run: nothing sent; add --execute to retry")
        return 0
    topic = flow.topic(settings.topic_namespace)
    # pssync's partitioner: the retry lands on the partition of the object's state.
    produce_sync(settings, [(topic, args.key.encode(), request)], {"partitioner": PARTITIONER})
    print(f"retry sent to {topic}; `pssync exceptions show {args.key}` shows the outcome")
    return 0
