"""The consultant's cost rate of a time entry: the ERP employee's cost price in effect on the
day worked, read from the raw `company_employee` and `company_employee_cost_price` views;
none when the ERP holds none (nothing made up)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.settings import Settings
from streams.timesheets.sources import as_of, lookups
from tables.views import GroupedView

EPOCH = date(1970, 1, 1)
DAYS = st.dates(min_value=date(2025, 1, 1), max_value=date(2025, 1, 20))


def _raw(after: dict[str, Any] | None) -> bytes:
    return json.dumps({"before": None, "after": after, "op": "c" if after else "d"}).encode()


def _days(d: date) -> int:
    return (d - EPOCH).days  # Debezium's DATE


@given(
    rows=st.lists(st.tuples(DAYS, st.sampled_from(["10.00", "20.00", "30.50"])), max_size=8).map(
        lambda rs: [(d, i, v) for i, (d, v) in enumerate(rs)]
    ),
    on=DAYS,
)
def test_as_of_is_the_latest_row_on_or_before_the_day(
    rows: list[tuple[date, int, str]], on: date
) -> None:
    # Reference: walk the days from the earliest row, each day's rows in the order recorded.
    expected = None
    if rows:
        day = min(r[0] for r in rows)
        while day <= on:
            for row in sorted(rows, key=lambda r: r[1]):
                if row[0] == day:
                    expected = row[2]
            day += timedelta(days=1)
    assert as_of(rows, on) == expected
    assert as_of(reversed(rows), on) == expected  # the order rows are read in does not matter


OPS = st.lists(st.tuples(st.integers(0, 5), st.one_of(st.none(), st.integers(1, 3))), max_size=30)


@given(ops=OPS)
def test_a_grouped_view_groups_each_key_by_its_latest_value(
    ops: list[tuple[int, int | None]],
) -> None:
    view: GroupedView[dict[str, Any]] = GroupedView(
        "t",
        json.loads,
        lambda _k, e: e.get("after"),
        lambda v: str(v["employee"]),
    )
    model: dict[str, int] = {}
    for row, employee in ops:
        key = json.dumps({"id": row})
        after = None if employee is None else {"id": row, "employee": employee}
        view.apply(key, _raw(after))
        if employee is None:
            model.pop(key, None)
        else:
            model[key] = employee
    for employee in (1, 2, 3):
        got = sorted(r["id"] for r in view.group(str(employee)))
        assert got == sorted(json.loads(k)["id"] for k, e in model.items() if e == employee)


def test_the_cost_rate_follows_party_employee_and_the_day_worked() -> None:
    views = lookups(Settings.from_env({}), json.loads)
    person = "psa:user:ann"
    assert views.cost_rate(person, "2025-06-01") is None  # no party
    views.parties.apply('{"id":8}', _raw({"id": 8, "code": person}))
    assert views.cost_rate(person, "2025-06-01") is None  # no employee
    views.employees.apply('{"id":3}', _raw({"id": 3, "party": 8, "company": 1}))
    assert views.cost_rate(person, "2025-06-01") is None  # no cost price: none, not 0
    views.cost_prices.apply(
        '{"id":1}',
        _raw({"id": 1, "employee": 3, "date": _days(date(2025, 1, 1)), "cost_price": "60"}),
    )
    views.cost_prices.apply(
        '{"id":2}',
        _raw({"id": 2, "employee": 3, "date": _days(date(2025, 7, 1)), "cost_price": "70.125"}),
    )
    # Another employee's price is not ann's.
    views.cost_prices.apply(
        '{"id":5}',
        _raw({"id": 5, "employee": 4, "date": _days(date(2025, 1, 1)), "cost_price": "9"}),
    )
    assert views.cost_rate(person, "2024-12-31") is None  # before the first price
    assert views.cost_rate(person, "2025-06-30") == Decimal("60.00")
    assert views.cost_rate(person, "2025-07-01") == Decimal("70.13")  # the contract's scale
    views.cost_prices.apply('{"id":2}', None)  # the later price deleted in the ERP
    assert views.cost_rate(person, "2025-07-01") == Decimal("60.00")
    assert views.cost_rate(None, "2025-07-01") is None
