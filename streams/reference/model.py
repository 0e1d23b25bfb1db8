"""The reference data file: what it holds, how it is validated, and the records it yields.

The file is JSON (schemas/reference/default.json by default, PSSYNC_REFERENCE_FILE): a
`version` that grows with every change, and one list per reference set, each entry shaped
like the set's contract (`data` of schemas/avro/ref_<set>.avsc; fields with a default may be
left out). Entries are validated against the contract and against each other (a service
line names an existing template, a region an existing legal entity, ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastavro.validation import ValidationError, validate

from schemas import contracts
from streams.errors import ReferenceDataError

# File section -> reference set (contract), in the order they are published: what others
# point to comes first.
SECTIONS = {
    "roles": "role",
    "project_templates": "project_template",
    "service_lines": "service_line",
    "legal_entities": "legal_entity_profile",
    "regions": "region",
    "jurisdictions": "jurisdiction",
}
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_JURISDICTION = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")


def data_schema(name: str) -> dict[str, Any]:
    """The `data` record of a reference contract (the non-null branch of its union)."""
    data_field = contracts.schema(name)["fields"][1]
    branch: dict[str, Any] = data_field["type"][1]
    return branch


@cache
def _parsed_data(name: str) -> Any:
    from fastavro import parse_schema

    return parse_schema(data_schema(name))


def _with_defaults(name: str, entry: dict[str, Any], where: str) -> dict[str, Any]:
    schema = data_schema(name)
    known = {f["name"] for f in schema["fields"]}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ReferenceDataError(
            f"{where}: unknown field(s) {', '.join(unknown)}; {name} entries have "
            f"{', '.join(sorted(known))}"
        )
    out = {}
    for f in schema["fields"]:
        if f["name"] in entry:
            out[f["name"]] = entry[f["name"]]
        elif "default" in f:
            out[f["name"]] = json.loads(json.dumps(f["default"]))
        else:
            raise ReferenceDataError(f"{where}: required field {f['name']!r} is missing")
    return out


@dataclass(frozen=True)
class ReferenceData:
    """A validated reference file: entries by set and code."""

    path: Path
    version: int
    sets: dict[str, dict[str, dict[str, Any]]]

    def entries(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(set, code, entry) in publishing order."""
        for name in SECTIONS.values():
            for code, entry in self.sets.get(name, {}).items():
                yield name, code, entry

    def get(self, name: str, code: str) -> dict[str, Any] | None:
        return self.sets.get(name, {}).get(code)

    def legal_entity_for_company(self, erp_company: str) -> dict[str, Any] | None:
        """The legal entity profile whose ERP company is `erp_company`."""
        for entry in self.sets.get("legal_entity_profile", {}).values():
            if entry.get("erp_company") == erp_company:
                return entry
        return None

    def jurisdictions_of_tax(self, tax_code: str) -> list[str]:
        """Codes of the jurisdictions that apply `tax_code`, sorted."""
        return sorted(
            code
            for code, entry in self.sets.get("jurisdiction", {}).items()
            if entry.get("tax_code") == tax_code
        )

    def region_of(self, legal_entity: str) -> str | None:
        """Code of the first region whose deals the legal entity contracts."""
        for code, entry in self.sets.get("region", {}).items():
            if entry.get("legal_entity") == legal_entity:
                return code
        return None


