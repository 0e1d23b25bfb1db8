"""Tryton JSON-RPC as the integration user: one login, then the session on every call.

`common.db.login` gives (uid, token); every later call sends `Authorization: Session
base64(login:uid:token)`, which is about ten times faster than the password on every call.
A session the server has expired (HTTP 401) is replaced by one new login, shared by all
calls waiting on it, and the call is sent again.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx

from connectors.http import check_busy, unavailable
from streams.errors import ApplicationUnavailableError, CommandRejectedError
from streams.settings import redact_url

SYSTEM = "ERP"


class TrytonRpc:
    def __init__(
        self,
        url: str,
        database: str,
        login: str,
        password: str,
        *,
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.login = login
        self._password = password
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._auth: dict[str, str] | None = None
        self._login_lock = asyncio.Lock()
        # The user's preferences (company, employee, language): the context of every call.
        self.context: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"TrytonRpc({redact_url(self.url)!r}, {self.database!r}, {self.login!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, method: str, params: list[Any], auth: dict[str, str]) -> Any:
        endpoint = f"{self.url}/{self.database}/rpc/"
        try:
            resp = await self._http.post(
                endpoint,
                json={"id": 1, "method": method, "params": params},
                headers=auth,
            )
        except httpx.HTTPError as exc:
            raise unavailable(SYSTEM, self.url, exc) from exc
        check_busy(SYSTEM, resp, f"{method} on {redact_url(self.url)}")
        if resp.status_code in (401, 403) and method == "common.db.login":
            raise self._login_refused()
        if resp.status_code == 401:
            raise _SessionExpired
        if resp.status_code >= 400:
            # 403 on a model method: it is not exposed over RPC (or not to this user).
            raise CommandRejectedError(
                SYSTEM, f"{method} answered HTTP {resp.status_code}; the ERP does not allow it"
            )
        answer = resp.json()
        error = answer.get("error")
        if error:
            raise _classify(method, error, self)
        return answer.get("result")

    def _login_refused(self) -> ApplicationUnavailableError:
        # Credentials are configuration, not the command: the worker stops until fixed.
        return ApplicationUnavailableError(
            SYSTEM,
            f"login as {self.login!r} on database {self.database!r} refused; check "
            "PSSYNC_ERP_USER and the password in PSSYNC_ERP_PASSWORD_FILE",
        )

    async def _session(self, stale: dict[str, str] | None) -> dict[str, str]:
        async with self._login_lock:
            # Another call may have logged in again while this one waited.
            if self._auth is not None and self._auth is not stale:
                return self._auth
            result = await self._post(
                "common.db.login", [self.login, {"password": self._password}, "en"], {}
            )
            if not isinstance(result, list) or len(result) < 2:
                raise self._login_refused()
            uid, token = result[0], result[1]
            raw = base64.b64encode(f"{self.login}:{uid}:{token}".encode()).decode()
            auth = {"Authorization": f"Session {raw}"}
            self.context = await self._post("model.res.user.get_preferences", [True, {}], auth)
            self._auth = auth
            return auth

    async def call(self, method: str, *params: Any) -> Any:
        auth = self._auth or await self._session(None)
        try:
            return await self._post(method, list(params), auth)
        except _SessionExpired:
            auth = await self._session(auth)
            try:
                return await self._post(method, list(params), auth)
            except _SessionExpired:
                raise self._login_refused() from None

    async def ensure_session(self) -> None:
        """Log in unless a session exists (it also loads `context`)."""
        if self._auth is None:
            await self._session(None)

    async def model(self, model: str, method: str, *args: Any) -> Any:
        """`model.<model>.<method>(*args, context)` with the user's context."""
        await self.ensure_session()
        return await self.call(f"model.{model}.{method}", *args, self.context)


class _SessionExpired(Exception):
    pass


def _classify(method: str, error: Any, rpc: TrytonRpc) -> Exception:
    """Tryton's error list as one of pssync's application errors."""
    kind = error[0] if isinstance(error, list) and error else None
    detail = error[1] if isinstance(error, list) and len(error) > 1 else None
    if kind in ("UserError", "UserWarning") and isinstance(detail, list) and detail:
        # (message, description, ...): the ERP's own words about what is wrong.
        parts = [str(p) for p in detail[:2] if isinstance(p, str) and p]
        if kind == "UserWarning":
            parts = [str(p) for p in detail[1:3] if isinstance(p, str) and p]
        return CommandRejectedError(SYSTEM, f"{method} refused: {' - '.join(parts)}")
    if kind == "LoginException":
        return rpc._login_refused()
    if kind == "ConcurrencyException":
        return ApplicationUnavailableError(SYSTEM, f"{method}: concurrent change; retrying later")
    # Anything else is a server fault; only its first line: a traceback can carry data.
    first = str(kind or error).splitlines()[0][:200] if (kind or error) else "unknown error"
    return ApplicationUnavailableError(
        SYSTEM, f"{method} failed in the server ({first}); see the ERP's log"
    )
