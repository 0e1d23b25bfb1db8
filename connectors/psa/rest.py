"""Redmine's REST API as the integration user (API key in a header, never in a URL)."""

from __future__ import annotations

from typing import Any

import httpx

from connectors.http import check_busy, unavailable
from streams.errors import ApplicationUnavailableError, CommandRejectedError
from streams.settings import redact_url

SYSTEM = "PSA"
PAGE = 100  # Redmine's largest page


class Unprocessable(Exception):
    """HTTP 422: Redmine's validation errors, for the caller to judge (a lost race or not)."""

    def __init__(self, what: str, errors: list[str]) -> None:
        super().__init__(f"{what}: {'; '.join(errors)}")
        self.what = what
        self.errors = errors

    def taken(self) -> bool:
        """The create lost to an object that already exists (a unique name or identifier)."""
        return any("already been taken" in e for e in self.errors)

    def rejected(self, fix: str) -> CommandRejectedError:
        return CommandRejectedError(SYSTEM, f"{self.what} refused: {'; '.join(self.errors)}; {fix}")


class RedmineClient:
    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._headers = {"X-Redmine-API-Key": api_key}

    def __repr__(self) -> str:
        return f"RedmineClient({redact_url(self.url)!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> httpx.Response:
        what = f"{method} {path}"
        try:
            resp = await self._http.request(
                method, f"{self.url}{path}", params=params, json=body, headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise unavailable(SYSTEM, self.url, exc) from exc
        check_busy(SYSTEM, resp, what)
        if resp.status_code == 401:
            # A wrong key is configuration, not the command: the worker stops until fixed.
            raise ApplicationUnavailableError(
                SYSTEM,
                f"{what}: the API key was refused; check PSSYNC_PSA_API_KEY_FILE and that "
                "the REST API is enabled (Administration -> Settings -> API)",
            )
        if resp.status_code == 403:
            raise CommandRejectedError(
                SYSTEM,
                f"{what}: the integration user is not allowed to do this; grant its role the "
                "permission (see the README's PSA section) or fix the data that points here",
            )
        if resp.status_code == 422:
            try:
                errors = [str(e) for e in resp.json().get("errors", [])]
            except ValueError:
                errors = [resp.text[:200]]
            raise Unprocessable(what, errors)
        return resp

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """The decoded answer, or None when Redmine does not have (or show) the object."""
        resp = await self._send("GET", path, params=params)
        if resp.status_code == 404:
            return None
        self._expect_ok(resp, f"GET {path}")
        return resp.json()

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        resp = await self._send("POST", path, body=body)
        self._expect_ok(resp, f"POST {path}")
        return resp.json() if resp.content.strip() else None

    async def put(self, path: str, body: dict[str, Any]) -> None:
        resp = await self._send("PUT", path, body=body)
        self._expect_ok(resp, f"PUT {path}")

    async def pages(self, path: str, key: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every item of a paged list (`key` is the list's name in the answer)."""
        items: list[Any] = []
        offset = 0
        while True:
            page = await self.get(path, {**(params or {}), "offset": offset, "limit": PAGE})
            if page is None:
                return items
            batch = page.get(key, [])
            items.extend(batch)
            offset += len(batch)
            total = page.get("total_count")
            if not batch or total is None or offset >= int(total):
                return items

    @staticmethod
    def _expect_ok(resp: httpx.Response, what: str) -> None:
        if resp.status_code >= 400:
            raise CommandRejectedError(
                SYSTEM, f"{what} answered HTTP {resp.status_code}; check the request's data"
            )
