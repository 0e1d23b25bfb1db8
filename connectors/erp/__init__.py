"""The ERP port (`connectors.ports.Erp`) over Tryton's JSON-RPC."""

from connectors.erp.rpc import TrytonRpc
from connectors.erp.tryton import TrytonErp

__all__ = ["TrytonErp", "TrytonRpc"]
