"""`pssync dlq list | show | rerun`: argument parsing and output; the work is elsewhere."""

from __future__ import annotations

import argparse
from typing import Any

from schemas.conventions import DLQ_STAGES
from streams.settings import Settings


def _add_selectors(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", choices=DLQ_STAGES, help="only this stage's DLQ topic")
    p.add_argument("--error-class", help="only this error class, e.g. BadEventError")
    age = p.add_mutually_exclusive_group()
    age.add_argument("--older-than", metavar="AGE", help="failed longer ago than e.g. 30m, 1h, 2d")
    age.add_argument("--since", metavar="ISO", help="failed at or after this datetime (with zone)")


def add_subcommands(sub: Any) -> None:
    """Adds `dlq` with its three actions to the `pssync` parser's subcommands."""
    dlq = sub.add_parser("dlq", help="dead letters: list, show, rerun (dry run by default)")
    actions = dlq.add_subparsers(dest="dlq_action", required=True)

    p = actions.add_parser("list", help="dead letters by stage, error class and age")
    _add_selectors(p)
    p.add_argument("-v", "--records", action="store_true", help="also one line per dead letter")
    p.add_argument("--json", action="store_true", help="machine-readable, every record included")

    p = actions.add_parser("show", help="one dead letter in full, key and value decoded")
    p.add_argument("ref", metavar="DLQ_TOPIC:PARTITION:OFFSET")
    p.add_argument("--json", action="store_true")
    p.add_argument("--raw", action="store_true", help="bytes as text or hex, no decoding")

    p = actions.add_parser(
        "rerun", help="produce dead letters back to their origin topic (dry run by default)"
    )
    _add_selectors(p)
    p.add_argument(
        "--offsets", metavar="T:P:O,...", help="only these dead letters, e.g. dlq.normalize:0:7"
    )
    p.add_argument("--execute", action="store_true", help="produce and record the reruns")


def run(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: building the parser must not load Kafka clients for other commands.
    from streams.deadletters import commands

    actions = {"list": commands.cmd_list, "show": commands.cmd_show, "rerun": commands.cmd_rerun}
    return actions[args.dlq_action](args, settings)
