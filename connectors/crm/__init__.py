"""The CRM port (`connectors.ports.Crm`): the write-back of the fields pssync owns."""

from connectors.crm.sql import SqlCrm

__all__ = ["SqlCrm"]
