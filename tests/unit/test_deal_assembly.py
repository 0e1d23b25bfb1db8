"""Deal assembly: fires once, in any order of delivery, with duplicates and replays."""

from __future__ import annotations

import dataclasses
import json
from datetime import date
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.ports import from_json, to_json
from streams.deals.assembly import Deal, Signal, decide, fire, on_child, on_opportunity
from streams.deals.model import Child, LineItem, Milestone, Opportunity
from streams.deals.sources import Stamp
from tables import codec

KEY = "crm:opportunity:006A"
WAIT = 30.0
SERVICE_LINES = ("ARCH", "CONSULT")


def opp(
    stage: str = "closed_won", lines: tuple[str, ...] = SERVICE_LINES, name: str = "Deal"
) -> Opportunity:
    return Opportunity(
        key=KEY,
        crm_id="006A",
        correlation_id="c0ffee00-0000-5000-8000-000000000000",
        name=name,
        stage=stage,
        currency="EUR",
        customer_id="crm:account:001A",
        service_lines=lines,
    )


def line(key: str, service: str, price: str = "100.00") -> Child:
    item = LineItem(key, KEY, service, Decimal("10"), Decimal(price))
    return Child(key, KEY, line=item)


def test_fires_once_when_closed_won_and_complete() -> None:
    deal = Deal(KEY)
    deal, changed = on_opportunity(deal, 0, opp(), Stamp(1, 100.0), 1000.0, WAIT)
    assert changed and deal.closed_won_at == 100.0 and deal.wait_until == 1030.0
    assert decide(deal, 1000.0, True, changed) is Signal.NONE  # lines missing
    deal, changed = on_child(deal, 0, line("l1", "ARCH"), Stamp(2, 0))
    assert decide(deal, 1001.0, True, changed) is Signal.NONE  # CONSULT still missing
    deal, changed = on_child(deal, 0, line("l2", "CONSULT"), Stamp(3, 0))
    assert decide(deal, 1002.0, True, changed) is Signal.FIRE
    assert decide(deal, 1002.0, False, changed) is Signal.NONE  # customer not seen yet
    deal = fire(deal)
    assert decide(deal, 1003.0, True, False) is Signal.NONE


def test_late_lines_wait_a_bounded_time_then_the_deal_is_judged() -> None:
    deal, _ = on_opportunity(Deal(KEY), 0, opp(), Stamp(1, 100.0), 1000.0, WAIT)
    assert decide(deal, 1029.9, True, False) is Signal.NONE
    assert decide(deal, 1030.0, True, False) is Signal.FIRE
    assert decide(deal, 1030.0, False, False) is Signal.FIRE  # judged on what it has


def test_echo_of_written_back_fields_changes_nothing() -> None:
    deal, _ = on_opportunity(Deal(KEY), 0, opp(), Stamp(1, 100.0), 1000.0, WAIT)
    deal = fire(deal)
    # The CRM event after pssync wrote the project code: newer position, same payload.
    echoed, changed = on_opportunity(deal, 0, opp(), Stamp(2, 200.0), 1100.0, WAIT)
    assert not changed and echoed.revision == deal.revision and echoed.version == 2
    assert decide(echoed, 1100.0, True, changed) is Signal.NONE


def test_a_real_change_after_firing_is_reported() -> None:
    deal, _ = on_opportunity(Deal(KEY), 0, opp(), Stamp(1, 100.0), 1000.0, WAIT)
    deal = fire(deal)
    deal, changed = on_opportunity(deal, 0, opp(name="Renamed"), Stamp(2, 0), 1100.0, WAIT)
    assert decide(deal, 1100.0, True, changed) is Signal.CHANGED


def test_leaving_closed_won_before_firing_cancels_the_wait() -> None:
    deal, _ = on_opportunity(Deal(KEY), 0, opp(), Stamp(1, 100.0), 1000.0, WAIT)
    deal, _ = on_opportunity(deal, 0, opp(stage="negotiation"), Stamp(2, 0), 1001.0, WAIT)
    assert deal.wait_until is None and deal.closed_won_at is None
    assert decide(deal, 5000.0, True, False) is Signal.NONE


def test_child_delete_removes_the_line() -> None:
    deal, _ = on_child(Deal(KEY), 0, line("l1", "ARCH"), Stamp(5, 0))
    deal, changed = on_child(deal, 0, Child("l1", None), Stamp(-1, 0))
    assert changed and deal.lines == {}


def test_milestones_of_their_own_replace_those_in_the_deal() -> None:
    embedded = dataclasses.replace(opp(), milestones=(Milestone(f"{KEY}#0", "Kick-off"),))
    deal, _ = on_opportunity(Deal(KEY), 0, embedded, Stamp(1, 0), 0, WAIT)
    assert [m.name for m in deal.all_milestones()] == ["Kick-off"]
    own = Child("m1", KEY, milestone=Milestone("m1", "Go-live", amount=Decimal("5.00")))
    deal, changed = on_child(deal, 0, own, Stamp(2, 0))
    assert changed and [m.name for m in deal.all_milestones()] == ["Go-live"]


def test_state_round_trips_through_json() -> None:
    deal, _ = on_opportunity(Deal(KEY, 3), 3, opp(), Stamp(1, 100.0), 1000.0, WAIT)
    deal, _ = on_child(deal, 3, line("l1", "ARCH"), Stamp(2, 0))
    assert from_json(Deal, json.loads(to_json(deal))) == deal


