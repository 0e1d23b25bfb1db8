"""Kafka Connect REST client: create-or-update connectors, read their status."""

from __future__ import annotations

import time
from typing import Any

import httpx

from streams.errors import ConnectError
from streams.settings import redact_url

TRANSIENT = {409, 500, 502, 503, 504}
RETRIES = 5


class ConnectClient:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        # For messages only: a password in the URL never reaches a log.
        self.url = redact_url(url.rstrip("/"))

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        for attempt in range(RETRIES + 1):
            try:
                resp = self._http.request(method, path, **kw)
            except httpx.HTTPError as exc:
                raise ConnectError(
                    f"cannot reach Kafka Connect at {self.url} ({exc}); check "
                    "PSSYNC_CONNECT_URL and that the worker is up (make status)"
                ) from exc
            # 409: the Connect group is rebalancing; 5xx: Connect 4.x fails a config
            # validation now and then with an internal NullPointerException. Both pass.
            if resp.status_code not in TRANSIENT or attempt == RETRIES:
                break
            time.sleep(min(8.0, 0.5 * 2**attempt))
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("message", resp.text)
            except ValueError:
                detail = resp.text
            raise ConnectError(
                f"Kafka Connect {method} {path} -> HTTP {resp.status_code}: {detail}"
            )
        return resp.json() if resp.content else None

    def put(self, name: str, config: dict[str, str]) -> bool:
        """Create or update (PUT is idempotent). Returns True if anything changed."""
        current = self.config(name)
        if current is not None and {k: v for k, v in current.items() if k != "name"} == config:
            # Deploying again after fixing what failed it (a missing schema, a password)
            # restarts what failed: Connect never restarts a failed task by itself.
            return self.restart_failed(name)
        try:
            self._call("PUT", f"/connectors/{name}/config", json=config)
        except ConnectError as exc:
            if any("${" in v for v in config.values()):
                raise ConnectError(
                    f"{exc}; if the Connect worker has no config providers it cannot resolve "
                    "the ${file:...}/${env:...} credential references: give it "
                    "config.providers=file,env (docker/local/connect.properties) and restart it; "
                    "with `file`, PSSYNC_CONNECT_SECRETS_FILE must be inside the folder its "
                    "config.providers.file.param.allowed.paths names"
                ) from exc
            raise
        return True

    def restart_failed(self, name: str) -> bool:
        """Restart the connector's failed instance and tasks; True if any had failed."""
        if "FAILED" not in self._states(name):
            return False
        self._call("POST", f"/connectors/{name}/restart?includeTasks=true&onlyFailed=true")
        # The restart is asynchronous: until it begins, the status still says FAILED.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "FAILED" in self._states(name):
            time.sleep(0.5)
        return True

    def _states(self, name: str) -> list[str | None]:
        status = self.status(name) or {}
        return [status.get("connector", {}).get("state")] + [
            t.get("state") for t in status.get("tasks", [])
        ]

    def config(self, name: str) -> dict[str, str] | None:
        found: dict[str, str] | None = self._call("GET", f"/connectors/{name}/config")
        return found

    def status(self, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._call("GET", f"/connectors/{name}/status")
        return found

    def names(self) -> list[str]:
        found: list[str] = self._call("GET", "/connectors") or []
        return found

    def delete(self, name: str) -> None:
        self._call("DELETE", f"/connectors/{name}")

    def wait_running(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the connector and all its tasks run; fail fast with the task trace."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            status = self.status(name)
            if status:
                states = [status["connector"]["state"]] + [
                    t["state"] for t in status.get("tasks", [])
                ]
                failed = [t for t in status.get("tasks", []) if t["state"] == "FAILED"]
                if status["connector"]["state"] == "FAILED" or failed:
                    trace = (failed[0] if failed else status["connector"]).get("trace", "")
                    first = trace.splitlines()[0] if trace else "no trace"
                    hint = ""
                    if "${" in first:
                        hint = (
                            "; the worker did not resolve a ${file:...}/${env:...} reference: "
                            "give it config.providers=file,env (docker/local/connect.properties) "
                            "and restart it, and check PSSYNC_CONNECT_SECRETS_FILE"
                        )
                    elif "No table filters found" in trace:
                        hint = (
                            "; none of the tables it captures (table.include.list) exists in "
                            "its database yet: create the application's schema first (for the "
                            "CRM, connectors/sql/crm.sql, which `pssync demo` applies), then "
                            "deploy again"
                        )
                    raise ConnectError(
                        f"connector {name} failed: {first}{hint}"
                        f"; see the Connect log and `pssync connectors status`"
                    )
                if status.get("tasks") and all(s == "RUNNING" for s in states):
                    return status
            time.sleep(0.5)
        raise ConnectError(f"connector {name} not RUNNING after {timeout:.0f}s: {status}")
