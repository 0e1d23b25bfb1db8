"""The demo's declared scenario fits the reference file and itself (no stack needed)."""

from __future__ import annotations

from pathlib import Path

from streams import demo_q2c as q2c
from streams.reference.model import load

DEFAULT = Path(__file__).resolve().parents[2] / "schemas" / "reference" / "default.json"


def _tasks(service_line: str) -> set[str]:
    data = load(DEFAULT)
    template = data.sets["project_template"][
        data.sets["service_line"][service_line]["project_template"]
    ]
    return {t["name"] for phase in template["phases"] for t in phase["tasks"]}


def test_one_deal_gets_time_and_an_invoice_and_another_a_change_order() -> None:
    [timed] = [d for d in q2c.DEALS if d.role == q2c.TIME_AND_INVOICE]
    [changed] = [d for d in q2c.DEALS if d.role == q2c.CHANGED]
    for deal in (timed, changed):
        assert not deal.invalid_because and deal.billing == "Time and Materials"
    # Time is logged on tasks the saga makes for the deal's service lines.
    tasks = set().union(*(_tasks(code) for code, _, _ in timed.lines))
    assert {task for task, _, _ in q2c.TIME} <= tasks
    assert {ok for _, _, ok in q2c.TIME} == {True, False}  # approved and not
    # The change order sells service lines the reference file knows.
    known = set(load(DEFAULT).sets["service_line"])
    assert {code for code, _, _ in q2c.CHANGE_ORDER_LINES} <= known
    # Exactly one deal is invalid on purpose (it parks).
    assert [d.invalid_because for d in q2c.DEALS if d.invalid_because] == ["currency_not_allowed"]
