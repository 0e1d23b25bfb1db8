"""Which topics pssync reads and writes, derived from settings and the naming conventions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from schemas import contracts
from schemas.conventions import (
    DLQ_STAGES,
    analytics_topic,
    audit_topic,
    canonical_topic,
    contract_topic,
    dlq_reruns_topic,
    dlq_topic,
    exceptions_topic,
    invoice_changes_topic,
    invoice_facts_topic,
    posting_control_topic,
    posting_results_topic,
    postings_topic,
    raw_topic,
    saga_commands_topic,
    saga_control_topic,
    saga_results_topic,
    time_entry_inputs_topic,
    value_subject,
)
from schemas.masking import load_policy
from streams.admin import TopicSpec
from streams.changes import Change
from streams.deals.saga import TARGETS
from streams.deals.sources import CHILDREN, OPPORTUNITY, VIEWS
from streams.mappings import crm, erp, psa
from streams.reference.model import SECTIONS
from streams.settings import COMMAND_TARGETS, Settings

# (canonical key, record), or None for a change the route does not carry on (counted as
# dropped, reason "not_routed"), e.g. custom values of objects no stage joins.
Mapper = Callable[[Change, str], tuple[str, dict[str, Any]] | None]


@dataclass(frozen=True)
class Route:
    """A raw topic and how its changes become canonical events of one entity.

    `partition_by` names the data field holding the parent's canonical id: the record is
    then produced to the partition of that id (schemas.conventions.partition_for), beside
    its parent's events, instead of the partition of its own key.
    """

    raw_topic: str
    entity: str
    mapper: Mapper
    partition_by: str | None = None


# Canonical entities no route maps: the quote-to-cash saga publishes them once it has learned
# them from the ERP and the PSA (streams/deals/canonical.py).
DERIVED = ("contract", "project", "task")
# Canonical entities the invoice stage assembles from the ERP's invoices (streams/invoices).
INVOICED = ("invoice", "billing_event", "revenue_schedule")
# ERP tables the invoice stage reads: invoice headers and lines, and project works (a view).
INVOICE_TABLES = ("account_invoice", "account_invoice_line")
WORK_TABLE = "project_work"
# ... and, for projects invoiced on timesheets, timesheet lines and works (views too).
TIMESHEET_LINE_TABLE = "timesheet_line"
TIMESHEET_WORK_TABLE = "timesheet_work"
# ... and, for works invoiced on progress, the progress invoiced per work (a view too).
INVOICED_PROGRESS_TABLE = "project_work_invoiced_progress"
# Canonical entities a stage publishes once it has joined their source records:
# the expense stage (streams/agents/expense.py), from PSA issues and their custom values.
JOINED = ("expense",)


@dataclass(frozen=True)
class Topology:
    routes: list[Route]
    namespace: str
    analytics_prefix: str = "analytics"

    def canonical(self, entity: str) -> str:
        return canonical_topic(entity, self.namespace)

    def output(self, name: str) -> str:
        """Where events of a contract go: canonical.<entity>, or reference.<set>."""
        return contract_topic(name, contracts.is_reference(name), self.namespace)

    def analytics(self, entity: str) -> str:
        """Topic of the entity's masked copy (see streams/analytics.py)."""
        return analytics_topic(entity, self.namespace, self.analytics_prefix)

    def subject(self, entity: str) -> str:
        return value_subject(self.output(entity))

    def dlq(self, stage: str) -> str:
        return dlq_topic(stage, self.namespace)

    def audit(self, stage: str) -> str:
        return audit_topic(stage, self.namespace)

    def commands(self, target: str) -> str:
        """Saga commands for one application (erp, psa, crm)."""
        return saga_commands_topic(target, self.namespace)

    @property
    def results(self) -> str:
        return saga_results_topic(self.namespace)

    @property
    def dlq_reruns(self) -> str:
        return dlq_reruns_topic(self.namespace)

    @property
    def saga_control(self) -> str:
        return saga_control_topic(self.namespace)

    @property
    def invoice_changes(self) -> str:
        return invoice_changes_topic(self.namespace)

    @property
    def invoice_facts(self) -> str:
        return invoice_facts_topic(self.namespace)

    @property
    def exceptions(self) -> str:
        return exceptions_topic("business", self.namespace)

    @property
    def entities(self) -> list[str]:
        """Entities the routes map from raw changes."""
        return sorted({r.entity for r in self.routes})

    @property
    def emitted(self) -> list[str]:
        """Every canonical entity pssync publishes: mapped, learned by the saga or joined."""
        return sorted({*self.entities, *DERIVED, *INVOICED, *JOINED})