# -- property: any interleaving, duplicates and replays -----------------------------------

# An event: ("opp", version, stage) or ("line", line key, version, service line or None).
opp_events = st.builds(
    lambda v, stage: ("opp", v, stage),
    st.integers(1, 8),
    st.sampled_from(["closed_won", "closed_won", "proposal"]),
)
line_events = st.builds(
    lambda k, v, s: ("line", k, v, s),
    st.sampled_from(["l1", "l2", "l3"]),
    st.integers(1, 8),
    st.sampled_from([*SERVICE_LINES, None]),
)
events = st.lists(st.one_of(opp_events, line_events, st.just(("tick",))), max_size=25)


def _canonical(evs: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """One payload per (entity, version): a source position always carries the same change."""
    first: dict[tuple[object, ...], tuple[object, ...]] = {}
    out = []
    for e in evs:
        ident = e[:2] if e[0] == "opp" else e[:3]
        if e[0] == "tick":
            out.append(e)
            continue
        out.append(first.setdefault(ident, e))
    return out


class Run:
    """Drives the assembly the way the stage does, recording what it signals."""

    def __init__(self) -> None:
        self.deal = Deal(KEY)
        self.now = 1000.0
        self.fires = 0
        self.changes = 0

    def feed(self, e: tuple[object, ...]) -> None:
        self.now += 1.0
        changed = False
        if e[0] == "opp":
            _, version, stage = e
            o = opp(stage=str(stage))
            self.deal, changed = on_opportunity(
                self.deal, 0, o, Stamp(int(str(version)), 50.0), self.now, WAIT
            )
        elif e[0] == "line":
            _, key, version, service = e
            child = line(str(key), str(service)) if service else Child(str(key), None)
            self.deal, changed = on_child(self.deal, 0, child, Stamp(int(str(version)), 0))
        else:
            self.now += WAIT / 2
        signal = decide(self.deal, self.now, True, changed)
        if signal is Signal.FIRE:
            self.fires += 1
            self.deal = fire(self.deal)
        elif signal is Signal.CHANGED:
            self.changes += 1


def _model(evs: list[tuple[object, ...]]) -> tuple[str | None, dict[str, str]]:
    """The newest opportunity stage and the newest state of every line, by version."""
    best_opp: tuple[int, str] | None = None
    best_line: dict[str, tuple[int, str | None]] = {}
    for e in evs:
        if e[0] == "opp":
            v, stage = int(str(e[1])), str(e[2])
            if best_opp is None or v > best_opp[0]:
                best_opp = (v, stage)
        elif e[0] == "line":
            k, v, s = str(e[1]), int(str(e[2])), e[3]
            if k not in best_line or v > best_line[k][0]:
                best_line[k] = (v, None if s is None else str(s))
    lines = {k: s for k, (_, s) in best_line.items() if s is not None}
    return (best_opp[1] if best_opp else None), lines


@settings(max_examples=300, deadline=None)
@given(events, st.randoms(use_true_random=False), st.integers(0, 3))
def test_fires_at_most_once_and_holds_the_newest_payload(
    evs: list[tuple[object, ...]], rnd: object, dup: int
) -> None:
    evs = _canonical(evs)
    delivered = list(evs)
    # Redeliveries: some events again, anywhere later.
    for _ in range(dup):
        if evs:
            delivered.insert(rnd.randint(0, len(delivered)), rnd.choice(evs))  # type: ignore[attr-defined]
    run = Run()
    for e in delivered:
        run.feed(e)
    assert run.fires <= 1
    stage, lines = _model(delivered)
    held = run.deal.opportunity.stage if run.deal.opportunity else None
    assert held == stage
    assert {k: x.service_line for k, x in run.deal.lines.items()} == lines
    # Liveness: closed-won at the end and time passes -> it has fired.
    run.feed(("tick",))
    run.feed(("tick",))
    run.feed(("tick",))
    if stage == "closed_won":
        assert run.fires == 1
    # A replay of everything (an offset reset) signals nothing at all.
    fires, changes = run.fires, run.changes
    for e in evs:
        run.feed(e)
    assert (run.fires, run.changes) == (fires, changes)


@settings(max_examples=200, deadline=None)
@given(events, st.randoms(use_true_random=False))
def test_payload_does_not_depend_on_delivery_order(
    evs: list[tuple[object, ...]], rnd: object
) -> None:
    evs = [e for e in _canonical(evs) if e[0] != "tick"]
    shuffled = list(evs)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a, b = Run(), Run()
    for e in evs:
        a.feed(e)
    for e in shuffled:
        b.feed(e)
    assert a.deal.opportunity == b.deal.opportunity
    assert a.deal.lines == b.deal.lines


def test_table_codec_matches_the_ports_json_form() -> None:
    deal, _ = on_opportunity(Deal(KEY, 1), 1, opp(), Stamp(1, 100.0), 1000.0, WAIT)
    deal, _ = on_child(deal, 1, line("l1", "ARCH"), Stamp(2, 0))
    deal = dataclasses.replace(
        deal,
        milestones={"m": Milestone("m", "Go", date(2027, 1, 2), Decimal("1.50"), None)},
    )
    raw = codec.encode(deal)
    assert raw == json.loads(to_json(deal))
    assert codec.decode(Deal, json.loads(json.dumps(raw))) == deal
