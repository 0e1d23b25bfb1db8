"""Expense stage state: issue key (psa:issue:<id>) -> the joined expense
(streams/expenses/model.py), written on the partition of the issue's records."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import faust

from streams.expenses.model import ExpenseState
from streams.output import Output
from tables.codec import decode, encode
from tables.json_table import JsonTable, changelog_topic, json_table

NAME = "expense-state"


def changelog_topics(app_id: str) -> list[str]:
    return [changelog_topic(app_id, NAME)]


class ExpenseTable:
    def __init__(self, table: JsonTable) -> None:
        self.table = table

    def get(self, key: str) -> ExpenseState | None:
        raw = self.table.get(key)
        return None if raw is None else decode(ExpenseState, raw)

    def states(self) -> Iterator[ExpenseState]:
        for _, raw in self.table.items():
            yield decode(ExpenseState, raw)

    def write(self, states: Iterable[ExpenseState]) -> None:
        self.table.write((s.partition, s.key, encode(s)) for s in states)


def expense_table(app: faust.App, partitions: int, output: Output) -> ExpenseTable:
    return ExpenseTable(
        JsonTable(json_table(app, NAME, partitions, "issue key -> joined expense"), output)
    )
