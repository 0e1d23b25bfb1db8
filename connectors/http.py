"""How the application adapters classify HTTP failures, the same way for every application.

Transport failures (connection refused, timeouts), 429 and 5xx mean "try again later"
(ApplicationUnavailableError, retried by the command stage). Everything else is decided by
the adapter, which knows what a refusal on the merits looks like for its application.
"""

from __future__ import annotations

import httpx

from streams.errors import ApplicationUnavailableError
from streams.settings import redact_url

# Status codes that say nothing about the command itself: the application is busy or broken.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def unavailable(system: str, url: str, exc: httpx.HTTPError) -> ApplicationUnavailableError:
    """A transport failure as an error that names where the application was expected."""
    # The exception's class says what happened; its text can carry the request's URL, which
    # for some applications holds a key: only the redacted base URL goes into the message.
    return ApplicationUnavailableError(
        system, f"cannot reach {redact_url(url)} ({type(exc).__name__}); is it up?"
    )


def check_busy(system: str, resp: httpx.Response, what: str) -> None:
    """Raise ApplicationUnavailableError for an answer that means busy or broken."""
    if resp.status_code in RETRYABLE_STATUS or resp.status_code >= 500:
        raise ApplicationUnavailableError(
            system, f"{what} answered HTTP {resp.status_code}; retrying later"
        )
