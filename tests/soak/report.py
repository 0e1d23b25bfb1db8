"""The one table a soak prints: what was done to the pipeline and whether it held."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tests.soak.profiles import FaultKind, Profile
from tests.soak.verify import Findings
from tests.soak.workers import Crash


@dataclass(frozen=True)
class Outcome:
    profile: Profile
    seed: int
    run_id: str
    injected: Counter[FaultKind]
    findings: Findings
    crashes: list[Crash]
    problems: list[str]  # recoveries that failed, workload errors, poison not delivered
    converge_seconds: float | None  # None: not converged within the profile's bound
    wall_seconds: float

    @property
    def failed(self) -> bool:
        planned = self.profile.planned()
        return (
            not self.findings.ok
            or bool(self.crashes)
            or bool(self.problems)
            or self.converge_seconds is None
            or any(self.injected[k] < n for k, n in planned.items())
        )


def _verdict(good: bool) -> str:
    return "ok" if good else "FAIL"


def table(o: Outcome) -> str:
    f = o.findings
    rows: list[tuple[str, str, str, str, str]] = []
    for kind, planned in o.profile.planned().items():
        if planned:
            done = o.injected[kind]
            rows.append((f"faults: {kind.value}", str(planned), str(done),
                         _verdict(done >= planned), ""))
    rows += [
        ("source changes (committed)", "", str(f.source_changes), "", ""),
        ("captured on the raw topic", str(f.source_changes), str(f.captured),
         _verdict(f.captured == f.source_changes), ""),
        ("canonical events (distinct ids)", str(f.captured), str(f.canonical_distinct),
         _verdict(f.canonical_distinct == f.captured),
         f"{f.canonical_messages} messages, {f.canonical_messages - f.canonical_distinct} "
         "redelivered"),
        ("lost", "0", str(f.lost), _verdict(f.lost == 0),
         f"not captured {f.not_captured}, no canonical event {f.lost_events}, "
         f"not in target {f.lost_rows}"),
        ("wrong", "0", str(f.wrong), _verdict(f.wrong == 0),
         f"events {f.wrong_events}, target rows {f.wrong_rows}"),
        ("doubled effects", "0", str(f.doubled), _verdict(f.doubled == 0),
         f"extra events {f.doubled_events}, rows at a wrong version {f.wrong_versions}"),
    ]
    for stage in ("normalize", "sink"):
        exp, found = f.dlq_expected.get(stage, 0), f.dlq_found.get(stage, 0)
        good = not f.dlq_missing.get(stage) and not f.dlq_unexpected.get(stage)
        rows.append((f"DLQ {stage} (poison by marker)", str(exp), str(found), _verdict(good),
                     f"missing {f.dlq_missing.get(stage, 0)}, unexpected "
                     f"{f.dlq_unexpected.get(stage, 0)}, redelivered "
                     f"{f.dlq_copies.get(stage, 0)}"))
    errors = Counter(c.error.split(":")[0] for c in o.crashes)
    rows.append(("worker crashes", "0", str(len(o.crashes)), _verdict(not o.crashes),
                 ", ".join(f"{n}x {e}" for e, n in errors.most_common())))
    if o.problems:
        rows.append(("other problems", "0", str(len(o.problems)), "FAIL", o.problems[0][:60]))
    bound = f"<= {o.profile.converge_timeout:.0f}s"
    took = "not converged" if o.converge_seconds is None else f"{o.converge_seconds:.1f}s"
    rows.append(("time to converge after last fault", bound, took,
                 _verdict(o.converge_seconds is not None), ""))
    rows.append(("RESULT", "", "", "FAIL" if o.failed else "PASS",
                 f"wall clock {o.wall_seconds / 60:.1f} min"))

    head = ("what", "expected", "found", "verdict", "note")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(r: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    title = f"pssync soak: profile {o.profile.name}, seed {o.seed}, run {o.run_id}"
    out = [title, line, fmt(head), line]
    out += [fmt(r) for r in rows[:-1]]
    out += [line, fmt(rows[-1]), line]
    return "\n".join(out)
