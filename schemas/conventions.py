"""Names that form pssync's contract with its consumers. Code builds every name from here.

- Raw topics (written by Debezium / pollers): ``<system prefix>.<schema>.<table>``,
  e.g. ``crm.sales.opportunity``.
- Canonical topics: ``[<namespace>.]canonical.<entity>``, compacted; key = canonical id as
  UTF-8 string (the enterprise id where one exists, else ``<system>:<entity>:<source key>``);
  value = Confluent wire-format Avro; a delete is an event with ``data = null`` (consumers
  should also accept a tombstone, a null value, for the same key).
- Reference-data topics: ``[<namespace>.]reference.<set>``, compacted; key = the entry's
  code as UTF-8 string (``EUR``, ``EMEA``); value as for canonical topics.
- Analytics topics: ``[<namespace>.]<prefix>.<entity>`` (prefix ``analytics`` by default),
  compacted; the canonical events of an entity with the fields of the masking policy masked
  (schemas/masking.json); same key and Avro contract as the canonical topic.
- Dead-letter topics: ``[<namespace>.]dlq.<stage>``; key and value = the original bytes,
  context in headers.
- Saga topics: ``[<namespace>.]saga.commands.<target>`` (one per target application:
  ``erp``, ``psa``, ``crm``) and ``[<namespace>.]saga.results``; key = the saga key (the deal's
  canonical opportunity id) as UTF-8 string; value = wire-format Avro (schemas/avro/saga).
- Posting queue: ``[<namespace>.]postings.<target>`` (``erp``), one record per ERP write of
  approved work (time entries, expenses), and ``[<namespace>.]postings.results``; key = the
  source object's canonical id; value = wire-format Avro (schemas/avro/saga/posting*.avsc).
  ``[<namespace>.]postings.control``: same key; value = JSON asking the stage that owns the
  object to post it again (``pssync exceptions retry``).
- Time entry inputs: ``[<namespace>.]time_entries.inputs``; key = the canonical time entry
  id; value = JSON (a time entry row or one of its custom values, re-keyed from the raw PSA
  topics onto the entry's partition).
- Saga control: ``[<namespace>.]saga.control``; key = the saga key; value = JSON asking the
  deal stage to act on one saga (``pssync exceptions retry``).
- Business exceptions: ``[<namespace>.]exceptions.business``, compacted; key = the saga key;
  value = wire-format Avro (schemas/avro/saga/exception.avsc), the deal's latest exception,
  open or resolved.
- Audit topics: ``[<namespace>.]audit.<stage>`` (``sink``: target writes, ``command``: saga
  commands applied to an application); value = wire-format Avro (schemas/avro/audit).
- Reruns of dead letters: ``[<namespace>.]dlq.reruns``, compacted; key = the dead letter as
  ``<dlq topic>:<partition>:<offset>``, value = JSON saying when and where it was rerun.
- Co-partitioned children: a record whose route declares ``partition_by`` (line items and
  billing milestones of an opportunity) is keyed by its own canonical id but produced to the
  partition its parent's key maps to (`partition_for`), so a consumer of the parent's
  partition sees the parent and its children together, in order.
- Invoice stage topics: ``[<namespace>.]invoice.changes`` (the ERP's invoice header and line
  changes, keyed by the canonical invoice id ``erp:invoice:<id>``) and
  ``[<namespace>.]invoice.facts`` (what one invoice says about one project, keyed by the
  project code); value = JSON, internal to pssync (streams/agents/invoices.py).
- Subjects: TopicNameStrategy, ``<topic>-value``; keys are plain strings, not registered.
- Compatibility per subject: BACKWARD_TRANSITIVE for entities (consumers upgrade first and
  must read every record still on the topic); FULL for reference data (small sets read by
  everyone, in any order of upgrade).
- A version is the registry's: version N of a subject is the Nth distinct schema accepted
  for it, and the schema id in each payload's header names the exact writer schema. It is
  unrelated to the envelope's ``entity_version``, which orders changes of one record.
"""

from __future__ import annotations

import zlib

