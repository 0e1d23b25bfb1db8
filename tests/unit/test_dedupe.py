from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from tables.dedupe import Position, Verdict, decide


def test_first_sight_emits() -> None:
    assert decide(None, 10, False) == (Verdict.EMIT, Position(10, False))


def test_same_position_is_duplicate() -> None:
    prev = Position(10, False)
    assert decide(prev, 10, False) == (Verdict.DUPLICATE, prev)


def test_older_position_is_stale() -> None:
    prev = Position(10, False)
    assert decide(prev, 9, False) == (Verdict.STALE, prev)


def test_newer_position_emits_and_tracks_delete() -> None:
    assert decide(Position(10, False), 11, True) == (Verdict.EMIT, Position(11, True))


def test_tombstone_after_delete_is_duplicate() -> None:
    prev = Position(11, True)
    assert decide(prev, None, True) == (Verdict.DUPLICATE, prev)


def test_tombstone_without_delete_deletes_keeping_position() -> None:
    # e.g. a compacted topic replayed: only the tombstone survived
    assert decide(Position(10, False), None, True) == (Verdict.EMIT, Position(10, True))
    assert decide(None, None, True) == (Verdict.EMIT, Position(None, True))


def test_reinsert_after_tombstone_wins() -> None:
    verdict, pos = decide(Position(10, True), 12, False)
    assert verdict is Verdict.EMIT and pos == Position(12, False)


def test_replayed_tombstone_does_not_delete_a_later_reinsert() -> None:
    # Raw offsets: 4 insert, 5 delete, 6 tombstone, 7 re-insert. A restart re-reads 6.
    reinserted = Position(30, False, offset=7)
    assert decide(reinserted, None, True, offset=6) == (Verdict.STALE, reinserted)
    # A tombstone newer than the live image (its delete compacted away) still deletes.
    assert decide(reinserted, None, True, offset=8) == (Verdict.EMIT, Position(30, True, 8))


def test_position_json_round_trip() -> None:
    pos = Position(42, True, 7)
    assert Position.from_json(pos.to_json()) == pos
    assert Position.from_json({"seq": 1, "deleted": False}) == Position(1, False)
    assert Position.from_json(None) is None


# A change is (key, sequence or None for a tombstone, is_delete).
changes = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.one_of(st.none(), st.integers(0, 12)),
        st.booleans(),
    ),
    max_size=40,
)


def reference_emits(stream: list[tuple[str, int | None, bool]]) -> list[int]:
    """Indexes a deduper must emit: a change newer than every change already emitted for
    its key; a tombstone unless the key's last emitted change deleted it."""
    newest: dict[str, int] = {}
    deleted: dict[str, bool] = {}
    out = []
    for i, (key, seq, is_delete) in enumerate(stream):
        if seq is None:
            if not deleted.get(key, False):
                out.append(i)
                deleted[key] = True
            continue
        if key in newest and seq <= newest[key]:
            continue
        out.append(i)
        newest[key], deleted[key] = seq, is_delete
    return out


@given(changes)
def test_decide_emits_what_the_reference_emits(stream: list[tuple[str, int | None, bool]]) -> None:
    state: dict[str, Position | None] = {}
    emitted = []
    for i, (key, seq, is_delete) in enumerate(stream):
        verdict, position = decide(state.get(key), seq, seq is None or is_delete)
        state[key] = position
        if verdict is Verdict.EMIT:
            emitted.append(i)
    assert emitted == reference_emits(stream)


def test_tombstone_of_a_replayed_delete_does_not_delete_a_later_reinsert() -> None:
    # Raw offsets: 4 delete (seq 20), 5 tombstone, 6 re-insert (seq 30). The connector
    # restarts and writes them again: 7 delete, 8 tombstone, 9 re-insert.
    live = Position(30, False, offset=6)
    verdict, noted = decide(live, 20, True, offset=7)
    assert verdict is Verdict.STALE and noted == Position(30, False, 7, after_delete=True)
    assert decide(noted, None, True, offset=8) == (Verdict.DUPLICATE, noted)
    verdict, after = decide(noted, 30, False, offset=9)
    assert verdict is Verdict.DUPLICATE and after == Position(30, False, 9)
    # A tombstone well past the replayed delete is a newer delete's (compaction took it).
    assert decide(noted, None, True, offset=12)[0] is Verdict.EMIT
    assert Position.from_json(noted.to_json()) == noted


# ------------------------------------------------------------------ a model of the raw log
# Source changes are (key, sequence, is_delete). Debezium writes each as a raw record, a delete
# followed by its tombstone (sequence None). A connector restart writes the changes since its
# last committed offset again. The worker reads the log in order, and after a restart of its
# own re-reads some of it with its state ahead of its commits.
Record = tuple[str, int | None, bool]


