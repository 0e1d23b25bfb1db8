"""`pssync reference load | show`: publish pssync's reference file, and see what the
reference topics hold."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from schemas import contracts
from schemas.conventions import contract_topic
from streams.admin import ensure_topics
from streams.reference.model import load
from streams.reference.publish import OWNED, Held, execute, plan, read_topics
from streams.settings import Settings


def add_subcommands(sub: Any) -> None:
    p = sub.add_parser("reference", help="reference data: publish the file, show the topics")
    actions = p.add_subparsers(dest="action", required=True)
    ld = actions.add_parser(
        "load", help="publish the reference file to the reference topics (only what changed)"
    )
    ld.add_argument("--file", type=Path, help="reference file (default: PSSYNC_REFERENCE_FILE)")
    ld.add_argument("--dry-run", action="store_true", help="validate and show the plan only")
    sh = actions.add_parser("show", help="what the reference topics hold")
    sh.add_argument("--set", dest="sets", action="append", help="only this set (repeatable)")
    sh.add_argument("--json", action="store_true", help="one JSON object per entry")


def _summary(data: dict[str, Any] | None) -> str:
    if data is None:
        return "(deleted)"
    shown = []
    for k, v in data.items():
        if k == "code" or v in (None, [], True):
            continue
        if k == "phases":
            tasks = sum(len(ph["tasks"]) for ph in v)
            hours = sum(t["hours"] for ph in v for t in ph["tasks"])
            v = f"{len(v)} phases, {tasks} tasks, {hours:g} h"
        elif isinstance(v, list):
            v = ",".join(str(x) for x in v)
        shown.append(f"{k}={v}")
    return " ".join(shown)


def cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    path = args.file or settings.reference_file
    data = load(path)
    total = sum(len(v) for v in data.sets.values())
    print(f"{path}: version {data.version}, {total} entries, valid")
    held = read_topics(settings, OWNED)
    steps = plan(data, held)
    for step in steps:
        topic = contract_topic(step.name, True, settings.topic_namespace)
        was = "" if step.held_version is None else f" (was version {step.held_version})"
        print(f"  {step.op:<6} {topic} {step.code}{was}")
    if not steps:
        print("the reference topics already hold this file: nothing to publish")
        return 0
    if args.dry_run:
        print(f"dry run: {len(steps)} record(s) would be published; run without --dry-run")
        return 0
    from streams.topology import reference_specs

    ensure_topics(settings, reference_specs(settings))
    done = execute(settings, data, steps)
    print(f"published {done} record(s), acknowledged by Kafka")
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    names = args.sets or sorted(n for n in contracts.entities() if contracts.is_reference(n))
    unknown = [n for n in names if not contracts.is_reference(n)]
    if unknown:
        from streams.errors import ConfigError

        raise ConfigError(
            f"--set {unknown[0]!r} is not a reference set; sets: "
            f"{', '.join(n for n in contracts.entities() if contracts.is_reference(n))}"
        )
    held = read_topics(settings, names)
    for name in names:
        entries: dict[str, Held] = held.get(name, {})
        if args.json:
            for code, h in sorted(entries.items()):
                line = {"set": name, "code": code, "version": h.version, "data": h.data}
                print(json.dumps(line, default=str, ensure_ascii=False))
            continue
        topic = contract_topic(name, True, settings.topic_namespace)
        live = sum(1 for h in entries.values() if h.data is not None)
        print(f"{topic}: {live} entr{'y' if live == 1 else 'ies'}")
        for code, h in sorted(entries.items()):
            print(f"  {code:<14} v{h.version:<4} {_summary(h.data)}")
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "load":
        return cmd_load(args, settings)
    return cmd_show(args, settings)
