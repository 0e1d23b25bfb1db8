"""The Grafana dashboard in docker/ reads only metrics and monitors pssync has."""

from __future__ import annotations

import json
import re
from pathlib import Path

from streams.metrics import metrics

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _exported() -> set[str]:
    names = set()
    for family in metrics().registry.collect():
        names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names


def _exprs() -> list[str]:
    dash = json.loads((ROOT / "docker" / "grafana" / "dashboards" / "pssync.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_every_metric_on_the_dashboard_is_exported() -> None:
    used = {m for e in _exprs() for m in re.findall(r"\bpssync_[a-z_]+", e)}
    assert used and used <= _exported(), sorted(used - _exported())


def test_the_monitor_panels_name_real_monitors() -> None:
    from streams.monitor.checks import MONITORS

    named = {m for e in _exprs() for m in re.findall(r'monitor="([a-z_]+)"', e)}
    declared = {getattr(factory, "name", "") for factory in MONITORS}
    assert named and declared <= named
