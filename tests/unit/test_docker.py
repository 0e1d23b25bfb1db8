"""docker/compose.yaml cannot run here; keep it in step with the code and the local stack."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from connectors.debezium import crm_connector
from streams.settings import Settings
from streams.topology import topology

ROOT = Path(__file__).resolve().parents[2]


def _load_stack() -> Any:
    # docker/local/stack.py is a script, not a package module.
    spec = importlib.util.spec_from_file_location(
        "pssync_local_stack", ROOT / "docker" / "local" / "stack.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_stack = _load_stack()
APICURIO_VERSION: str = _stack.APICURIO_VERSION
POM: Path = _stack.POM


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    return data


def pom_property(name: str) -> str:
    match = re.search(rf"<{name}>([^<]+)</{name}>", POM.read_text())
    assert match, name
    return match.group(1)


def image_tag(service: str) -> str:
    return str(compose()["services"][service]["image"]).rsplit(":", 1)[1]


def pssync_env() -> dict[str, str]:
    return {k: str(v) for k, v in compose()["services"]["pssync"]["environment"].items()}


def test_topology_has_every_component() -> None:
    services = set(compose()["services"])
    assert {"kafka", "connect", "registry", "postgres", "pssync", "prometheus"} <= services
    assert {"erp", "psa"} <= services


def test_erp_and_psa_match_the_local_stack() -> None:
    erp = sys.modules["components.erp"]
    psa = sys.modules["components.psa"]
    assert image_tag("erp") == erp.TRYTON_SERIES
    assert compose()["services"]["erp"]["image"].startswith("tryton/tryton:")
    assert image_tag("psa") == psa.REDMINE_SERIES
    assert compose()["services"]["psa"]["image"].startswith("redmine:")
    pins = re.findall(
        r'"(trytond[a-z_-]*|proteus)(?:\[[a-z]+\])?>=([0-9.]+),<([0-9.]+)"',
        (ROOT / "pyproject.toml").read_text(),
    )
    assert pins, "pyproject's stack extra pins the Tryton packages"
    for name, low, high in pins:
        assert low.startswith(erp.TRYTON_SERIES), name
        assert high == "8.3", name
    # Same databases as the local stack, on the compose PostgreSQL.
    assert "erp" in _stack.SOURCE_DATABASES and "psa" in _stack.SOURCE_DATABASES
    init = (ROOT / "docker" / "postgres-init.sql").read_text()
    assert "CREATE DATABASE erp;" in init and "CREATE DATABASE psa;" in init
    assert compose()["services"]["psa"]["environment"]["REDMINE_DB_DATABASE"] == "psa"
    erp_env = compose()["services"]["erp"]["environment"]
    assert erp_env["TRYTOND_DATABASE_NAMES"] == pssync_env()["PSSYNC_ERP_DB"] == "erp"
    docker = Settings.from_env(pssync_env())
    assert docker.erp_external and docker.psa_external
    assert docker.erp_url == "http://erp:8000" and docker.psa_url == "http://psa:3000"


def test_versions_match_the_local_stack() -> None:
    assert image_tag("kafka") == pom_property("kafka.version")
    assert image_tag("connect") == pom_property("debezium.version")
    assert image_tag("registry") == APICURIO_VERSION


def test_worker_env_uses_only_known_settings() -> None:
    known = set(re.findall(r'"(PSSYNC_[A-Z_]+)"', (ROOT / "streams" / "settings.py").read_text()))
    assert set(pssync_env()) <= known, set(pssync_env()) - known


def test_same_topics_and_connector_config_as_the_code() -> None:
    local = Settings.from_env({})
    docker = Settings.from_env(pssync_env())
    assert topology(docker).routes == topology(local).routes
    assert topology(docker).canonical("opportunity") == "canonical.opportunity"
    local_conf = crm_connector(local)["config"]
    docker_conf = crm_connector(docker)["config"]
    differing = {k for k in local_conf if local_conf[k] != docker_conf[k]}
    # Only where the database is reached and where its credentials come from may differ.
    assert differing <= {"database.hostname", "database.user", "database.password"}
    assert docker_conf["database.hostname"] == "postgres"


def test_connect_resolves_the_credentials_connectors_reference() -> None:
    connect = compose()["services"]["connect"]["environment"]
    docker_conf = crm_connector(Settings.from_env(pssync_env()))["config"]
    assert docker_conf["database.password"] == "${env:PSSYNC_CRM_DB_PASSWORD}"
    assert docker_conf["database.user"] == "${env:PSSYNC_CRM_DB_USER}"
    # The variables exist where the worker resolves them, and the providers are configured
    # like the local worker's.
    assert connect["PSSYNC_CRM_DB_PASSWORD"] and connect["PSSYNC_CRM_DB_USER"]
    local = (ROOT / "docker" / "local" / "connect.properties").read_text()
    for key in (
        "CONFIG_PROVIDERS",
        "CONFIG_PROVIDERS_FILE_CLASS",
        "CONFIG_PROVIDERS_ENV_CLASS",
        "CONFIG_PROVIDERS_ENV_PARAM_ALLOWLIST_PATTERN",
    ):
        prop = key.lower().replace("_", ".")
        assert f"{prop}={connect['CONNECT_' + key]}\n" in local, prop


def test_connect_storage_topics_match_local_worker() -> None:
    local = (ROOT / "docker" / "local" / "connect.properties").read_text()
    env = compose()["services"]["connect"]["environment"]
    for key, prop in (
        ("CONFIG_STORAGE_TOPIC", "config.storage.topic"),
        ("OFFSET_STORAGE_TOPIC", "offset.storage.topic"),
        ("STATUS_STORAGE_TOPIC", "status.storage.topic"),
        ("GROUP_ID", "group.id"),
    ):
        assert f"{prop}={env[key]}\n" in local


def test_prometheus_scrapes_the_worker_metrics_port() -> None:
    prom = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"pssync:{pssync_env()['PSSYNC_WEB_PORT']}"]
    assert compose()["services"]["pssync"]["environment"]["PSSYNC_WEB_BIND"] == "0.0.0.0"


def test_registry_storage_matches_local_stack() -> None:
    env = compose()["services"]["registry"]["environment"]
    assert env["APICURIO_STORAGE_KIND"] == "sql"
    assert env["APICURIO_RULES_GLOBAL_COMPATIBILITY"] == "BACKWARD_TRANSITIVE"
