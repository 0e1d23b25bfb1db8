"""`pssync monitor`: the business monitors as a report (table or JSON) or as an exporter.

The report reads every monitor's topics up to their ends now and prints the findings. The
exporter (`--serve`) follows the same topics on one thread and refreshes the gauge
`pssync_monitor_findings{monitor, late}` every PSSYNC_MONITOR_INTERVAL seconds on its own
/metrics port, so alerts need no worker to own a particular partition.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

from prometheus_client import start_http_server

from schemas.registry import Registry
from schemas.serde import Decoder
from streams.metrics import metrics
from streams.monitor.checks import MONITORS, Monitor
from streams.monitor.model import Finding
from streams.settings import Settings
from streams.topology import topology
from tables.views import ViewReader

log = logging.getLogger(__name__)


def build(settings: Settings, only: Sequence[str] = ()) -> list[Monitor]:
    decode = Decoder(Registry(settings).schema_by_id).decode
    topo = topology(settings)
    monitors = [factory(topo, settings, decode) for factory in MONITORS]
    unknown = set(only) - {m.name for m in monitors}
    if unknown:
        from streams.errors import ConfigError

        names = ", ".join(m.name for m in monitors)
        raise ConfigError(f"no monitor named {', '.join(sorted(unknown))}; there are: {names}")
    return [m for m in monitors if not only or m.name in only]


def collect(monitors: Sequence[Monitor], now: datetime) -> dict[str, list[Finding]]:
    found = {}
    for m in monitors:
        findings = m.findings(now)
        findings.sort(key=lambda f: (not f.late, f.since or now, f.key))
        found[m.name] = findings
    return found


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def print_table(
    monitors: Sequence[Monitor], found: dict[str, list[Finding]], now: datetime
) -> None:
    for m in monitors:
        findings = found[m.name]
        late = sum(f.late for f in findings)
        print(f"== {m.title} ({m.name}): {len(findings)} found, {late} past SLO")
        for f in findings:
            flag = "LATE" if f.late else "ok  "
            print(f"  {flag} {_age(f.age(now)):>6}  {f.key:<40} {f.summary}")
        print()


def cmd_monitor(args: argparse.Namespace, settings: Settings) -> int:
    monitors = build(settings, args.only or ())
    if args.serve:
        return _serve(settings, monitors, args.port)
    # Monitors over several topics: one reader per topic set keeps each view independent.
    for m in monitors:
        ViewReader(settings, m.views()).load(args.timeout)
    now = datetime.now(UTC)
    found = collect(monitors, now)
    if args.json:
        report = {
            "at": now.isoformat(timespec="seconds"),
            "monitors": [
                {
                    "name": m.name,
                    "title": m.title,
                    "found": len(found[m.name]),
                    "late": sum(f.late for f in found[m.name]),
                    "findings": [f.plain(now) for f in found[m.name]],
                }
                for m in monitors
            ],
        }
        print(json.dumps(report, indent=2))
    else:
        print_table(monitors, found, now)
    late = sum(f.late for fs in found.values() for f in fs)
    return 1 if args.check and late else 0


def _serve(settings: Settings, monitors: Sequence[Monitor], port: int) -> int:
    readers = [ViewReader(settings, m.views()) for m in monitors]
    for r in readers:
        r.start()
    gauge = metrics().monitor_findings
    start_http_server(port, registry=metrics().registry)
    log.warning("monitor: exporting pssync_monitor_findings on :%d/metrics", port)
    stop = threading.Event()
    try:
        while not stop.wait(settings.monitor_interval):
            for name, findings in collect(monitors, datetime.now(UTC)).items():
                late = sum(f.late for f in findings)
                gauge.labels(name, "true").set(late)
                gauge.labels(name, "false").set(len(findings) - late)
    except KeyboardInterrupt:
        pass
    finally:
        for r in readers:
            r.stop()
    return 0
