"""Views: latest value per key, tombstones and null data delete, aliases follow their key."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from streams.deals.model import Customer
from streams.deals.sources import customer_aliases, customer_of
from tables.views import View


def _view() -> View[Customer]:
    return View("canonical.customer", json.loads, customer_of, customer_aliases)


def _event(data: dict[str, Any] | None) -> bytes:
    return json.dumps({"envelope": {"entity_version": 1}, "data": data}).encode()


def test_latest_value_wins_and_aliases_follow() -> None:
    view = _view()
    view.apply(
        "crm:account:1",
        _event({"customer_id": "crm:account:1", "name": "Old", "crm_account_id": "1"}),
    )
    # The customer's key became the ERP number: the same account, reachable by its CRM id.
    view.apply("crm:account:1", None)
    view.apply("C-100", _event({"customer_id": "C-100", "name": "New", "crm_account_id": "1"}))
    found = view.get("crm:account:1")
    assert found is not None and found.name == "New" and found.key == "C-100"
    assert view.get("C-100") == found
    assert len(view) == 1 and view.version == 3


def test_null_data_deletes_and_drops_the_alias() -> None:
    view = _view()
    view.apply("C-1", _event({"customer_id": "C-1", "name": "A", "crm_account_id": "9"}))
    view.apply("C-1", _event(None))
    assert view.get("C-1") is None and view.get("crm:account:9") is None


def test_wait_ready_times_out_until_caught_up() -> None:
    view = _view()
    assert asyncio.run(view.wait_ready(timeout=0.1)) is False
    view.ready.set()
    assert asyncio.run(view.wait_ready(timeout=0.1)) is True
