"""The `pssync` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from streams.errors import ConfigError, KafkaUnavailableError, PssyncError
from streams.settings import Settings

log = logging.getLogger("pssync")


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import faulthandler

    from faust.worker import Worker as FaustWorker

    from streams.stopping import EXIT_CRASHED, BoundedStop, one_line

    # Named Worker: its log lines ("[^Worker]: Ready") are what supervisors and tools wait on.
    class Worker(BoundedStop, FaustWorker):
        pass

    # A crash in a native library (librdkafka, RocksDB) prints every thread's Python stack.
    faulthandler.enable(all_threads=True)

    from streams.admin import ensure_topics
    from streams.app import create_app
    from streams.runtime import tune_gc
    from streams.topology import topic_specs

    _wait_for_kafka(settings, lambda: ensure_topics(settings, topic_specs(settings)))
    _wait_for_kafka(settings, lambda: _prepare_state_dir(settings))
    app = create_app(settings)
    tune_gc(settings)
    print(
        f"pssync worker: stages {settings.describe()['stages']}, consumer group {settings.app_id}",
        file=sys.stderr,
        flush=True,
    )
    # quiet: no banner or spinner when logs go to a file.
    worker = Worker(
        app,
        loglevel=args.loglevel,
        quiet=not sys.stdout.isatty(),
        stop_timeout=settings.stop_timeout,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        reason = worker.crash_reason
        if reason is not None:
            # The traceback is in the log above; operators and supervisors need one line.
            print(f"pssync worker stopped: {one_line(reason)}", file=sys.stderr, flush=True)
            return EXIT_CRASHED
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


def _wait_for_kafka(settings: Settings, step: Callable[[], object]) -> None:
    """Run a startup step, again while Kafka answers "not now" (a broker restarting)."""
    deadline = time.monotonic() + settings.startup_wait
    while True:
        try:
            step()
            return
        except KafkaUnavailableError as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning(
                "waiting for Kafka (up to PSSYNC_STARTUP_WAIT=%.0fs): %s",
                settings.startup_wait,
                exc,
            )
            time.sleep(2.0)


def _prepare_state_dir(settings: Settings) -> None:
    from streams.state import check_local_state

    # Faust creates only the last level of its data directory.
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the worker's state directory {settings.state_dir} ({exc}); "
            "set PSSYNC_DATA_DIR to a writable directory"
        ) from exc
    if settings.store == "rocksdb":
        check_local_state(settings)


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from streams.admin import ensure_topics
    from streams.topology import topic_specs

    specs = topic_specs(settings)
    created = ensure_topics(settings, specs)
    for spec in specs:
        print(f"{spec.name:<40} {'created' if spec.name in created else 'exists'}")
    return 0


def cmd_connectors(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.debezium import all_connectors
    from connectors.kafka_connect import ConnectClient

    if args.action == "secrets":
        from connectors.debezium import write_secrets_file

        path = write_secrets_file(settings)
        print(f"wrote {path} (mode 0600); the Connect worker must be able to read it there")
        return 0
    client = ConnectClient(settings.connect_url)
    secrets = Path(settings.connect_secrets_file)
    if args.action == "deploy" and settings.connect_secrets == "file" and not secrets.exists():
        # Not an error: the file lives where the Connect worker runs, maybe another host.
        print(
            f"note: {secrets} does not exist here; the Connect worker must find it on its host "
            "(`pssync connectors secrets` writes it when Connect runs here)",
            file=sys.stderr,
        )
    for connector in all_connectors(settings):
        name = connector["name"]
        if args.action == "deploy":
            changed = client.put(name, connector["config"])
            client.wait_running(name, timeout=args.timeout)
            print(f"{name}: {'deployed' if changed else 'unchanged'}, RUNNING")
        elif args.action == "delete":
            client.delete(name)
            print(f"{name}: deleted")
        else:
            status = client.status(name)
            if status is None:
                print(f"{name}: not deployed (run `pssync connectors deploy`)")
                continue
            tasks = ", ".join(f"task {t['id']} {t['state']}" for t in status.get("tasks", []))
            print(f"{name}: {status['connector']['state']}; {tasks or 'no tasks'}")
    return 0


def cmd_crm_init(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.sql import apply_schema

    apply_schema(settings.crm_db, "crm")
    print(f"CRM schema ready in database {settings.crm_db.dbname}")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from streams.demo import run_demo

    return run_demo(settings, count=args.count)


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from streams.replay import Replayer, describe

    group = args.group or settings.app_id
    replayer = Replayer(settings)
    moves = replayer.plan(group, args.topic, args.to)
    print(f"group {group}, topic {args.topic}, to {args.to}:")
    print(describe(moves))
    if not args.execute:
        print("dry run: nothing changed; add --execute (with the workers stopped) to apply")
        return 0
    replayer.execute(group, args.topic, moves)
    print("offsets moved; start the workers to replay")
    return 0


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from streams.deadletters import cli as dlq_cli

    return dlq_cli.run(args, settings)


def cmd_exceptions(args: argparse.Namespace, settings: Settings) -> int:
    from streams.deals import cli as exceptions_cli

    return exceptions_cli.run(args, settings)


def cmd_trace(args: argparse.Namespace, settings: Settings) -> int:
    from streams.deals.trace import render
    from streams.deals.trace_read import read_trace

    trace = read_trace(settings, args.deal)
    if args.json:
        entries = [e.plain() for e in trace.entries]
        found = {
            "saga_key": trace.saga_key,
            "correlation_id": trace.correlation_id,
            "entries": entries,
        }
        print(json.dumps(found, indent=2))
    else:
        print("\n".join(render(trace)))
    return 0 if trace.entries else 1


def cmd_settings(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(settings.describe(), indent=2))
    return 0


def cmd_monitor(args: argparse.Namespace, settings: Settings) -> int:
    from streams.monitor.report import cmd_monitor as run

    return run(args, settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pssync", description="CDC sync of CRM, PSA and ERP.")
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, Callable[[argparse.Namespace, Settings], int]] = {}

    p = sub.add_parser("worker", help="run the stream worker (normalize, dedupe, sink)")
    p.add_argument("--loglevel", default="info")
    commands["worker"] = cmd_worker

    sub.add_parser("topics", help="create pssync's topics if missing")
    commands["topics"] = cmd_topics

    p = sub.add_parser("connectors", help="Debezium connectors on Kafka Connect")
    p.add_argument(
        "action",
        choices=["deploy", "status", "delete", "secrets"],
        help="secrets: write PSSYNC_CONNECT_SECRETS_FILE from PSSYNC_CRM_DB_USER/PASSWORD",
    )
    p.add_argument("--timeout", type=float, default=120.0)
    commands["connectors"] = cmd_connectors

    sub.add_parser("crm-init", help="create the CRM source schema (demo / tests)")
    commands["crm-init"] = cmd_crm_init

    p = sub.add_parser("demo", help="run the CRM -> target slice on the local stack")
    p.add_argument("--count", type=int, default=200)
    commands["demo"] = cmd_demo

    p = sub.add_parser("replay", help="reset a consumer group on a topic (dry run by default)")
    p.add_argument("--topic", required=True, help="e.g. canonical.opportunity")
    p.add_argument("--to", default="earliest", help="earliest | latest | ISO datetime | offset")
    p.add_argument("--group", help="consumer group (default: PSSYNC_APP_ID)")
    p.add_argument("--execute", action="store_true", help="apply the plan (workers stopped)")
    commands["replay"] = cmd_replay

    from streams.deadletters import cli as dlq_cli

    dlq_cli.add_subcommands(sub)
    commands["dlq"] = cmd_dlq

    from streams.deals import cli as exceptions_cli

    exceptions_cli.add_subcommands(sub)
    commands["exceptions"] = cmd_exceptions

    from streams.reference import cli as reference_cli

    reference_cli.add_subcommands(sub)
    commands["reference"] = reference_cli.run

    p = sub.add_parser(
        "trace", help="one deal's saga: CRM event, commands and results per system, exception"
    )
    p.add_argument(
        "deal",
        help="CRM opportunity id (006...), saga key crm:opportunity:..., correlation id or "
        "ERP project code (PRJ-...)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable")
    commands["trace"] = cmd_trace

    p = sub.add_parser(
        "monitor",
        help="business monitors: deals without a project, failed postings, invoices not in "
        "the CRM, baseline changes",
    )
    p.add_argument("--json", action="store_true", help="machine-readable")
    p.add_argument("--only", action="append", metavar="NAME", help="one monitor (repeatable)")
    p.add_argument("--check", action="store_true", help="exit 1 when anything is past its SLO")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to read each topic")
    p.add_argument("--serve", action="store_true", help="export gauges instead of a report")
    p.add_argument("--port", type=int, default=9466, help="with --serve: the /metrics port")
    commands["monitor"] = cmd_monitor

    sub.add_parser("settings", help="print the effective settings")
    commands["settings"] = cmd_settings

    try:
        from schemas import cli as schemas_cli
    except ImportError:  # pragma: no cover - the schemas tooling is part of the package
        schemas_cli = None  # type: ignore[assignment]
    if schemas_cli is not None and hasattr(schemas_cli, "add_subcommands"):
        schemas_cli.add_subcommands(sub)
        commands["schemas"] = lambda a, s: int(schemas_cli.run(a))

    parser.set_defaults(_commands=commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        code: int = args._commands[args.command](args, settings)
        return code
    except PssyncError as exc:
        print(f"pssync: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