def topology(settings: Settings) -> Topology:
    crm_raw = partial(raw_topic, settings.crm_topic_prefix, "sales")
    erp_raw = partial(raw_topic, settings.erp_topic_prefix, "public")
    psa_raw = partial(raw_topic, settings.psa_topic_prefix, "public")
    reference = erp.resolver(settings.reference_file)
    return Topology(
        routes=[
            Route(crm_raw("opportunity"), "opportunity", crm.map_opportunity),
            Route(crm_raw("account"), "customer", crm.map_account),
            Route(
                crm_raw("opportunity_line_item"),
                "opportunity_line_item",
                crm.map_line_item,
                partition_by="opportunity_id",
            ),
            Route(
                crm_raw("billing_milestone"),
                "billing_milestone",
                crm.map_billing_milestone,
                partition_by="opportunity_id",
            ),
            Route(erp_raw("company_company"), "legal_entity", reference.map_company),
            Route(erp_raw("currency_currency"), "currency", erp.map_currency),
            Route(erp_raw("account_tax"), "tax_code", reference.map_tax),
            Route(psa_raw("issues"), "psa_issue", psa.map_issue),
            Route(
                psa_raw("custom_values"),
                "psa_custom_value",
                psa.map_custom_value,
                partition_by="owner_id",
            ),
        ],
        namespace=settings.topic_namespace,
        analytics_prefix=settings.analytics_prefix,
    )


def analytics_entities(settings: Settings, topo: Topology) -> list[str]:
    """Entities this worker emits that the masking policy lists (none when analytics is off)."""
    if not settings.analytics_policy:
        return []
    policy = load_policy(settings.analytics_policy)
    return [e for e in topo.entities if e in policy.rules]


def reference_specs(settings: Settings) -> list[TopicSpec]:
    """The compacted topics of the reference sets pssync's reference file publishes."""
    return [
        TopicSpec(
            contract_topic(name, True, settings.topic_namespace),
            settings.partitions,
            settings.replication,
            {"cleanup.policy": "compact"},
        )
        for name in SECTIONS.values()
    ]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    t = topology(settings)
    p, r = settings.partitions, settings.replication
    # Raw topics are normally created by Connect; creating them first lets the worker start
    # before the connector and guarantees the partition count the dedupe table relies on.
    raw = [
        TopicSpec(route.raw_topic, p, r, {"cleanup.policy": "compact,delete"}) for route in t.routes
    ]
    canonical = [TopicSpec(t.output(e), p, r, {"cleanup.policy": "compact"}) for e in t.emitted]
    analytics = [
        TopicSpec(t.analytics(e), p, r, {"cleanup.policy": "compact"})
        for e in analytics_entities(settings, t)
    ]
    dlq = [
        TopicSpec(t.dlq(stage), 1, r, {"retention.ms": str(30 * 24 * 3600 * 1000)})
        for stage in DLQ_STAGES
    ]
    # Saga commands and results: a deal's records share its partition (keyed by saga key);
    # kept by time, the saga state holds what is still needed.
    month = {"retention.ms": str(30 * 24 * 3600 * 1000)}
    saga = [TopicSpec(t.commands(a), p, r, month) for a in COMMAND_TARGETS]
    saga.append(TopicSpec(t.results, p, r, month))
    # Every target write and applied command, kept like an audit log: by time, not compacted.
    year = {"retention.ms": str(365 * 24 * 3600 * 1000)}
    audit = [TopicSpec(t.audit(stage), p, r, year) for stage in ("sink", "command")]
    # One record per rerun dead letter, kept forever (compacted) so none is rerun twice.
    reruns = [TopicSpec(t.dlq_reruns, 1, r, {"cleanup.policy": "compact"})]
    specs = (
        raw
        + canonical
        + reference_specs(settings)
        + analytics
        + dlq
        + saga
        + audit
        + reruns
        + deal_topic_specs(settings, t)
        + invoice_topic_specs(settings, t)
        + posting_topic_specs(settings)
        + viewed_raw_topic_specs(settings)
    )
    unique: dict[str, TopicSpec] = {}
    for spec in specs:
        unique.setdefault(spec.name, spec)
    return list(unique.values())


