"""Time entry stage state: canonical time entry id -> the joined entry and its ERP postings
(streams/timesheets/model.py), on the partition of the entry's inputs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import faust

from streams.output import Output
from streams.timesheets.model import TimeEntry
from tables.codec import decode, encode
from tables.json_table import JsonTable, changelog_topic, json_table

NAME = "time-entries"


def changelog_topics(app_id: str) -> list[str]:
    return [changelog_topic(app_id, NAME)]


class TimeEntryTable:
    def __init__(self, table: JsonTable) -> None:
        self.table = table

    def get(self, key: str) -> TimeEntry | None:
        raw = self.table.get(key)
        return None if raw is None else decode(TimeEntry, raw)

    def owned(self) -> Iterator[TimeEntry]:
        for _, raw in self.table.items():
            yield decode(TimeEntry, raw)

    def write(self, entries: Iterable[TimeEntry]) -> None:
        self.table.write((e.partition, e.key, encode(e)) for e in entries)


def time_entry_table(app: faust.App, partitions: int, output: Output) -> TimeEntryTable:
    return TimeEntryTable(
        JsonTable(json_table(app, NAME, partitions, "time entry -> joined entry, postings"), output)
    )
