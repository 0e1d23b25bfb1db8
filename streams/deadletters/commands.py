"""What `pssync dlq list | show | rerun` do, and what they print."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from schemas.conventions import DLQ_STAGES
from schemas.registry import Registry
from schemas.serde import Decoder
from streams.admin import ensure_topics
from streams.deadletters.decode import Kind, decode_bytes, plain
from streams.deadletters.ledger import Rerun, read_reruns, rerun_for
from streams.deadletters.model import DeadLetter, parse_ref, parse_refs
from streams.deadletters.plan import (
    build_plan,
    format_groups,
    format_plan,
    format_records,
    summarize,
)
from streams.deadletters.reader import TopicReader
from streams.deadletters.rerun import check_origins, compacted, compaction_note, execute
from streams.deadletters.selection import Selection, parse_age, parse_since
from streams.errors import DeadLetterError, RegistryError
from streams.settings import Settings
from streams.topology import topic_specs, topology


def _selection(args: argparse.Namespace) -> Selection:
    offsets = getattr(args, "offsets", None)
    return Selection(
        stages=(args.stage,) if args.stage else (),
        error_class=args.error_class,
        older_than=parse_age(args.older_than) if args.older_than else None,
        since=parse_since(args.since) if args.since else None,
        refs=tuple(parse_refs(offsets)) if offsets is not None else None,
    )


def _load(
    args: argparse.Namespace, settings: Settings, reader: TopicReader, payloads: bool = True
) -> tuple[list[DeadLetter], dict[str, Rerun]]:
    """The selected dead letters (without key and value unless `payloads`) and every rerun."""
    selection = _selection(args)
    topo = topology(settings)
    letters: Iterable[DeadLetter]
    if selection.refs is not None:
        letters = [reader.read_one(ref) for ref in selection.refs]
    else:
        hint = "create pssync's topics with `pssync topics`, or check PSSYNC_TOPIC_NAMESPACE"
        stages = selection.stages or DLQ_STAGES
        letters = (d for stage in stages for d in reader.scan(topo.dlq(stage), hint))
    now = datetime.now(UTC)
    # Filtered while scanning, payloads dropped when not needed: memory follows the selection.
    selected = [
        d if payloads else replace(d, key=None, value=None)
        for d in letters
        if selection.matches(d, now)
    ]
    return sorted(selected, key=lambda d: d.ref), read_reruns(reader, topo.dlq_reruns)


def _record_json(d: DeadLetter, reruns: dict[str, Rerun]) -> dict[str, Any]:
    rerun = rerun_for(d, reruns)
    return {
        "dead_letter": str(d.ref),
        "stage": d.stage,
        "origin": None if d.origin is None else str(d.origin),
        "error_class": d.error_class,
        "error_message": d.error_message,
        "failed_at": d.failed_at.isoformat(),
        "rerun": None if rerun is None else {"at": rerun.rerun_at, "to": str(rerun.landed)},
        "rerun_of": d.rerun_of,
    }


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """Counts and ages by stage and error class; with --records, one line per dead letter."""
    with TopicReader(settings) as reader:
        letters, reruns = _load(args, settings, reader, payloads=False)
    groups = summarize(letters, reruns)
    now = datetime.now(UTC)
    if args.json:
        out = {
            "groups": [
                {
                    "stage": g.stage,
                    "error_class": g.error_class,
                    "count": g.count,
                    "rerun": g.rerun,
                    "oldest": g.oldest.isoformat(),
                    "newest": g.newest.isoformat(),
                }
                for g in groups
            ],
            "records": [_record_json(d, reruns) for d in letters],
        }
        print(json.dumps(out, indent=2))
        return 0
    print(format_groups(groups, now))
    if args.records and letters:
        print()
        print(format_records(letters, reruns))
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    """One dead letter: context, original headers, key and value decoded where possible."""
    ref = parse_ref(args.ref)
    topo = topology(settings)
    with TopicReader(settings) as reader:
        d = reader.read_one(ref)
        if not d.is_dead_letter:
            raise DeadLetterError(
                f"{ref} has no pssync.dlq.* headers: not a dead letter; dead-letter topics "
                f"are {', '.join(topo.dlq(s) for s in DLQ_STAGES)}"
            )
        rerun = rerun_for(d, read_reruns(reader, topo.dlq_reruns))
    origin = d.origin
    canonical = {topo.output(e) for e in topo.entities}
    raw = {r.raw_topic for r in topo.routes}
    value_kind: Kind = "auto"
    if (origin is not None and origin.topic in canonical) or d.stage == "sink":
        value_kind = "avro"
    elif (origin is not None and origin.topic in raw) or d.stage == "normalize":
        value_kind = "json"
    if args.raw:
        key, value = plain(d.key), plain(d.value)
    else:
        decoder = Decoder(Registry(settings).schema_by_id)
        key = decode_bytes(d.key, "auto", None)
        try:
            value = decode_bytes(d.value, value_kind, decoder)
        except RegistryError as exc:
            raise RegistryError(
                f"{exc}; check PSSYNC_REGISTRY_URL and that the registry is up, or add --raw "
                "to see the bytes undecoded"
            ) from exc
    headers = [(k, plain(v)) for k, v in d.original_headers]
    if args.json:
        out = {
            **_record_json(d, {str(ref): rerun} if rerun else {}),
            "context": d.context,
            "headers": [{"name": k, **v.to_json()} for k, v in headers],
            "key": key.to_json(),
            "value": value.to_json(),
        }
        print(json.dumps(out, indent=2, default=str, ensure_ascii=False))
        return 0
    ctx = d.context
    lines = [
        f"dead letter  {ref}",
        f"stage        {d.stage}",
        f"origin       {origin or '?'}" + _record_time(ctx.get("timestamp", "")),
        f"failed at    {d.failed_at.isoformat()}",
        f"error        {d.error_class}: {d.error_message}",
        "rerun        "
        + (
            f"{rerun.rerun_at} -> {rerun.landed}"
            if rerun
            else f"no (pssync dlq rerun --offsets {ref})"
        ),
    ]
    if d.rerun_of:
        lines.append(f"rerun of     {d.rerun_of}")
    lines.append("headers      " + (", ".join(f"{k}={v.value}" for k, v in headers) or "none"))
    for name, part in (("key", key), ("value", value)):
        text = part.render()
        lines.append(f"{name} ({part.encoding})" + ("\n" if "\n" in text else "  ") + text)
    print("\n".join(lines))
    return 0


def _record_time(ms: str) -> str:
    if not ms.isdigit():
        return ""
    when = datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat(timespec="milliseconds")
    return f", record time {when}"


def cmd_rerun(args: argparse.Namespace, settings: Settings) -> int:
    """The plan; with --execute, the selected dead letters back to their origin, recorded."""
    topo = topology(settings)
    with TopicReader(settings) as reader:
        letters, reruns = _load(args, settings, reader)
        plan = build_plan(letters, reruns)
        print(format_plan(plan))
        if not plan.todo:
            return 0
        origins = {d.origin.topic for d in plan.todo if d.origin is not None}
        for topic in compacted(settings, origins):
            print(compaction_note(topic))
        if not args.execute:
            print("dry run: nothing produced; add --execute to rerun")
            return 0
        check_origins(reader, plan.todo)
    ensure_topics(settings, [s for s in topic_specs(settings) if s.name == topo.dlq_reruns])
    done = execute(settings, plan.todo, topo.dlq_reruns)
    for r in done:
        print(f"rerun {r.dead_letter} -> {r.landed}")
    print(f"{len(done)} dead letter(s) rerun and recorded in {topo.dlq_reruns}")
    return 0
