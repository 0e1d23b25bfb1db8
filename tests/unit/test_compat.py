"""The resolution checker names each breaking change; the diff lists field changes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from schemas import contracts
from schemas.compat import breaking_changes, can_read, problems
from schemas.diff import diff


def record(*fields: dict[str, Any], name: str = "R") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields)}


def f(name: str, type_: Any, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **kw}


def enum(*symbols: str, **kw: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "E", "symbols": list(symbols), **kw}


OLD = record(f("id", "string"), f("hours", "double"), f("n", "int"))


def one(messages: list[str]) -> str:
    assert len(messages) == 1, messages
    return messages[0]


def test_identical_and_promotions_are_compatible() -> None:
    assert can_read(OLD, OLD)
    new = record(f("id", "bytes"), f("hours", "double"), f("n", "long"))
    assert can_read(new, OLD)
    assert not can_read(OLD, new)  # long cannot narrow back to int


def test_added_field_with_default_is_backward_and_forward() -> None:
    new = record(*OLD["fields"], f("note", ["null", "string"], default=None))
    assert breaking_changes(new, [(1, OLD)], "FULL_TRANSITIVE") == []


def test_added_field_without_default_breaks_backward() -> None:
    new = record(*OLD["fields"], f("cost_center", "string"))
    msg = one(breaking_changes(new, [(1, OLD)], "BACKWARD"))
    assert "new field `cost_center` has no default" in msg
    assert breaking_changes(new, [(1, OLD)], "FORWARD") == []


def test_removed_field_is_backward_but_not_forward() -> None:
    new = record(f("id", "string"), f("n", "int"))
    assert breaking_changes(new, [(1, OLD)], "BACKWARD_TRANSITIVE") == []
    msg = one(breaking_changes(new, [(1, OLD)], "FULL"))
    assert "field `hours` removed without default" in msg


def test_type_change_names_both_types() -> None:
    new = record(f("id", "string"), f("hours", "string"), f("n", "int"))
    msg = one(breaking_changes(new, [(1, OLD)], "BACKWARD"))
    assert "field `hours` changed type from double to string" in msg


def test_optional_type_change_inside_union() -> None:
    old = record(f("amount", ["null", "double"], default=None))
    new = record(f("amount", ["null", "string"], default=None))
    msg = one(breaking_changes(new, [(1, old)], "BACKWARD"))
    assert "field `amount` changed type from null | double to null | string" in msg


def test_making_a_field_optional_is_backward_not_forward() -> None:
    old = record(f("x", "string"))
    new = record(f("x", ["null", "string"], default=None))
    assert can_read(new, old)
    assert "changed type from string to null | string: readers on the old" in one(
        breaking_changes(new, [(1, old)], "FORWARD")
    )


def test_enum_symbol_removed_without_default() -> None:
    old = record(f("state", enum("a", "b", "c")))
    new = record(f("state", enum("a", "b")))
    msg = one(breaking_changes(new, [(1, old)], "BACKWARD"))
    assert "`state`" in msg and "`c` removed" in msg


def test_enum_default_absorbs_removed_and_added_symbols() -> None:
    old = record(f("state", enum("a", "b", "unknown", default="unknown")))
    new = record(f("state", enum("a", "unknown", "d", default="unknown")))
    assert breaking_changes(new, [(1, old)], "FULL") == []


def test_enum_symbol_added_breaks_forward_without_default() -> None:
    old = record(f("state", enum("a")))
    new = record(f("state", enum("a", "b")))
    assert breaking_changes(new, [(1, old)], "BACKWARD") == []
    assert "`b` added" in one(breaking_changes(new, [(1, old)], "FORWARD"))


def test_nested_paths_and_arrays() -> None:
    line = record(f("amount", "double"), name="Line")
    old = record(f("lines", {"type": "array", "items": line}))
    line2 = record(f("amount", "string"), name="Line")
    new = record(f("lines", {"type": "array", "items": line2}))
    [p] = problems(new, old)
    assert p.path == "lines[].amount" and p.kind == "type"


def test_record_rename_is_reported_and_alias_fixes_it() -> None:
    old = record(f("a", "int"), name="Old")
    assert [p.kind for p in problems(record(f("a", "int"), name="New"), old)] == ["name"]
    assert can_read({**record(f("a", "int"), name="New"), "aliases": ["Old"]}, old)


def test_field_alias_counts_as_the_old_field() -> None:
    new = record(f("id", "string"), f("worked", "double", aliases=["hours"]), f("n", "int"))
    assert can_read(new, OLD)


def test_transitive_checks_every_version() -> None:
    v1 = record(f("a", "int"))
    v2 = record(f("a", "int"), f("b", "int", default=0))
    v3 = record(f("b", "int", default=0), f("a", "string", default="x"))
    history = [(1, v1), (2, v2)]
    assert "vs versions 1, 2" in one(breaking_changes(v3, history, "BACKWARD_TRANSITIVE"))
    assert "vs version 2" in one(breaking_changes(v3, history, "BACKWARD"))
    assert breaking_changes(v3, history, "NONE") == []


def test_recursive_types_terminate() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [f("v", "int"), f("next", ["null", "Node"], default=None)],
    }
    assert can_read(node, copy.deepcopy(node))


@pytest.mark.parametrize("name", contracts.entities())
def test_shipped_contracts_read_themselves(name: str) -> None:
    assert problems(contracts.schema(name), contracts.schema(name)) == []


def test_diff_lists_field_changes() -> None:
    old = record(f("id", "string"), f("hours", "double"), f("s", enum("a", "b")))
    new = record(
        f("id", "string"),
        f("hours", "string"),
        f("s", enum("a", "c")),
        f("note", ["null", "string"], default=None),
    )
    assert diff(old, new) == [
        "~ hours: type double -> string",
        "+ note: null | string (default null)",
        "~ s: symbols added c; symbols removed b",
    ]
    assert diff(old, record(f("id", "string"))) == ["- hours: double", "- s: enum E"]
    assert diff(old, old) == []


def test_diff_reaches_into_the_shipped_opportunity() -> None:
    old = contracts.schema("opportunity")
    data = old["fields"][1]["type"][1]
    data["fields"] = [x for x in data["fields"] if x["name"] != "billing_milestones"]
    lines = diff(old, contracts.schema("opportunity"))
    assert "+ data.billing_milestones: array<record BillingMilestone> (default [])" in lines
    assert "+ data.billing_milestones[].name: string (no default)" in lines
