"""The reference file: validated against the reference contracts and itself; published as a
diff against what the reference topics hold."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema
from fastavro.validation import validate
from hypothesis import given
from hypothesis import strategies as st

from schemas import contracts
from streams.errors import ReferenceDataError
from streams.reference.model import SECTIONS, ReferenceData, load, parse
from streams.reference.publish import Held, plan, record

DEFAULT = Path(__file__).resolve().parents[2] / "schemas" / "reference" / "default.json"


def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DEFAULT.read_text())
    return loaded


def parsed(d: dict[str, Any]) -> ReferenceData:
    return parse(json.dumps(d), Path("ref.json"))


def test_default_set_is_valid_and_complete_for_the_demo() -> None:
    data = load(DEFAULT)
    assert 3 <= len(data.sets["service_line"]) <= 4
    assert 2 <= len(data.sets["region"]) <= 3
    currencies = {
        c for e in data.sets["legal_entity_profile"].values() for c in e["allowed_currencies"]
    }
    assert currencies == {"EUR", "USD", "GBP"}
    for line in data.sets["service_line"].values():
        assert line["project_template"] in data.sets["project_template"]
    roles = {"PM", "ARCHITECT", "CONSULTANT"}
    assert roles <= set(data.sets["role"])
    # The ERP's one company has a legal entity, so its company events map.
    assert data.legal_entity_for_company("1") is not None


def test_every_entry_becomes_a_valid_reference_event() -> None:
    data = load(DEFAULT)
    steps = plan(data, {})
    assert len(steps) == sum(len(v) for v in data.sets.values())
    now = datetime(2026, 11, 30, tzinfo=UTC)
    for step in steps:
        event = record(data, step, now)
        assert validate(event, parse_schema(contracts.schema(step.name)))
        assert event["envelope"]["entity_version"] == data.version
    # Published in dependency order: roles and templates before what names them.
    order = [s.name for s in steps]
    assert order.index("role") < order.index("project_template") < order.index("service_line")


def _broken(path: str, value: Any) -> dict[str, Any]:
    d = copy.deepcopy(doc())
    section, index, field = path.split(".")
    d[section][int(index)][field] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "service_lines.0.project_template",
            "TPL-NONE",
            r"service_lines 'CONSULT': project_template 'TPL-NONE' is not in project_templates",
        ),
        ("service_lines.0.default_billing_type", "barter", "does not fit the service_line"),
        ("regions.0.legal_entity", "LC-FR", "legal_entity 'LC-FR' is not in legal_entities"),
        ("regions.0.countries", ["Germany"], "'Germany' is not an ISO 3166-1"),
        ("legal_entities.0.allowed_currencies", ["USD"], "base_currency EUR must be in allowed"),
        ("legal_entities.1.erp_company", "1", "ERP company 1 is given to two legal entities"),
        ("legal_entities.0.base_currency", "euro", "currency 'euro' is not an ISO 4217"),
        ("jurisdictions.0.code", "Germany", "ISO 3166-1 country"),
        ("project_templates.0.placeholder_roles", ["QA"], "role 'QA' is not in roles"),
        ("project_templates.0.phases", [], "needs phases, each with tasks"),
        ("roles.1.code", "PM", "'PM' is listed twice"),
        ("roles.0.colour", "red", r"unknown field\(s\) colour"),
        ("roles.0.name", None, "does not fit the role contract"),
    ],
)
def test_invalid_files_name_the_entry_and_the_fix(path: str, value: Any, message: str) -> None:
    with pytest.raises(ReferenceDataError, match=message):
        parsed(_broken(path, value))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 0}, "'version' must be a positive integer"),
        ({"version": "2"}, "'version' must be a positive integer"),
        ({"colours": []}, r"unknown section\(s\) colours"),
        ({"roles": {"PM": "x"}}, "roles must be a list"),
    ],
)
def test_invalid_file_shape(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ReferenceDataError, match=message):
        parsed({**doc(), **change})


def test_missing_required_field_and_unreadable_file(tmp_path: Path) -> None:
    d = doc()
    del d["regions"][0]["name"]
    with pytest.raises(ReferenceDataError, match=r"regions\[0\]: required field 'name'"):
        parsed(d)
    with pytest.raises(ReferenceDataError, match="PSSYNC_REFERENCE_FILE"):
        load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ReferenceDataError, match="not valid JSON"):
        load(tmp_path / "bad.json")


def _held(data: ReferenceData) -> dict[str, dict[str, Held]]:
    return {
        n: {c: Held(data.version, e) for c, e in data.sets[n].items()} for n in SECTIONS.values()
    }


def test_loading_the_same_file_again_publishes_nothing() -> None:
    data = load(DEFAULT)
    assert plan(data, _held(data)) == []


def test_changes_need_a_higher_version_and_removals_become_deletes() -> None:
    old = load(DEFAULT)
    d = doc()
    d["regions"][0]["name"] = "EMEA (renamed)"
    del d["jurisdictions"][-1]
    with pytest.raises(ReferenceDataError, match="raise 'version' above what the topics hold"):
        plan(parsed(d), _held(old))
    d["version"] = old.version + 1
    steps = plan(parsed(d), _held(old))
    assert [(s.name, s.code, s.op) for s in steps] == [
        ("region", "EMEA", "update"),
        ("jurisdiction", "US", "delete"),
    ]
    event = record(parsed(d), steps[1], datetime(2026, 11, 30, tzinfo=UTC))
    assert event["data"] is None and event["envelope"]["op"] == "delete"


def _apply(held: dict[str, dict[str, Held]], data: ReferenceData) -> None:
    """What a compacted topic keeps after a load: the newest record per key."""
    for step in plan(data, held):
        held.setdefault(step.name, {})[step.code] = Held(data.version, step.data)


_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["rename_region", "drop_jurisdiction", "add_role", "retime_task", "same"]),
        st.integers(min_value=0, max_value=5),
    ),
    min_size=1,
    max_size=8,
)


@given(_EDITS)
def test_successive_loads_converge_to_each_file(edits: list[tuple[str, int]]) -> None:
    held: dict[str, dict[str, Held]] = {}
    d = doc()
    for version, (edit, n) in enumerate(edits, start=1):
        d = copy.deepcopy(d)
        d["version"] = version
        if edit == "rename_region":
            d["regions"][n % len(d["regions"])]["name"] = f"Region {version}"
        elif edit == "drop_jurisdiction" and len(d["jurisdictions"]) > 1:
            d["jurisdictions"].pop(n % len(d["jurisdictions"]))
        elif edit == "add_role":
            d["roles"].append({"code": f"R{version}", "name": f"Role {version}"})
        elif edit == "retime_task":
            d["project_templates"][0]["phases"][0]["tasks"][0]["hours"] = n + 0.5
        data = parsed(d)
        _apply(held, data)
        live = {
            name: {code: h.data for code, h in codes.items() if h.data is not None}
            for name, codes in held.items()
        }
        assert {n: v for n, v in live.items() if v} == {n: v for n, v in data.sets.items() if v}
        assert plan(data, held) == []  # loading the same file again publishes nothing


def test_the_local_erp_has_what_the_default_reference_data_names() -> None:
    import importlib.util

    path = DEFAULT.parents[2] / "docker" / "local" / "components" / "erp_setup.py"
    spec = importlib.util.spec_from_file_location("erp_setup_for_test", path)
    assert spec is not None and spec.loader is not None
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    data = load(DEFAULT)
    taxes = {j["tax_code"] for j in data.sets["jurisdiction"].values()}
    assert taxes <= set(setup.TAXES)
    currencies = {
        c for e in data.sets["legal_entity_profile"].values() for c in e["allowed_currencies"]
    }
    assert currencies <= {"EUR", *setup.CURRENCIES}
