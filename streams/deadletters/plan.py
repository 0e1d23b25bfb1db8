"""What a rerun would do, and the per-group summary `pssync dlq list` prints (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from streams.deadletters.ledger import Rerun, rerun_for
from streams.deadletters.model import DeadLetter
from streams.deadletters.selection import format_age


@dataclass(frozen=True)
class Plan:
    todo: list[DeadLetter] = field(default_factory=list)
    already: list[tuple[DeadLetter, Rerun]] = field(default_factory=list)
    # On a DLQ topic but without pssync's context headers: nowhere to send them back to.
    unroutable: list[DeadLetter] = field(default_factory=list)


def build_plan(letters: Iterable[DeadLetter], reruns: Mapping[str, Rerun]) -> Plan:
    plan = Plan()
    seen: set[str] = set()
    for letter in letters:
        ref = str(letter.ref)
        if ref in seen:
            continue
        seen.add(ref)
        rerun = rerun_for(letter, reruns)
        if rerun is not None:
            plan.already.append((letter, rerun))
        elif letter.origin is None:
            plan.unroutable.append(letter)
        else:
            plan.todo.append(letter)
    return plan


@dataclass(frozen=True)
class Group:
    stage: str
    error_class: str
    count: int
    rerun: int
    oldest: datetime
    newest: datetime


def summarize(letters: Iterable[DeadLetter], reruns: Mapping[str, Rerun]) -> list[Group]:
    """Dead letters by stage and error class, biggest groups first."""
    by: dict[tuple[str, str], list[DeadLetter]] = {}
    for letter in letters:
        by.setdefault((letter.stage, letter.error_class), []).append(letter)
    groups = [
        Group(
            stage,
            error_class,
            len(members),
            sum(rerun_for(m, reruns) is not None for m in members),
            min(m.failed_at for m in members),
            max(m.failed_at for m in members),
        )
        for (stage, error_class), members in by.items()
    ]
    return sorted(groups, key=lambda g: (g.stage, -g.count, g.error_class))


def _when(t: datetime, now: datetime) -> str:
    return f"{t.isoformat(timespec='seconds')} ({format_age(now - t)} ago)"


def _truncate(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def format_groups(groups: list[Group], now: datetime) -> str:
    if not groups:
        return "no dead letters"
    rows = [("stage", "error class", "count", "rerun", "oldest", "newest")]
    rows += [
        (
            g.stage,
            g.error_class,
            str(g.count),
            str(g.rerun),
            _when(g.oldest, now),
            _when(g.newest, now),
        )
        for g in groups
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {2, 3}
    return "\n".join(
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    )


def format_records(
    letters: list[DeadLetter], reruns: Mapping[str, Rerun], message_width: int = 60
) -> str:
    lines = []
    for d in letters:
        rerun = rerun_for(d, reruns)
        state = f"rerun {rerun.rerun_at} -> {rerun.landed}" if rerun else "not rerun"
        if d.rerun_of:
            state += f"; itself a rerun of {d.rerun_of}"
        lines.append(
            f"{d.ref}  <- {d.origin or '?'}  {d.error_class}: "
            f"{_truncate(d.error_message, message_width)}  "
            f"failed {d.failed_at.isoformat(timespec='seconds')}  {state}"
        )
    return "\n".join(lines)


def format_plan(plan: Plan, message_width: int = 60, max_skipped: int = 20) -> str:
    lines = []
    if plan.todo:
        lines.append(f"{len(plan.todo)} dead letter(s) to rerun:")
        lines += [
            f"  {d.ref} -> {d.origin}  {d.error_class}: {_truncate(d.error_message, message_width)}"
            for d in plan.todo
        ]
    skipped = [
        f"  skip {d.ref}: already rerun {r.rerun_at} -> {r.landed}" for d, r in plan.already
    ] + [f"  skip {d.ref}: no pssync.dlq.* headers, origin unknown" for d in plan.unroutable]
    lines += skipped[:max_skipped]
    if len(skipped) > max_skipped:
        lines.append(f"  ... and {len(skipped) - max_skipped} more skipped")
    if not plan.todo:
        what = f" ({len(plan.already)} selected already rerun)" if plan.already else ""
        lines.insert(0, f"nothing to rerun{what}")
    return "\n".join(lines)
