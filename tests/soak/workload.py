"""A seeded random CRM workload on sales.opportunity, plus poison produced straight to Kafka.

Every committed row change is counted, and the last image of every deleted row is kept
(DELETE ... RETURNING), so the soak knows exactly what the target must end up holding.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

from connectors.sql import db_url
from streams.security import kafka_config
from streams.settings import Settings
from streams.topology import topology
from tests.soak import poison
from tests.soak.events import EventLog

STAGES = [
    "Prospecting", "Qualification", "Needs Analysis", "Value Proposition",
    "Perception Analysis", "Proposal/Price Quote", "Negotiation/Review", "Closed Won",
    "Closed Lost", "Parked (custom)",
]
BILLING = ["Fixed Fee", "Time and Materials", "T&M", "Milestone", "Retainer", "barter", None]
CURRENCIES = ["EUR", "USD", "GBP", "CHF", "eur"]
LINES = ["CONSULT", "ARCH", "PM", "DEV", "QA", "TRAIN"]
NAMES = ["Data", "Cloud", "ERP", "Übernahme", "SAP"]
CLOSE_FROM = date(2026, 1, 1)
ACCOUNTS = [f"001SOAK{i:04d}" for i in range(5)]
COLUMNS = [
    "account_id", "name", "stage_name", "amount", "currency_iso_code", "close_date",
    "probability", "is_closed", "is_won", "billing_type__c", "delivery_region__c",
    "project_manager_email__c", "sow_reference__c", "service_lines__c",
]
# Operation mix (weights); poison is drawn separately at the profile's ratio.
MIX = {
    "insert": 30, "update": 33, "rapid updates": 5, "delete": 10, "re-insert": 6,
    "transaction": 16,
}


@dataclass
class Tally:
    """What the workload did; read by the verifier once the workload has stopped."""

    changes: int = 0  # committed row changes of sales.opportunity
    ops: Counter[str] = field(default_factory=Counter)
    deleted: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> last row image
    poison_sent: dict[str, str] = field(default_factory=dict)  # marker -> stage
    poison_acked: dict[str, str] = field(default_factory=dict)  # acknowledged by Kafka
    poison_failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Workload:
    def __init__(self, settings: Settings, rng: random.Random, rate: float,
                 poison_ratio: float, log: EventLog, client_log: logging.Logger) -> None:
        self.settings = settings
        self.rng = rng
        self.rate = rate
        self.poison_ratio = poison_ratio
        self.log = log
        self.tally = Tally()
        self.engine = create_engine(db_url(settings.crm_db), pool_size=2, pool_pre_ping=True)
        topo = topology(settings)
        self.topics = {"normalize": topo.routes[0].raw_topic,
                       "sink": topo.canonical("opportunity")}
        # Idempotent and patient: poison produced while the broker is down is delivered once
        # it is back, and exactly once, so the DLQ count is exact.
        self.producer = Producer(kafka_config(
            settings, **{"enable.idempotence": True, "message.timeout.ms": 300000}
        ), logger=client_log)
        self.live: list[str] = []
        self.live_at: dict[str, int] = {}
        self.dead: list[str] = []
        self.next_id = 0
        self.next_poison = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="workload", daemon=True)

    # ------------------------------------------------------------------ rows
    def _values(self) -> dict[str, Any]:
        r = self.rng
        stage = r.choice(STAGES)
        lines = r.sample(LINES, r.randint(0, 3))
        return {
            "account_id": r.choice([None, *ACCOUNTS]),
            "name": f"{r.choice(NAMES)} deal {r.randint(1, 99999)}",
            "stage_name": stage,
            "amount": None if r.random() < 0.1 else Decimal(r.randint(0, 10**9)) / 100,
            "currency_iso_code": r.choice(CURRENCIES),
            "close_date": None if r.random() < 0.1 else CLOSE_FROM + timedelta(r.randint(0, 900)),
            "probability": None if r.random() < 0.2 else Decimal(r.randint(0, 10000)) / 100,
            "is_closed": stage.startswith("Closed"),
            "is_won": stage == "Closed Won",
            "billing_type__c": r.choice(BILLING),
            "delivery_region__c": r.choice([None, "EMEA", "NA", "APAC"]),
            "project_manager_email__c": r.choice([None, f"pm{r.randint(1, 40)}@example.com"]),
            "sow_reference__c": r.choice([None, f"SOW-{r.randint(1, 9999)}"]),
            "service_lines__c": ";".join(lines) if lines else r.choice([None, ""]),
        }

    def _insert(self, conn: Connection, row_id: str) -> int:
        cols = ", ".join(COLUMNS)
        params = ", ".join(f":{c}" for c in COLUMNS)
        return conn.execute(
            text(f"INSERT INTO sales.opportunity (id, {cols}) VALUES (:id, {params})"),
            {"id": row_id, **self._values()},
        ).rowcount

    def _update(self, conn: Connection, row_id: str) -> int:
        values = self._values()
        chosen = self.rng.sample(COLUMNS, self.rng.randint(1, 4))
        sets = ", ".join(f"{c} = :{c}" for c in chosen)
        return conn.execute(
            text(f"UPDATE sales.opportunity SET {sets}, last_modified_date = clock_timestamp() "
                 "WHERE id = :id"),
            {"id": row_id, **{c: values[c] for c in chosen}},
        ).rowcount

    def _delete(self, conn: Connection, row_id: str) -> tuple[int, dict[str, Any] | None]:
        found = conn.execute(
            text("DELETE FROM sales.opportunity WHERE id = :id RETURNING *"), {"id": row_id}
        ).mappings().first()
        return (0, None) if found is None else (1, dict(found))

    # ------------------------------------------------------------------ state
    def _add_live(self, row_id: str) -> None:
        self.live_at[row_id] = len(self.live)
        self.live.append(row_id)

    def _drop_live(self, row_id: str) -> None:
        i = self.live_at.pop(row_id)
        last = self.live.pop()
        if last != row_id:
            self.live[i] = last
            self.live_at[last] = i

    def _new_id(self) -> str:
        self.next_id += 1
        return f"006SOAK{self.next_id:07d}"

    # ------------------------------------------------------------------ operations
    def _op(self, kind: str) -> None:
        if kind in ("update", "rapid updates", "delete") and not self.live:
            kind = "insert"
        if kind == "re-insert" and not self.dead:
            kind = "insert"
        if kind == "rapid updates":
            row_id = self.rng.choice(self.live)
            for _ in range(self.rng.randint(5, 12)):  # one transaction each, back to back
                with self.engine.begin() as conn:
                    self.tally.changes += self._update(conn, row_id)
        elif kind == "transaction":
            self._transaction()
        else:
            with self.engine.begin() as conn:
                self._single(conn, kind)
        self.tally.ops[kind] += 1

    def _single(self, conn: Connection, kind: str) -> None:
        if kind == "insert":
            row_id = self._new_id()
            self.tally.changes += self._insert(conn, row_id)
            self._add_live(row_id)
        elif kind == "update":
            self.tally.changes += self._update(conn, self.rng.choice(self.live))
        elif kind == "delete":
            row_id = self.rng.choice(self.live)
            n, image = self._delete(conn, row_id)
            self.tally.changes += n
            if image is not None:
                self.tally.deleted[row_id] = image
            self._drop_live(row_id)
            self.dead.append(row_id)
        elif kind == "re-insert":
            # Half the time the row deleted last: a delete and its re-insert then often fall in
            # one window a Connect restart writes again.
            last = self.rng.random() < 0.5
            row_id = self.dead.pop(-1 if last else self.rng.randrange(len(self.dead)))
            self.tally.changes += self._insert(conn, row_id)
            self.tally.deleted.pop(row_id, None)
            self._add_live(row_id)

    def _transaction(self) -> None:
        """Several statements in one transaction, touching new and existing rows."""
        changes = 0
        inserted: list[str] = []
        deleted: dict[str, dict[str, Any]] = {}
        touched = [i for i in self.rng.sample(self.live, min(len(self.live), 3))]
        with self.engine.begin() as conn:
            for _ in range(self.rng.randint(2, 6)):
                step = self.rng.choice(["insert", "update", "update", "delete", "insert+delete"])
                candidates = [i for i in touched + inserted if i not in deleted]
                if step in ("update", "delete") and candidates:
                    row_id = self.rng.choice(candidates)
                    if step == "update":
                        changes += self._update(conn, row_id)
                    else:
                        n, image = self._delete(conn, row_id)
                        changes += n
                        if image is not None:
                            deleted[row_id] = image
                else:
                    row_id = self._new_id()
                    changes += self._insert(conn, row_id)
                    inserted.append(row_id)
                    if step == "insert+delete":
                        changes += self._update(conn, row_id)
                        n, image = self._delete(conn, row_id)
                        changes += n
                        if image is not None:
                            deleted[row_id] = image
        # Committed: only now does the bookkeeping follow.
        self.tally.changes += changes
        for row_id in inserted:
            self._add_live(row_id)
        for row_id, image in deleted.items():
            self._drop_live(row_id)
            self.dead.append(row_id)
            self.tally.deleted[row_id] = image

    def _poison(self) -> None:
        self.next_poison += 1
        mark = poison.marker(self.next_poison)
        stage, variant, key, value = poison.pick(self.rng, mark)
        self.tally.poison_sent[mark] = stage

        def acked(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                self.tally.poison_acked[mark] = stage
            else:
                self.tally.poison_failed.append(f"{mark}: {err}")

        self.producer.produce(self.topics[stage], key=key, value=value, on_delivery=acked)
        self.producer.poll(0)
        self.log.note(f"poison {mark} ({stage}: {variant})")

    # ------------------------------------------------------------------ loop
    def setup(self) -> None:
        with self.engine.begin() as conn:
            for acc in ACCOUNTS:
                conn.execute(
                    text("INSERT INTO sales.account (id, name) VALUES (:id, :name)"),
                    {"id": acc, "name": f"Account {acc}"},
                )

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        kinds, weights = list(MIX), list(MIX.values())
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stop.is_set():
            try:
                if self.rng.random() < self.poison_ratio:
                    self._poison()
                else:
                    self._op(self.rng.choices(kinds, weights)[0])
            except Exception as exc:  # noqa: BLE001 - reported, the soak fails on it
                self.tally.errors.append(repr(exc))
                self.log.note(f"workload error: {exc!r}")
                if len(self.tally.errors) > 20:
                    return
            self.producer.poll(0)
            next_at += interval
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def finish(self, timeout: float = 120.0) -> None:
        """Stop, and wait until every poison event is acknowledged (or has failed)."""
        self.stop.set()
        self.thread.join(60)
        left = self.producer.flush(timeout)
        if left:
            self.tally.poison_failed.append(f"{left} poison event(s) not acknowledged")
        self.engine.dispose()
