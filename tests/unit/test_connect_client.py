"""What `pssync connectors deploy` says when a connector's task fails."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.kafka_connect import ConnectClient
from streams.errors import ConnectError


def _failing(trace: str) -> ConnectClient:
    client = ConnectClient("http://127.0.0.1:1")
    status: dict[str, Any] = {
        "connector": {"state": "RUNNING"},
        "tasks": [{"id": 0, "state": "FAILED", "trace": trace}],
    }
    client.status = lambda name: status  # type: ignore[method-assign]
    return client


def test_a_source_without_its_tables_says_to_create_the_schema_first() -> None:
    trace = (
        "org.apache.kafka.connect.errors.ConnectException: Unable to create filtered "
        "publication pssync_crm for \n\tat io.debezium...\nCaused by: "
        "io.debezium.DebeziumException: No table filters found for filtered publication"
    )
    with pytest.raises(ConnectError, match="create the application's schema first"):
        _failing(trace).wait_running("crm-postgres", timeout=5)


def test_an_unresolved_secret_reference_names_the_config_providers() -> None:
    trace = "org.postgresql.util.PSQLException: password ${file:/s:crm.password} rejected"
    with pytest.raises(ConnectError, match=r"config\.providers=file,env"):
        _failing(trace).wait_running("crm-postgres", timeout=5)


def test_deploying_an_unchanged_connector_again_restarts_what_failed() -> None:
    client = ConnectClient("http://127.0.0.1:1")
    status: dict[str, Any] = {
        "connector": {"state": "RUNNING"},
        "tasks": [{"id": 0, "state": "FAILED", "trace": "No table filters found"}],
    }
    client.status = lambda name: status  # type: ignore[method-assign]
    config = {"connector.class": "io.debezium.connector.postgresql.PostgresConnector"}
    calls: list[tuple[str, str]] = []
    client.config = lambda name: {"name": name, **config}  # type: ignore[method-assign]

    def restart(method: str, path: str, **kw: object) -> None:
        calls.append((method, path))
        status["tasks"][0]["state"] = "RUNNING"

    client._call = restart  # type: ignore[method-assign]
    assert client.put("crm-postgres", config)
    assert calls == [("POST", "/connectors/crm-postgres/restart?includeTasks=true&onlyFailed=true")]


def test_deploying_an_unchanged_running_connector_does_nothing() -> None:
    client = ConnectClient("http://127.0.0.1:1")
    config = {"connector.class": "x"}
    client.config = lambda name: {"name": name, **config}  # type: ignore[method-assign]
    client.status = lambda name: {  # type: ignore[method-assign]
        "connector": {"state": "RUNNING"},
        "tasks": [{"id": 0, "state": "RUNNING"}],
    }
    assert not client.put("crm-postgres", config)
