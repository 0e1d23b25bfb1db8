"""Dead-letter tooling without a network: selectors, ages, plans, decoding, rerun headers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import contracts
from schemas.samples import Sampler
from schemas.serde import Decoder, encode
from streams.cli import build_parser
from streams.deadletters.decode import decode_bytes, plain
from streams.deadletters.ledger import Rerun
from streams.deadletters.model import RERUN_HEADER, DeadLetter, Ref, parse_ref, parse_refs
from streams.deadletters.plan import build_plan, format_groups, format_plan, summarize
from streams.deadletters.selection import Selection, format_age, parse_age, parse_since
from streams.dlq import dlq_headers
from streams.errors import BadEventError, ConfigError, DeadLetterError

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def letter(
    offset: int = 0,
    stage: str = "normalize",
    error: BaseException | None = None,
    failed: datetime = NOW - timedelta(minutes=5),
    original: list[tuple[str, str | bytes | None]] | None = None,
    dlq: str = "dlq.normalize",
) -> DeadLetter:
    headers = dlq_headers(
        stage, "crm.sales.opportunity", 2, 100 + offset, 1, error or BadEventError("bad"), original
    )
    headers = [
        (k, failed.isoformat().encode()) if k.endswith("failed_at") else (k, v) for k, v in headers
    ]
    return DeadLetter.of(Ref(dlq, 0, offset), b"k", b"v", headers, 0)


def test_refs_parse_and_name_topics_with_dots() -> None:
    assert parse_ref("staging.dlq.normalize:0:42") == Ref("staging.dlq.normalize", 0, 42)
    assert str(Ref("dlq.sink", 1, 7)) == "dlq.sink:1:7"
    assert parse_refs("dlq.sink:0:1, dlq.sink:0:2,dlq.sink:0:1") == [
        Ref("dlq.sink", 0, 1),
        Ref("dlq.sink", 0, 2),
    ]


@pytest.mark.parametrize("bad", ["dlq.sink", "dlq.sink:0", ":0:1", "dlq.sink:a:1", "t:0:-1"])
def test_bad_refs_say_how_to_write_one(bad: str) -> None:
    with pytest.raises(ConfigError, match="<dlq topic>:<partition>:<offset>"):
        parse_ref(bad)


def test_empty_offsets_are_refused() -> None:
    with pytest.raises(ConfigError, match="--offsets is empty"):
        parse_refs(" , ")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("2d", 172800),
        ("1w", 604800),
        ("1h30m", 5400),
        ("1H", 3600),
    ],
)
def test_ages(text: str, seconds: int) -> None:
    assert parse_age(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "1", "h", "1 hour", "1x", "-1h", "1h 30m", "1.5h"])
def test_bad_ages_say_what_is_meant(bad: str) -> None:
    with pytest.raises(ConfigError, match="30m, 1h"):
        parse_age(bad)


def test_since_needs_a_zone() -> None:
    assert parse_since("2026-11-29T10:00:00+00:00") == datetime(2026, 11, 29, 10, tzinfo=UTC)
    with pytest.raises(ConfigError, match="time zone"):
        parse_since("2026-11-29T10:00:00")
    with pytest.raises(ConfigError, match="ISO datetime"):
        parse_since("yesterday")


def test_format_age_keeps_two_units() -> None:
    assert format_age(timedelta(seconds=0)) == "0s"
    assert format_age(timedelta(seconds=45)) == "45s"
    assert format_age(timedelta(hours=3, minutes=5, seconds=9)) == "3h5m"
    assert format_age(timedelta(days=2, hours=4, minutes=1)) == "2d4h"


def test_selection_by_stage_class_age_and_refs() -> None:
    old = letter(0, failed=NOW - timedelta(hours=3))
    new = letter(1, error=KeyError("x"))
    sink = letter(0, stage="sink", dlq="dlq.sink")
    everything = Selection()
    assert all(everything.matches(d, NOW) for d in (old, new, sink))
    assert not Selection(stages=("sink",)).matches(old, NOW)
    assert Selection(stages=("sink",)).matches(sink, NOW)
    assert Selection(error_class="keyerror").matches(new, NOW)
    assert not Selection(error_class="KeyError").matches(old, NOW)
    assert Selection(older_than=timedelta(hours=1)).matches(old, NOW)
    assert not Selection(older_than=timedelta(hours=1)).matches(new, NOW)
    assert Selection(since=NOW - timedelta(hours=1)).matches(new, NOW)
    assert not Selection(since=NOW - timedelta(hours=1)).matches(old, NOW)
    assert Selection(refs=(Ref("dlq.normalize", 0, 1),)).matches(new, NOW)
    assert not Selection(refs=(Ref("dlq.normalize", 0, 1),)).matches(old, NOW)
    with pytest.raises(ConfigError, match="not both"):
        Selection(older_than=timedelta(hours=1), since=NOW)


def test_dead_letter_context_and_rerun_headers() -> None:
    d = letter(3, original=[("trace", b"\x00t"), (RERUN_HEADER, b"dlq.normalize:0:1")])
    assert d.is_dead_letter and d.stage == "normalize" and d.error_class == "BadEventError"
    assert d.origin == Ref("crm.sales.opportunity", 2, 103)
    assert d.failed_at == NOW - timedelta(minutes=5)
    assert d.original_headers == [("trace", b"\x00t"), (RERUN_HEADER, b"dlq.normalize:0:1")]
    assert d.rerun_of == "dlq.normalize:0:1"
    # The earlier rerun's name is replaced, not stacked; the pssync.dlq.* context is dropped.
    assert d.rerun_headers() == [("trace", b"\x00t"), (RERUN_HEADER, b"dlq.normalize:0:3")]


def test_a_record_without_context_has_no_origin() -> None:
    d = DeadLetter.of(Ref("dlq.sink", 0, 9), None, b"x", {"trace": "abc"}, 1_700_000_000_000)
    assert not d.is_dead_letter and d.origin is None and d.stage == "?"
    assert d.headers == (("trace", b"abc"),)
    assert d.failed_at == datetime.fromtimestamp(1_700_000_000, UTC)  # the record's time


def rerun_of(d: DeadLetter) -> Rerun:
    return Rerun(str(d.ref), NOW.isoformat(), "crm.sales.opportunity", 2, 500)


def test_plan_skips_what_was_rerun_and_what_has_no_origin() -> None:
    a, b, c = letter(0), letter(1), letter(2)
    foreign = DeadLetter.of(Ref("dlq.normalize", 0, 3), b"k", b"v", [], 0)
    plan = build_plan([a, b, c, b, foreign], {str(b.ref): rerun_of(b)})
    assert plan.todo == [a, c]
    assert plan.already == [(b, rerun_of(b))]
    assert plan.unroutable == [foreign]
    text = format_plan(plan)
    assert text.startswith("2 dead letter(s) to rerun:")
    assert "dlq.normalize:0:0 -> crm.sales.opportunity:2:100  BadEventError: bad" in text
    assert "skip dlq.normalize:0:1: already rerun" in text
    assert "skip dlq.normalize:0:3: no pssync.dlq.* headers" in text


def test_a_rerun_recorded_for_an_older_record_at_the_same_offset_does_not_count() -> None:
    # The DLQ topic was deleted and recreated: offsets start again at 0.
    d = letter(0)
    old = Rerun(str(d.ref), NOW.isoformat(), "crm.sales.opportunity", 2, 500, d.timestamp_ms - 1)
    assert build_plan([d], {str(d.ref): old}).todo == [d]
    same = Rerun(str(d.ref), NOW.isoformat(), "crm.sales.opportunity", 2, 500, d.timestamp_ms)
    assert build_plan([d], {str(d.ref): same}).already == [(d, same)]


def test_a_second_rerun_plans_nothing_and_says_so() -> None:
    letters = [letter(i) for i in range(30)]
    plan = build_plan(letters, {str(d.ref): rerun_of(d) for d in letters})
    assert plan.todo == []
    text = format_plan(plan)
    assert text.splitlines()[0] == "nothing to rerun (30 selected already rerun)"
    assert text.splitlines()[-1] == "  ... and 10 more skipped"


def test_summary_groups_by_stage_and_class_with_ages() -> None:
    letters = [
        letter(0, failed=NOW - timedelta(hours=2)),
        letter(1, failed=NOW - timedelta(minutes=1)),
        letter(2, error=KeyError("x")),
        letter(0, stage="sink", dlq="dlq.sink"),
    ]
    groups = summarize(letters, {str(letters[0].ref): rerun_of(letters[0])})
    assert [(g.stage, g.error_class, g.count, g.rerun) for g in groups] == [
        ("normalize", "BadEventError", 2, 1),
        ("normalize", "KeyError", 1, 0),
        ("sink", "BadEventError", 1, 0),
    ]
    assert groups[0].oldest == NOW - timedelta(hours=2)
    assert groups[0].newest == NOW - timedelta(minutes=1)
    table = format_groups(groups, NOW).splitlines()
    assert table[0].split() == ["stage", "error", "class", "count", "rerun", "oldest", "newest"]
    assert "(2h ago)" in table[1] and "(1m ago)" in table[1]
    assert format_groups([], NOW) == "no dead letters"


def test_rerun_records_round_trip_and_refuse_garbage() -> None:
    r = Rerun("dlq.sink:0:4", NOW.isoformat(), "canonical.opportunity", 0, 12, 1_700_000_000_000)
    assert Rerun.from_bytes(r.to_bytes()) == r
    bare = b'{"dead_letter": "x:0:1", "rerun_at": "t", "topic": "y", "partition": 0, "offset": 3}'
    assert Rerun.from_bytes(bare).dead_letter_ts is None
    assert json.loads(r.to_bytes())["dead_letter"] == "dlq.sink:0:4"
    with pytest.raises(DeadLetterError, match="unreadable rerun record"):
        Rerun.from_bytes(b'{"dead_letter": "x"}')


def test_decoding_json_text_hex_and_avro() -> None:
    pretty = decode_bytes(b'{"a": 1}', "json", None)
    assert (pretty.encoding, pretty.value) == ("json", {"a": 1})
    assert pretty.render() == '{\n  "a": 1\n}'
    text = decode_bytes(b"{not json", "json", None)
    assert (text.encoding, text.value, text.note) == ("utf-8", "{not json", "not valid JSON")
    assert plain(b"\xff\x00").value == "ff 00" and plain(None).encoding == "null"
    assert decode_bytes(b"crm:opportunity:1", "auto", None).encoding == "utf-8"

    schema: dict[str, Any] = contracts.schema("opportunity")
    record = Sampler(schema, seed=1).record()
    decoder = Decoder(lambda schema_id: schema)
    avro = decode_bytes(encode(7, contracts.parsed("opportunity"), record), "avro", decoder)
    assert avro.encoding == "avro" and avro.value == record
    junk = decode_bytes(b"\x00\x00\x00", "avro", decoder)
    assert junk.encoding == "hex" and "too short" in junk.note


def test_cli_parses_the_three_actions() -> None:
    parser = build_parser()
    args = parser.parse_args(["dlq", "list", "--stage", "sink", "--older-than", "1h", "-v"])
    assert (args.dlq_action, args.stage, args.older_than, args.records) == (
        "list",
        "sink",
        "1h",
        True,
    )
    args = parser.parse_args(["dlq", "rerun", "--offsets", "dlq.sink:0:1"])
    assert args.offsets == "dlq.sink:0:1" and args.execute is False  # dry run by default
    with pytest.raises(SystemExit):
        parser.parse_args(["dlq", "rerun", "--older-than", "1h", "--since", "x"])
    with pytest.raises(SystemExit):
        parser.parse_args(["dlq", "list", "--stage", "other"])
