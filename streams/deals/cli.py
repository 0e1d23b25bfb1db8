"""`pssync exceptions list | show | retry`: argument parsing; the work is in exceptions.py."""

from __future__ import annotations

import argparse
from typing import Any

from streams.settings import Settings


def add_subcommands(sub: Any) -> None:
    """Adds `exceptions` with its three actions to the `pssync` parser's subcommands."""
    exc = sub.add_parser(
        "exceptions", help="business exceptions of deals: list, show, retry (dry run by default)"
    )
    actions = exc.add_subparsers(dest="exceptions_action", required=True)

    p = actions.add_parser("list", help="deals parked on a business exception")
    p.add_argument("--all", action="store_true", help="resolved exceptions too")
    p.add_argument("--reason", help="only this reason code, e.g. template_missing")
    p.add_argument("--json", action="store_true", help="machine-readable")

    p = actions.add_parser("show", help="one deal's exception in full")
    p.add_argument("key", metavar="SAGA_KEY", help="e.g. crm:opportunity:006...")
    p.add_argument("--json", action="store_true")

    p = actions.add_parser(
        "retry",
        help="resume a parked deal from the step it stopped at, or post a refused time entry "
        "or expense again (dry run by default)",
    )
    p.add_argument("key", metavar="SAGA_KEY", help="the exception's key, e.g. psa:time_entry:42")
    p.add_argument("--execute", action="store_true", help="send the retry to the owning stage")


def run(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: building the parser must not load Kafka clients for other commands.
    from streams.deals import exceptions

    actions = {
        "list": exceptions.cmd_list,
        "show": exceptions.cmd_show,
        "retry": exceptions.cmd_retry,
    }
    return actions[args.exceptions_action](args, settings)
