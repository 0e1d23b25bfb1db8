from __future__ import annotations

from hypothesis import given
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


def test_position_json_round_trip() -> None:
    pos = Position(42, True)
    assert Position.from_json(pos.to_json()) == pos
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
