"""One exception tree for pssync. Every message says what to do about it."""

from __future__ import annotations


class PssyncError(Exception):
    """Base of every error pssync raises on purpose."""


class ConfigError(PssyncError):
    """A setting is missing or malformed; the message names the variable to fix."""


class StackError(PssyncError):
    """A local stack component failed to install, start or answer."""


class KafkaUnavailableError(PssyncError):
    """Kafka did not answer or answered "try again" (a broker restarting, a leader moving)."""


class ConnectError(PssyncError):
    """Kafka Connect refused or failed a request."""


class RegistryError(PssyncError):
    """The schema registry refused or failed a request."""


class SchemaError(PssyncError):
    """An Avro schema or record does not fit its contract."""


class SerdeError(PssyncError):
    """Bytes on a topic are not valid Confluent wire-format Avro."""


class BadEventError(PssyncError):
    """A raw change event cannot be turned into a canonical event (goes to the DLQ)."""


class BadCommandError(PssyncError):
    """A saga command cannot be applied as it is: unknown step, or a payload that is not the
    step's spec (goes to `dlq.command`; the saga that issued it must be fixed)."""


class DeliveryError(PssyncError):
    """Kafka did not acknowledge records pssync produced; nothing of the batch is acked."""


class SinkError(PssyncError):
    """A target system rejected a write."""


class DeadLetterError(PssyncError):
    """A dead letter cannot be found, read or rerun (`pssync dlq`)."""


class ApplicationError(PssyncError):
    """An application pssync writes to through its API (ERP, PSA, CRM) failed a command."""

    def __init__(self, system: str, message: str) -> None:
        super().__init__(f"{system}: {message}")
        self.system = system


class ApplicationUnavailableError(ApplicationError):
    """The application did not answer, or answered busy (timeout, 429, 5xx): retried later."""


class CommandRejectedError(ApplicationError):
    """The application refused the command on its merits; retrying as is cannot succeed.

    The workflow parks as a business exception naming the step and this message; fixing the
    data (or the application's setup) and `pssync exceptions retry` resume it.
    """


class DealError(PssyncError):
    """A deal cannot be turned into the command of a saga step: a business exception."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ReferenceDataError(PssyncError):
    """The reference data file is invalid, or its entries cannot be published as they are."""


class NotFoundError(PssyncError):
    """What a command named does not exist in pssync's topics (a wrong or unknown id)."""