def parse(text: str, path: Path) -> ReferenceData:
    """Validate a reference file's text; every problem is a ReferenceDataError naming it."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReferenceDataError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ReferenceDataError(f"{path}: the file must be a JSON object with a version")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ReferenceDataError(
            f"{path}: 'version' must be a positive integer, raised with every change "
            f"(got {version!r})"
        )
    unknown = sorted(set(doc) - set(SECTIONS) - {"version", "description"})
    if unknown:
        raise ReferenceDataError(
            f"{path}: unknown section(s) {', '.join(unknown)}; sections are {', '.join(SECTIONS)}"
        )
    sets: dict[str, dict[str, dict[str, Any]]] = {}
    for section, name in SECTIONS.items():
        items = doc.get(section, [])
        if not isinstance(items, list):
            raise ReferenceDataError(f"{path}: {section} must be a list of entries")
        by_code: dict[str, dict[str, Any]] = {}
        for i, raw in enumerate(items):
            where = f"{path}: {section}[{i}]"
            if not isinstance(raw, dict):
                raise ReferenceDataError(f"{where} is not an object")
            entry = _with_defaults(name, raw, where)
            code = entry["code"]
            where = f"{path}: {section} {code!r}"
            try:
                validate(entry, _parsed_data(name), raise_errors=True)
            except ValidationError as exc:
                raise ReferenceDataError(
                    f"{where} does not fit the {name} contract: {exc}"
                ) from None
            if not isinstance(code, str) or not code.strip() or code != code.strip():
                raise ReferenceDataError(f"{where}: code must be non-empty, without spaces")
            if code in by_code:
                raise ReferenceDataError(f"{where} is listed twice; codes are unique per set")
            by_code[code] = entry
        sets[name] = by_code
    data = ReferenceData(path, version, sets)
    _check_links(data)
    return data


def _fail(where: str, problem: str) -> None:
    raise ReferenceDataError(f"{where}: {problem}")


def _check_links(data: ReferenceData) -> None:
    """Entries that point at each other must find each other; codes must be well formed."""
    p = data.path
    for code, t in data.sets["project_template"].items():
        for role in t["placeholder_roles"] + [
            task["role"] for ph in t["phases"] for task in ph["tasks"] if task["role"]
        ]:
            if role not in data.sets["role"]:
                _fail(f"{p}: project_templates {code!r}", f"role {role!r} is not in roles")
        if not t["phases"] or any(not ph["tasks"] for ph in t["phases"]):
            _fail(f"{p}: project_templates {code!r}", "needs phases, each with tasks")
        if any(task["hours"] < 0 for ph in t["phases"] for task in ph["tasks"]):
            _fail(f"{p}: project_templates {code!r}", "task hours cannot be negative")
    for code, s in data.sets["service_line"].items():
        template = s["project_template"]
        if template is None or template not in data.sets["project_template"]:
            _fail(
                f"{p}: service_lines {code!r}",
                f"project_template {template!r} is not in project_templates; every service "
                "line needs the template its projects start from",
            )
    for code, e in data.sets["legal_entity_profile"].items():
        where = f"{p}: legal_entities {code!r}"
        if not _COUNTRY.match(e["country"]):
            _fail(where, f"country {e['country']!r} is not an ISO 3166-1 alpha-2 code")
        for currency in [e["base_currency"], *e["allowed_currencies"]]:
            if not _CURRENCY.match(currency):
                _fail(where, f"currency {currency!r} is not an ISO 4217 code")
        if e["base_currency"] not in e["allowed_currencies"]:
            _fail(where, f"base_currency {e['base_currency']} must be in allowed_currencies")
    companies = [e["erp_company"] for e in data.sets["legal_entity_profile"].values()]
    twice = {c for c in companies if c is not None and companies.count(c) > 1}
    if twice:
        _fail(str(p), f"ERP company {sorted(twice)[0]} is given to two legal entities")
    for code, r in data.sets["region"].items():
        where = f"{p}: regions {code!r}"
        if (
            r["legal_entity"] is not None
            and r["legal_entity"] not in data.sets["legal_entity_profile"]
        ):
            _fail(where, f"legal_entity {r['legal_entity']!r} is not in legal_entities")
        for country in r["countries"]:
            if not _COUNTRY.match(country):
                _fail(where, f"country {country!r} is not an ISO 3166-1 alpha-2 code")
    for code in data.sets["jurisdiction"]:
        if not _JURISDICTION.match(code):
            _fail(
                f"{p}: jurisdictions {code!r}",
                "code must be an ISO 3166-1 country (DE) or ISO 3166-2 subdivision (US-NY)",
            )


def load(path: Path) -> ReferenceData:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ReferenceDataError(
            f"cannot read the reference file {path} ({exc.strerror}); set PSSYNC_REFERENCE_FILE "
            "or pass --file"
        ) from None
    return parse(text, Path(path))