def _records(changes: list[Record]) -> list[Record]:
    out: list[Record] = []
    for key, seq, is_delete in changes:
        out.append((key, seq, is_delete))
        if is_delete:
            out.append((key, None, True))
    return out


@st.composite
def raw_logs(draw: st.DrawFn) -> tuple[list[Record], list[Record], set[int]]:
    """(source changes, raw log, offsets of the records a connector wrote again)."""
    changes: list[Record] = []
    log: list[Record] = []
    replayed: set[int] = set()
    live: set[str] = set()
    for _ in range(draw(st.integers(0, 30))):
        action = draw(st.sampled_from(["upsert", "upsert", "delete", "replay"]))
        if action == "replay":
            if changes:
                since = draw(st.integers(0, len(changes) - 1))
                again = _records(changes[since:])
                replayed.update(range(len(log), len(log) + len(again)))
                log += again
            continue
        key = draw(st.sampled_from("abc"))
        if action == "delete" and key not in live:
            continue  # a row that is not there deletes nothing
        change = (key, len(changes) + 1, action == "delete")
        changes.append(change)
        log += _records([change])
        (live.discard if action == "delete" else live.add)(key)
    return changes, log, replayed


def _consume(
    log: list[Record], order: list[int], state: dict[str, Position] | None = None
) -> tuple[list[Record], dict[str, Position]]:
    """The records emitted reading `log` at `order`'s offsets."""
    state = {} if state is None else state
    emitted = []
    for offset in order:
        key, seq, is_delete = log[offset]
        verdict, position = decide(state.get(key), seq, is_delete, offset)
        state[key] = position
        if verdict is Verdict.EMIT:
            emitted.append(log[offset])
    return emitted, state


def _target(emitted: list[Record]) -> dict[str, tuple[int | None, bool]]:
    """What a sink holds after applying `emitted`: per key (version, deleted); a tombstone
    deletes what the row holds at the row's version."""
    rows: dict[str, tuple[int | None, bool]] = {}
    for key, seq, is_delete in emitted:
        if seq is None:
            rows[key] = (rows[key][0] if key in rows else None, True)
        elif key not in rows or (version := rows[key][0]) is None or seq > version:
            rows[key] = (seq, is_delete)
    return rows


def _source(changes: list[Record]) -> dict[str, tuple[int | None, bool]]:
    return {key: (seq, is_delete) for key, seq, is_delete in changes}


@given(raw_logs(), st.lists(st.tuples(st.integers(0, 200), st.integers(1, 8)), max_size=4))
def test_each_source_change_is_emitted_once_despite_replays(
    history: tuple[list[Record], list[Record], set[int]], rereads: list[tuple[int, int]]
) -> None:
    changes, log, _ = history
    # Worker restarts: after reading offset `at`, it reads the `back` records up to it again.
    backs = {at % len(log): back for at, back in rereads} if log else {}
    order: list[int] = []
    for offset in range(len(log)):
        order.append(offset)
        if offset in backs:
            order += range(max(0, offset + 1 - backs[offset]), offset + 1)
    emitted, _ = _consume(log, order)
    assert emitted == changes  # no tombstone of its own, nothing twice, nothing missing
    assert _target(emitted) == _source(changes)


@given(raw_logs(), st.integers(0, 200), st.integers(0, 200))
def test_a_compacted_log_ends_in_the_source_state(
    history: tuple[list[Record], list[Record], set[int]], read: int, compacted: int
) -> None:
    """The worker reads part of the log, then Kafka compacts a part (keeping each key's
    newest record, tombstones included), then the worker reads on."""
    changes, log, replayed = history
    read = min(read, len(log))
    compacted = min(max(compacted, read), len(log))
    first, state = _consume(log, list(range(read)))
    newest = {key: offset for offset, (key, _, _) in enumerate(log[:compacted])}
    rest = [o for o in range(read, len(log)) if o >= compacted or newest[log[o][0]] == o]
    # The tombstone of a replayed delete, alone after compaction, cannot be told from a new
    # delete's: nothing in a tombstone says which delete it follows.
    assume(not any(o < compacted and o in replayed and log[o][1] is None for o in rest))
    emitted, _ = _consume(log, rest, state)
    target = _target(first + emitted)
    for key, (seq, deleted) in _source(changes).items():
        # A tombstone alone deletes at the row's version: the delete's sequence is gone.
        assert target[key][1] == deleted and (deleted or target[key][0] == seq)
