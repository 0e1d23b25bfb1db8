"""Look-ups of the data a deal is checked against and built from (customers, reference sets).

Backed by views in the worker (tables/views.py) and by plain dictionaries in tests: anything
with `get(key)` and `values()`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol, TypeVar

from streams.deals.model import (
    Customer,
    Jurisdiction,
    LegalEntity,
    Person,
    Region,
    Role,
    ServiceLine,
    TaxCode,
    Template,
)

V = TypeVar("V", covariant=True)


class Lookup(Protocol[V]):
    def get(self, key: str, /) -> V | None: ...

    def values(self) -> Iterable[V]: ...


@dataclass(frozen=True)
class Reference:
    customers: Lookup[Customer]
    legal_entities: Lookup[LegalEntity]
    regions: Lookup[Region]
    jurisdictions: Lookup[Jurisdiction]
    tax_codes: Lookup[TaxCode]
    service_lines: Lookup[ServiceLine]
    templates: Lookup[Template]
    roles: Lookup[Role]
    people: Lookup[Person]

    @classmethod
    def of(cls, views: dict[str, Any]) -> Reference:
        """From the views declared in streams/deals/sources.py:VIEWS, by name."""
        return cls(
            customers=views["customer"],
            legal_entities=views["legal_entity"],
            regions=views["region"],
            jurisdictions=views["jurisdiction"],
            tax_codes=views["tax_code"],
            service_lines=views["service_line"],
            templates=views["project_template"],
            roles=views["role"],
            people=views["project_manager"],
        )

    def customer(self, key: str | None) -> Customer | None:
        return None if not key else self.customers.get(key)

    def _entity(self, code: str | None) -> LegalEntity | None:
        entity = self.legal_entities.get(code) if code else None
        return entity if entity is not None and entity.active else None

    def legal_entity(self, country: str | None, region: str | None) -> LegalEntity | None:
        """Who contracts the deal: the entity incorporated in the billing country, else the
        entity of the region the billing country belongs to, else that of the delivery
        region. Several candidates: the lowest code, so every worker picks the same one."""
        if country:
            country = country.upper()
            active = sorted(
                (e for e in self.legal_entities.values() if e.active), key=lambda e: e.key
            )
            home = [e for e in active if e.country == country]
            if home:
                return home[0]
            regions = sorted(
                (r for r in self.regions.values() if r.active and country in r.countries),
                key=lambda r: r.code,
            )
            for r in regions:
                if (entity := self._entity(r.legal_entity)) is not None:
                    return entity
        delivery = self.regions.get(region) if region else None
        if delivery is not None and delivery.active:
            return self._entity(delivery.legal_entity)
        return None

    def currencies(self, entity: LegalEntity) -> frozenset[str]:
        """The entity's book currency and the others it may contract in."""
        return frozenset({entity.base_currency, *entity.currencies})

    def tax_code(self, jurisdiction: str | None, on: date) -> TaxCode | None:
        """The jurisdiction's tax code (reference.jurisdiction), else one that applies there."""
        if not jurisdiction:
            return None
        jurisdiction = jurisdiction.upper()

        def valid(t: TaxCode | None) -> bool:
            return (
                t is not None
                and t.active
                and (t.valid_from is None or t.valid_from <= on)
                and (t.valid_to is None or on <= t.valid_to)
            )

        named = self.jurisdictions.get(jurisdiction)
        if named is not None and named.active and named.tax_code:
            chosen = self.tax_codes.get(named.tax_code)
            return chosen if valid(chosen) else None
        found = sorted(
            (t for t in self.tax_codes.values() if t.jurisdiction == jurisdiction and valid(t)),
            key=lambda t: t.code,
        )
        return found[0] if found else None

    def service_line(self, code: str) -> ServiceLine | None:
        return self.service_lines.get(code)

    def template(self, code: str | None) -> Template | None:
        template = self.templates.get(code) if code else None
        return template if template is not None and template.active else None

    def role_name(self, code: str) -> str:
        role = self.roles.get(code)
        return role.name if role is not None else code

    def knows_people(self) -> bool:
        """True when a directory of people is published at all."""
        return any(True for _ in self.people.values())

    def person(self, email: str | None) -> Person | None:
        if not email:
            return None
        person = self.people.get(email.strip().lower())
        return person if person is not None and person.active else None
