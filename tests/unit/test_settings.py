from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.settings import Settings


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


def test_table_state_is_kept_per_app_id() -> None:
    s = Settings.from_env({"PSSYNC_DATA_DIR": "/srv/pssync", "PSSYNC_APP_ID": "staging"})
    assert s.state_dir == Path("/srv/pssync/staging")