CANONICAL = "canonical"
REFERENCE = "reference"
ENTITY_COMPATIBILITY = "BACKWARD_TRANSITIVE"
REFERENCE_COMPATIBILITY = "FULL"
# Stages with a dead-letter topic each.
DLQ_STAGES = (
    "normalize",
    "sink",
    "command",
    "deal",
    "posting",
    "time_entry",
    "invoice",
    "expense",
)
LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)


def _ns(namespace: str, name: str) -> str:
    return f"{namespace}.{name}" if namespace else name


def raw_topic(prefix: str, schema: str, table: str) -> str:
    return f"{prefix}.{schema}.{table}"


def canonical_topic(entity: str, namespace: str = "") -> str:
    return _ns(namespace, f"{CANONICAL}.{entity}")


def reference_topic(name: str, namespace: str = "") -> str:
    return _ns(namespace, f"{REFERENCE}.{name}")


def contract_topic(name: str, reference: bool, namespace: str = "") -> str:
    """The topic a contract's events live on."""
    return reference_topic(name, namespace) if reference else canonical_topic(name, namespace)


def analytics_topic(entity: str, namespace: str = "", prefix: str = "analytics") -> str:
    return _ns(namespace, f"{prefix}.{entity}")


def dlq_topic(stage: str, namespace: str = "") -> str:
    return _ns(namespace, f"dlq.{stage}")


def audit_topic(stage: str, namespace: str = "") -> str:
    return _ns(namespace, f"audit.{stage}")


def saga_commands_topic(target: str, namespace: str = "") -> str:
    """Commands for one target application (`erp`, `psa`, `crm`)."""
    return _ns(namespace, f"saga.commands.{target}")


def saga_results_topic(namespace: str = "") -> str:
    return _ns(namespace, "saga.results")


def postings_topic(target: str = "erp", namespace: str = "") -> str:
    """Postings of approved work for one target application (its own queue, apart from the
    saga's commands, so a backlog of postings never delays a deal)."""
    return _ns(namespace, f"postings.{target}")


def posting_results_topic(namespace: str = "") -> str:
    return _ns(namespace, "postings.results")


def posting_control_topic(namespace: str = "") -> str:
    """Operators' requests to the stages that post approved work (a retry of a posting the
    ERP refused), keyed by the object's canonical id like its postings."""
    return _ns(namespace, "postings.control")


def time_entry_inputs_topic(namespace: str = "") -> str:
    """The PSA's time entry rows and their custom values, keyed by the time entry's
    canonical id and produced to its partition (`partition_for`), for the join."""
    return _ns(namespace, "time_entries.inputs")


def saga_control_topic(namespace: str = "") -> str:
    return _ns(namespace, "saga.control")


def exceptions_topic(kind: str = "business", namespace: str = "") -> str:
    return _ns(namespace, f"exceptions.{kind}")


def dlq_reruns_topic(namespace: str = "") -> str:
    return _ns(namespace, "dlq.reruns")


def invoice_changes_topic(namespace: str = "") -> str:
    return _ns(namespace, "invoice.changes")


def invoice_facts_topic(namespace: str = "") -> str:
    return _ns(namespace, "invoice.facts")


def value_subject(topic: str) -> str:
    return f"{topic}-value"


def contract_subject(name: str, reference: bool, namespace: str = "") -> str:
    return value_subject(contract_topic(name, reference, namespace))


def compatibility_level(reference: bool) -> str:
    """Compatibility level a contract's subject must carry in the registry."""
    return REFERENCE_COMPATIBILITY if reference else ENTITY_COMPATIBILITY


def canonical_id(system: str, entity: str, source_key: str) -> str:
    """Canonical id before an enterprise id exists: stable across replays."""
    return f"{system}:{entity}:{source_key}"


# The partitioner pssync's producers are configured with (streams/output.py): librdkafka's
# `consistent_random`, CRC32 of the key modulo the partition count (random for a null or
# empty key, which pssync never produces). Java clients default to murmur2 and would disagree.
PARTITIONER = "consistent_random"


def partition_for(key: bytes, partitions: int) -> int:
    """The partition pssync's producers choose for `key` on a topic of `partitions`."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, got {partitions}")
    if not key:
        raise ValueError("an empty key goes to a random partition; co-partition by a real key")
    return zlib.crc32(key) % partitions
