"""Names that form pssync's contract with its consumers. Code builds every name from here.

- Raw topics (written by Debezium / pollers): ``<system prefix>.<schema>.<table>``,
  e.g. ``crm.sales.opportunity``.
- Canonical topics: ``[<namespace>.]canonical.<entity>``; key = canonical id as UTF-8 string;
  value = Confluent wire-format Avro.
- Dead-letter topics: ``[<namespace>.]dlq.<stage>``; key and value = the original bytes,
  context in headers.
- Subjects: TopicNameStrategy, ``<topic>-value``.
"""

from __future__ import annotations


def _ns(namespace: str, name: str) -> str:
    return f"{namespace}.{name}" if namespace else name


def raw_topic(prefix: str, schema: str, table: str) -> str:
    return f"{prefix}.{schema}.{table}"


def canonical_topic(entity: str, namespace: str = "") -> str:
    return _ns(namespace, f"canonical.{entity}")


def dlq_topic(stage: str, namespace: str = "") -> str:
    return _ns(namespace, f"dlq.{stage}")


def value_subject(topic: str) -> str:
    return f"{topic}-value"


def canonical_id(system: str, entity: str, source_key: str) -> str:
    """Canonical id before an enterprise id exists: stable across replays."""
    return f"{system}:{entity}:{source_key}"
