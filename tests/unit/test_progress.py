"""The commit position of the batch path against a simulated partition.

The simulation is the consumer as Kafka and Faust behave: a log with compacted gaps, a fetch
position, fetches of which some are lost before delivery (Faust drops the rest of a fetch when
the group generation changes), fetches handed back because flow stopped, seeks to the committed
offset arriving before, during or after a fetch, a FIFO stage queue, and commits. Whatever
happens, nothing below the committed offset was left unprocessed; once the losses stop, the
commit reaches the end of the log.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.agents.progress import REFETCH, Progress

TP = "p0"


@dataclass
class Partition:
    log: list[int]
    pos: int = 0
    committed: int | None = None
    progress: Progress[str] = field(default_factory=Progress)
    queue: deque[tuple[list[int], int, int]] = field(default_factory=deque)
    processed: set[int] = field(default_factory=set)

    def anchor(self) -> None:
        # aiokafka seeks only to a committed offset > 0; else the position is the log start.
        self.pos = self.committed if self.committed else 0
        self.progress.anchor(TP, self.committed)

    def fetch(self, n: int, fate: str, anchor_during: str) -> None:
        sought = self.progress.take_sought()
        if anchor_during == "before_records":
            self.anchor()
        records = [o for o in self.log if o >= self.pos][:n]
        if records:
            self.pos = records[-1] + 1
        else:  # idle: the consumer compares its position with what was delivered
            behind = self.progress.lost_tail(TP, self.pos)
            if behind is not None:
                self._seek(behind)
        if anchor_during == "after_records":
            self.anchor()  # the records above are from before the seek
        if not records or fate == "lost":
            return
        start = self.progress.admit(TP, records[0], sought.get(TP))
        if start == REFETCH:
            self._seek(self.progress.delivered[TP])
            return
        records = [o for o in records if o >= start]
        if not records:
            return
        if fate == "flow_stopped":
            self._seek(start)
            return
        self.queue.append((records, start, records[-1] + 1))
        self.progress.delivered_up_to(TP, records[-1] + 1)

    def _seek(self, offset: int) -> None:
        self.pos = offset
        self.progress.seek(TP, offset)

    def process(self) -> None:
        if self.queue:
            records, start, end = self.queue.popleft()
            self.processed.update(records)
            self.progress.processed(TP, start, end)

    def commit(self) -> None:
        offset = self.progress.committable(TP)
        if offset is not None and (self.committed is None or offset > self.committed):
            self.committed = offset

    def check(self) -> None:
        if self.committed is not None:
            missing = [o for o in self.log if o < self.committed and o not in self.processed]
            assert not missing, f"committed {self.committed} over unprocessed {missing[:5]}"


logs = st.lists(st.booleans(), min_size=0, max_size=60).map(
    lambda kept: [i for i, keep in enumerate(kept) if keep]  # False: compacted away
)
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("fetch"),
            st.integers(1, 12),
            st.sampled_from(["delivered", "delivered", "lost", "flow_stopped"]),
            st.sampled_from(["none", "none", "none", "before_records", "after_records"]),
        ),
        st.tuples(st.just("process")),
        st.tuples(st.just("commit")),
        st.tuples(st.just("reassign")),
        st.tuples(st.just("seek_to_committed")),  # with batches still queued
    ),
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(log=logs, steps=steps)
def test_commits_never_pass_unprocessed_records_and_reach_the_end(
    log: list[int], steps: list[tuple[object, ...]]
) -> None:
    part = Partition(log)
    part.anchor()
    for step in steps:
        if step[0] == "fetch":
            part.fetch(int(str(step[1])), str(step[2]), str(step[3]))
        elif step[0] == "process":
            part.process()
        elif step[0] == "commit":
            part.commit()
        elif step[0] == "seek_to_committed":
            part.anchor()
        else:  # the partition comes back after a rebalance: queue processed, then re-anchored
            while part.queue:
                part.process()
            part.commit()
            part.anchor()
        part.check()
    # Losses stop: the partition drains and the commit reaches the end of the log.
    for _ in range(4 * len(log) + 10):
        part.fetch(7, "delivered", "none")
        part.process()
    part.commit()
    part.check()
    if log:
        assert part.committed == log[-1] + 1
