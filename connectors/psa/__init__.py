"""The PSA port (`connectors.ports.Psa`) over Redmine's REST API."""

from connectors.psa.redmine import RedminePsa, psa_identifier
from connectors.psa.rest import RedmineClient

__all__ = ["RedmineClient", "RedminePsa", "psa_identifier"]
