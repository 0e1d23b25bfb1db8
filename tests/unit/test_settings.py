from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.settings import Settings, redact_url


def test_defaults_point_at_local_stack() -> None:
    s = Settings.from_env({})
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.registry_url == "http://127.0.0.1:8081/apis/ccompat/v7"
    assert s.crm_db.dbname == "crm" and s.crm_topic_prefix == "crm"


def test_ports_flow_into_urls() -> None:
    s = Settings.from_env(
        {"PSSYNC_KAFKA_PORT": "19092", "PSSYNC_REGISTRY_PORT": "18081", "PSSYNC_PG_PORT": "15432"}
    )
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.registry_url.startswith("http://127.0.0.1:18081/")
    assert s.crm_db.port == 15432 and ":15432/" in s.target_url


def test_bad_integer_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="PSSYNC_PARTITIONS"):
        Settings.from_env({"PSSYNC_PARTITIONS": "many"})


def test_non_postgres_target_is_refused() -> None:
    with pytest.raises(ConfigError, match="PSSYNC_TARGET_URL"):
        Settings.from_env({"PSSYNC_TARGET_URL": "mysql://x"})


def test_describe_masks_secrets() -> None:
    s = Settings.from_env({"PSSYNC_REGISTRY_PASSWORD": "s3cret", "PSSYNC_REGISTRY_USER": "u"})
    assert s.describe()["registry_password"] == "***"


def test_store_defaults_to_rocksdb_and_memory_stays_available() -> None:
    assert Settings.from_env({}).store == "rocksdb"
    assert Settings.from_env({"PSSYNC_STORE": "memory"}).store == "memory"
    assert Settings.from_env({"PSSYNC_STORE": "RocksDB"}).store == "rocksdb"


def test_unknown_store_names_the_variable_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"PSSYNC_STORE='redis'.*rocksdb.*memory"):
        Settings.from_env({"PSSYNC_STORE": "redis"})


def test_fetch_size_defaults_to_8_mib_and_refuses_less_than_a_record_may_need() -> None:
    assert Settings.from_env({}).fetch_max_bytes == 8 * 1024 * 1024
    assert Settings.from_env({"PSSYNC_FETCH_MAX_BYTES": "2097152"}).fetch_max_bytes == 2097152
    with pytest.raises(ConfigError, match="PSSYNC_FETCH_MAX_BYTES=4096"):
        Settings.from_env({"PSSYNC_FETCH_MAX_BYTES": "4096"})


def test_the_broker_holds_a_fetch_50_ms_by_default_and_1_to_30000_ms_when_set() -> None:
    assert Settings.from_env({}).fetch_max_wait_ms == 50
    assert Settings.from_env({"PSSYNC_FETCH_MAX_WAIT_MS": "500"}).fetch_max_wait_ms == 500
    for bad in ("0", "30001"):
        with pytest.raises(ConfigError, match=f"PSSYNC_FETCH_MAX_WAIT_MS={bad}"):
            Settings.from_env({"PSSYNC_FETCH_MAX_WAIT_MS": bad})


def test_records_prepared_ahead_default_to_32768_and_zero_turns_it_off() -> None:
    assert Settings.from_env({}).ahead_records == 32_768
    assert Settings.from_env({"PSSYNC_AHEAD_RECORDS": "0"}).ahead_records == 0
    with pytest.raises(ConfigError, match="PSSYNC_AHEAD_RECORDS=-1"):
        Settings.from_env({"PSSYNC_AHEAD_RECORDS": "-1"})


def test_table_state_is_kept_per_app_id() -> None:
    s = Settings.from_env({"PSSYNC_DATA_DIR": "/srv/pssync", "PSSYNC_APP_ID": "staging"})
    assert s.state_dir == Path("/srv/pssync/staging")


def test_describe_masks_every_secret() -> None:
    env = {
        "PSSYNC_REGISTRY_URL": "https://ruser:urlpw1@registry:8443/apis/ccompat/v7",
        "PSSYNC_CONNECT_URL": "https://cuser:urlpw2@connect:8083",
        "PSSYNC_TARGET_URL": "postgresql+psycopg://app:urlpw3@db:5432/target",
        "PSSYNC_CRM_DB_PASSWORD": "dbpw4",
        "PSSYNC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "PSSYNC_KAFKA_SASL_MECHANISM": "PLAIN",
        "PSSYNC_KAFKA_SASL_USERNAME": "kuser",
        "PSSYNC_KAFKA_SASL_PASSWORD": "saslpw5",
        "PSSYNC_MASKING_KEY": "maskkey6-0123456789",
    }
    s = Settings.from_env(env)
    shown = s.describe()
    text = json.dumps(shown)
    for secret in ("urlpw1", "urlpw2", "urlpw3", "dbpw4", "saslpw5", "maskkey6"):
        assert secret not in text, secret
        assert secret not in repr(s), secret
    assert shown["registry_url"] == "https://ruser:***@registry:8443/apis/ccompat/v7"
    assert shown["target_url"] == "postgresql+psycopg://app:***@db:5432/target"
    assert shown["crm_db.password"] == "***" and shown["crm_db.user"] == "postgres"
    assert shown["kafka_security.sasl_password"] == "***"
    assert shown["kafka_security.sasl_username"] == "kuser"
    assert shown["masking_key"] == "***"
    # An unset secret shows as empty, so users can tell "not set" from "set".
    assert Settings.from_env({}).describe()["registry_password"] == ""


def test_pssync_settings_command_prints_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    from streams.cli import cmd_settings

    s = Settings.from_env({"PSSYNC_TARGET_URL": "postgresql://u:topsecret@h/db"})
    cmd_settings(argparse.Namespace(), s)
    out = capsys.readouterr().out
    assert "topsecret" not in out and "u:***@h" in out


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:8081/x", "http://127.0.0.1:8081/x"),
        ("https://user@h/x", "https://user@h/x"),
        ("https://user:p%40ss@h:1/x?q=1", "https://user:***@h:1/x?q=1"),
        ("postgresql://:pw@h/db", "postgresql://:***@h/db"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_command_limits_per_application() -> None:
    s = Settings.from_env(
        {"PSSYNC_ERP_CONCURRENCY": "2", "PSSYNC_ERP_RATE": "0.5", "PSSYNC_COMMAND_RETRY_FOR": "30"}
    )
    assert (s.command_limits("erp").concurrency, s.command_limits("erp").rate) == (2, 0.5)
    assert s.command_limits("psa") == Settings().psa_commands
    assert s.command_retry_for == 30.0
    assert s.describe()["erp_commands.rate"] == "0.5"


@pytest.mark.parametrize(
    ("name", "value"),
    [("PSSYNC_PSA_RATE", "0"), ("PSSYNC_CRM_CONCURRENCY", "0"), ("PSSYNC_ERP_RATE", "fast")],
)
def test_command_limits_refuse_nonsense(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_tables_keep_no_standby_copies_unless_asked() -> None:
    assert Settings.from_env({}).standby_replicas == 0
    assert Settings.from_env({"PSSYNC_STANDBY_REPLICAS": "1"}).standby_replicas == 1
    with pytest.raises(ConfigError, match="PSSYNC_STANDBY_REPLICAS=-1"):
        Settings.from_env({"PSSYNC_STANDBY_REPLICAS": "-1"})
