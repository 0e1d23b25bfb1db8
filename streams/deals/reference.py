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
    EntityCurrencies,
    LegalEntity,
    Person,
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
    entity_currencies: Lookup[EntityCurrencies]
    tax_codes: Lookup[TaxCode]
    service_lines: Lookup[ServiceLine]
    templates: Lookup[Template]
    people: Lookup[Person]

    @classmethod
    def of(cls, views: dict[str, Any]) -> Reference:
        """From the views declared in streams/deals/sources.py:VIEWS, by name."""
        return cls(
            customers=views["customer"],
            legal_entities=views["legal_entity"],
            entity_currencies=views["entity_currencies"],
            tax_codes=views["tax_code"],
            service_lines=views["service_line"],
            templates=views["project_template"],
            people=views["project_manager"],
        )

    def customer(self, key: str | None) -> Customer | None:
        return None if not key else self.customers.get(key)

    def legal_entity(self, country: str | None, region: str | None) -> LegalEntity | None:
        """The active entity incorporated in the billing country, else the region's one.

        Several candidates: the lowest id, so every worker picks the same one.
        """
        active = sorted((e for e in self.legal_entities.values() if e.active), key=lambda e: e.key)
        if country:
            by_country = [e for e in active if e.country == country.upper()]
            if by_country:
                return by_country[0]
        if region:
            by_region = [e for e in active if (e.region or "").lower() == region.lower()]
            if by_region:
                return by_region[0]
        return None

    def currencies(self, entity: LegalEntity) -> frozenset[str]:
        """The entity's book currency and the others it may contract in."""
        extra = self.entity_currencies.get(entity.key)
        return frozenset({entity.base_currency, *(extra.currencies if extra else ())})

    def tax_code(self, jurisdiction: str | None, on: date) -> TaxCode | None:
        if not jurisdiction:
            return None
        found = sorted(
            (
                t
                for t in self.tax_codes.values()
                if t.active
                and t.jurisdiction == jurisdiction.upper()
                and (t.valid_from is None or t.valid_from <= on)
                and (t.valid_to is None or on <= t.valid_to)
            ),
            key=lambda t: t.code,
        )
        return found[0] if found else None

    def service_line(self, code: str) -> ServiceLine | None:
        return self.service_lines.get(code)

    def template(self, code: str | None) -> Template | None:
        return None if not code else self.templates.get(code)

    def person(self, email: str | None) -> Person | None:
        if not email:
            return None
        person = self.people.get(email.strip().lower())
        return person if person is not None and person.active else None
