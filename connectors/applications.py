"""The application ports (connectors/ports.py) pssync writes to, composed from settings here only.

Each port is built on the first command for its application, not when the worker starts: a
worker that never receives commands for an application needs none of its credentials (the
slice, the soak), and one that does stops with a message naming the setting to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streams.errors import ConfigError
from streams.settings import Settings

PortFactory = Callable[[], Any]


def _erp(settings: Settings) -> Any:
    from connectors.erp import TrytonErp

    try:
        return TrytonErp.from_settings(settings)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the ERP integration user's password from PSSYNC_ERP_PASSWORD_FILE="
            f"{str(settings.erp_password_file)!r} ({exc.strerror or exc}); point it at the file "
            "holding that password (`make up` writes .stack/secrets/erp-pssync.password)"
        ) from exc


def port_factories(settings: Settings) -> dict[str, PortFactory]:
    """Application (`erp`, `psa`, `crm`) -> how to build its port. Applications without an
    adapter yet are absent: their commands wait on their topic."""
    return {"erp": lambda: _erp(settings)}
