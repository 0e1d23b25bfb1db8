"""Prometheus metrics. Created on first use, so importing pssync registers nothing."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    events_in: Counter
    events_out: Counter
    dropped: Counter
    dlq: Counter
    batch_size: Histogram
    e2e_latency: Histogram
    sink_apply: Histogram
    sink_rows: Counter
    sink_retries: Counter
    consumer_lag: Gauge
    closed_won_to_project: Histogram
    sagas_open: Gauge
    business_exceptions: Counter
    change_orders_applied: Counter
    baseline_changes: Counter
    deals_without_project: Gauge
    commands: Counter
    command_retries: Counter
    command_apply: Histogram
    commands_in_flight: Gauge
    rate_limit_waits: Counter
    rate_limit_wait_seconds: Counter
    writeback_latency: Histogram
    invoices_unresolved: Gauge
    postings: Counter
    posting_batches: Histogram
    posting_apply: Histogram
    circuit_open: Gauge
    time_entries: Counter
    expenses: Counter
    expenses_waiting: Gauge
    monitor_findings: Gauge


@cache
def metrics() -> Metrics:
    r = CollectorRegistry()
    return Metrics(
        registry=r,
        events_in=Counter(
            "pssync_events_in", "Events read, per stage and entity", ["stage", "entity"], registry=r
        ),
        events_out=Counter(
            "pssync_events_out",
            "Events written, per stage and entity",
            ["stage", "entity"],
            registry=r,
        ),
        dropped=Counter(
            "pssync_events_dropped",
            "Events dropped on purpose (duplicate, stale, no row), per stage, entity and reason",
            ["stage", "entity", "reason"],
            registry=r,
        ),
        dlq=Counter(
            "pssync_dlq",
            "Events sent to a dead-letter topic, per stage and error class",
            ["stage", "reason"],
            registry=r,
        ),
        batch_size=Histogram(
            "pssync_batch_size",
            "Events per processed batch",
            ["stage"],
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=r,
        ),
        e2e_latency=Histogram(
            "pssync_end_to_end_latency_seconds",
            "Source commit to sink applied",
            ["entity"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        ),
        sink_apply=Histogram(
            "pssync_sink_apply_seconds",
            "Time to apply one batch to a target",
            ["target", "entity"],
            registry=r,
        ),
        sink_rows=Counter(
            "pssync_sink_rows",
            "Rows offered to a target, by result (applied, skipped_stale)",
            ["target", "entity", "result"],
            registry=r,
        ),
        sink_retries=Counter(
            "pssync_sink_retries",
            "Batch retries after a transient target error",
            ["target", "entity"],
            registry=r,
        ),
        consumer_lag=Gauge(
            "pssync_consumer_lag",
            "Messages behind the end of each partition",
            ["topic", "partition"],
            registry=r,
        ),
        closed_won_to_project=Histogram(
            "pssync_closed_won_to_psa_project_seconds",
            "CRM commit of closed-won to the PSA project provisioned",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        ),
        sagas_open=Gauge(
            "pssync_sagas_open",
            "Sagas of this worker's deals not done, by step (validate: the deal's own checks) "
            "and status (running, parked)",
            ["step", "status"],
            registry=r,
        ),
        change_orders_applied=Counter(
            "pssync_change_orders_applied",
            "Amendments of a provisioned deal's baseline applied to the ERP, PSA and CRM, by "
            "kind (change_order, deal_edit) and whether the financial baseline moved",
            ["kind", "baseline_changed"],
            registry=r,
        ),
        baseline_changes=Counter(
            "pssync_baseline_changes",
            "Parts of a project's baseline moved by applied amendments (amount, list_price, "
            "hours, tasks, milestones)",
            ["part"],
            registry=r,
        ),
        business_exceptions=Counter(
            "pssync_business_exceptions",
            "Business exceptions raised, by reason and step",
            ["reason", "step"],
            registry=r,
        ),
        deals_without_project=Gauge(
            "pssync_closed_won_deals_without_project",
            "Closed-won deals of this worker without a PSA project yet, by whether they are "
            "past the deadline (PSSYNC_SAGA_DEADLINE)",
            ["late"],
            registry=r,
        ),
        commands=Counter(
            "pssync_commands",
            "Saga commands applied to an application, by target, step and result (done, rejected)",
            ["target", "step", "result"],
            registry=r,
        ),
        command_retries=Counter(
            "pssync_command_retries",
            "Requests retried while an application was unavailable, by target and step",
            ["target", "step"],
            registry=r,
        ),
        command_apply=Histogram(
            "pssync_command_apply_seconds",
            "One command from first request to answer (retries and rate-limit waits included)",
            ["target", "step"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        ),
        commands_in_flight=Gauge(
            "pssync_commands_in_flight",
            "Requests to an application under way",
            ["target"],
            registry=r,
        ),
        rate_limit_waits=Counter(
            "pssync_rate_limit_waits",
            "Requests that waited for the application's rate limit",
            ["target"],
            registry=r,
        ),
        rate_limit_wait_seconds=Counter(
            "pssync_rate_limit_wait_seconds",
            "Time requests spent waiting for the application's rate limit",
            ["target"],
            registry=r,
        ),
        writeback_latency=Histogram(
            "pssync_writeback_latency_seconds",
            "Source commit (e.g. an invoice posted in the ERP) to the write-back applied in the "
            "target application, by target and step (crm_invoice_status, psa_financials)",
            ["target", "step"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        ),
        invoices_unresolved=Gauge(
            "pssync_invoices_unresolved",
            "Posted or paid invoices of this worker with lines whose project is not known yet",
            registry=r,
        ),
        postings=Counter(
            "pssync_postings",
            "Postings of approved work applied to the ERP, by kind, action and result "
            "(done, rejected)",
            ["kind", "action", "status"],
            registry=r,
        ),
        posting_batches=Histogram(
            "pssync_posting_batch_size",
            "Postings per ERP batch operation",
            ["kind"],
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
            registry=r,
        ),
        posting_apply=Histogram(
            "pssync_posting_apply_seconds",
            "One ERP batch operation from first request to answer (retries and waits included)",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        ),
        circuit_open=Gauge(
            "pssync_circuit_open",
            "1 while the application is unavailable and new requests wait for it",
            ["target"],
            registry=r,
        ),
        time_entries=Counter(
            "pssync_time_entries",
            "Time entry decisions: posted, corrected, reversed, waiting, held (unapproved)",
            ["decision"],
            registry=r,
        ),
        expenses=Counter(
            "pssync_expenses",
            "Expense decisions: posted, reversed, published, withdrawn, exception, resolved",
            ["decision"],
            registry=r,
        ),
        expenses_waiting=Gauge(
            "pssync_expenses_waiting",
            "Approved expenses waiting for their project to become known",
            registry=r,
        ),
        monitor_findings=Gauge(
            "pssync_monitor_findings",
            "Business objects a monitor found (pssync monitor --serve), by monitor and whether "
            "they are past the monitor's SLO",
            ["monitor", "late"],
            registry=r,
        ),
    )
