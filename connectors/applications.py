"""The application ports (connectors/ports.py) pssync writes to, composed from settings here only.

Each port is built on the first command for its application, not when the worker starts: a
worker that never receives commands for an application needs none of its credentials (the
slice, the soak), and one that does stops with a message naming the setting to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams.errors import ConfigError
from streams.settings import Settings

PortFactory = Callable[[], Any]


def _with_secret(build: Callable[[], Any], variable: str, path: Path, what: str) -> Any:
    try:
        return build()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {what} from {variable}={str(path)!r} ({exc.strerror or exc}); point "
            f"it at the file holding it (`make up` writes .stack/secrets/{path.name})"
        ) from exc


def _erp(settings: Settings) -> Any:
    from connectors.erp import TrytonErp

    return _with_secret(
        lambda: TrytonErp.from_settings(settings),
        "PSSYNC_ERP_PASSWORD_FILE",
        settings.erp_password_file,
        "the ERP integration user's password",
    )


def _psa(settings: Settings) -> Any:
    from connectors.psa import RedminePsa

    return _with_secret(
        lambda: RedminePsa.from_settings(settings),
        "PSSYNC_PSA_API_KEY_FILE",
        settings.psa_api_key_file,
        "the PSA integration user's API key",
    )


def _crm(settings: Settings) -> Any:
    from connectors.crm import SqlCrm

    return SqlCrm.from_settings(settings)


def port_factories(settings: Settings) -> dict[str, PortFactory]:
    """Application (`erp`, `psa`, `crm`) -> how to build its port."""
    return {
        "erp": lambda: _erp(settings),
        "psa": lambda: _psa(settings),
        "crm": lambda: _crm(settings),
    }
