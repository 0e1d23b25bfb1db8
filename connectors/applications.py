"""The application ports (connectors/ports.py) pssync writes to, built from settings here only.

Each application's adapter lives in its own package (`connectors.erp`, `connectors.psa`,
`connectors.crm`) exposing `from_settings(settings)`. A worker applies the commands of the
applications whose adapter is installed; the others' commands wait on their topic.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from streams.settings import COMMAND_TARGETS, Settings

log = logging.getLogger(__name__)

ADAPTERS = {target: f"connectors.{target}" for target in COMMAND_TARGETS}


def build_ports(settings: Settings) -> dict[str, Any]:
    """target -> its port (Erp, Psa or Crm), for every application with an adapter."""
    ports: dict[str, Any] = {}
    for target, module_name in ADAPTERS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # the adapter exists but one of its imports does not: a broken install
            log.warning("no %s adapter (%s): its saga commands wait", target, module_name)
            continue
        ports[target] = module.from_settings(settings)
    return ports