def deal_topic_specs(settings: Settings, t: Topology) -> list[TopicSpec]:
    """What the deal stage reads and writes: its inputs (co-partitioned: one partition count),
    the compacted topics it views whole, saga commands, results, control and exceptions."""
    p, r = settings.partitions, settings.replication
    compact = {"cleanup.policy": "compact"}
    month = {"retention.ms": str(30 * 24 * 3600 * 1000)}
    inputs = [TopicSpec(t.canonical(e), p, r, compact) for e in (OPPORTUNITY, *CHILDREN)]
    views = [TopicSpec(v.topic(t.namespace), p, r, compact) for v in VIEWS.values()]
    commands = [TopicSpec(t.commands(x), p, r, month) for x in sorted(set(TARGETS.values()))]
    saga = [
        TopicSpec(t.results, p, r, month),
        TopicSpec(t.saga_control, p, r, month),
        TopicSpec(t.exceptions, p, r, compact),
    ]
    return inputs + views + commands + saga


def erp_raw(settings: Settings, table: str) -> str:
    return raw_topic(settings.erp_topic_prefix, "public", table)


def invoice_topic_specs(settings: Settings, t: Topology) -> list[TopicSpec]:
    """What the invoice stage reads and writes besides canonical topics: the ERP's raw
    invoice and project-work topics (as Connect would create them) and its two internal
    topics, keyed by invoice and by project."""
    p, r = settings.partitions, settings.replication
    raw = {"cleanup.policy": "compact,delete"}
    # Read whole as views: a row unchanged for a week must not expire from them.
    viewed = {"cleanup.policy": "compact"}
    month = {"retention.ms": str(30 * 24 * 3600 * 1000)}
    return [
        *(TopicSpec(erp_raw(settings, x), p, r, raw) for x in INVOICE_TABLES),
        *(
            TopicSpec(erp_raw(settings, x), p, r, viewed)
            for x in (
                WORK_TABLE,
                TIMESHEET_LINE_TABLE,
                TIMESHEET_WORK_TABLE,
                INVOICED_PROGRESS_TABLE,
            )
        ),
        TopicSpec(t.invoice_changes, p, r, month),
        TopicSpec(t.invoice_facts, p, r, month),
    ]


def posting_topic_specs(settings: Settings) -> list[TopicSpec]:
    """The ERP posting queue and its results, kept by time like the saga's commands."""
    p, r, ns = settings.partitions, settings.replication, settings.topic_namespace
    month = {"retention.ms": str(30 * 24 * 3600 * 1000)}
    return [
        TopicSpec(postings_topic("erp", ns), p, r, month),
        TopicSpec(posting_results_topic(ns), p, r, month),
        TopicSpec(posting_control_topic(ns), p, r, month),
        # Time entries: inputs re-keyed for the join, kept by time (the stage's table holds
        # the joined state), and the canonical events.
        TopicSpec(time_entry_inputs_topic(ns), p, r, month),
        # The PSA's raw time entries (Connect's topic): created first, so the intake's
        # subscription finds it when the worker starts before the connector's snapshot.
        TopicSpec(
            raw_topic(settings.psa_topic_prefix, "public", "time_entries"),
            p,
            r,
            {"cleanup.policy": "compact,delete"},
        ),
        TopicSpec(canonical_topic("time_entry", ns), p, r, {"cleanup.policy": "compact"}),
    ]


def viewed_raw_topic_specs(settings: Settings) -> list[TopicSpec]:
    """Raw topics that stages read whole as views (the PSA's custom field definitions and
    users, the ERP's parties, employees and their cost prices), created here so the views
    have topics, and become ready, before a connector's first snapshot: a view waiting for a
    topic holds its stage back."""
    p, r = settings.partitions, settings.replication
    compact = {"cleanup.policy": "compact"}
    psa, erp = settings.psa_topic_prefix, settings.erp_topic_prefix
    topics = [raw_topic(psa, "public", t) for t in ("custom_fields", "users")]
    topics += [
        raw_topic(erp, "public", t)
        for t in ("party_party", "company_employee", "company_employee_cost_price")
    ]
    return [TopicSpec(t, p, r, compact) for t in topics]
