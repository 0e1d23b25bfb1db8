"""Kafka and registry client security: one config per protocol, the same for every client."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from schemas.registry import client_config
from streams.errors import ConfigError
from streams.security import faust_credentials, kafka_config
from streams.settings import Settings


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A self-signed certificate and its key; the certificate doubles as the CA file."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "client.pem", d / "client.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=pssync-test",
        ],
        check=True,
        capture_output=True,
    )
    return {"ca": str(cert), "cert": str(cert), "key": str(key)}


SASL = {
    "PSSYNC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "PSSYNC_KAFKA_SASL_USERNAME": "pssync",
    "PSSYNC_KAFKA_SASL_PASSWORD": "s3cret",
}


def test_plaintext_is_the_default() -> None:
    s = Settings.from_env({})
    assert kafka_config(s) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "plaintext",
    }
    assert faust_credentials(s) is None


def test_sasl_plaintext() -> None:
    s = Settings.from_env({"PSSYNC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", **SASL})
    assert kafka_config(s) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "sasl_plaintext",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "pssync",
        "sasl.password": "s3cret",
    }
    creds = faust_credentials(s)
    assert isinstance(creds, SASLCredentials)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "pssync",
        "sasl_plain_password": "s3cret",
        "ssl_context": None,
    }


def test_ssl_with_client_certificate(tls_files: dict[str, str]) -> None:
    s = Settings.from_env(
        {
            "PSSYNC_KAFKA_SECURITY_PROTOCOL": "ssl",
            "PSSYNC_KAFKA_SSL_CAFILE": tls_files["ca"],
            "PSSYNC_KAFKA_SSL_CERTFILE": tls_files["cert"],
            "PSSYNC_KAFKA_SSL_KEYFILE": tls_files["key"],
        }
    )
    assert kafka_config(s) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "ssl",
        "ssl.ca.location": tls_files["ca"],
        "ssl.certificate.location": tls_files["cert"],
        "ssl.key.location": tls_files["key"],
    }
    creds = faust_credentials(s)
    assert isinstance(creds, SSLCredentials)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SSL"
    ctx = auth["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    # The CA file was loaded: its one certificate is among the trusted ones.
    assert any(c["subject"] == ((("commonName", "pssync-test"),),) for c in ctx.get_ca_certs())


def test_sasl_ssl_uses_system_cas_without_cafile() -> None:
    s = Settings.from_env({"PSSYNC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", **SASL})
    conf = kafka_config(s, **{"group.id": "g"})
    assert conf["security.protocol"] == "sasl_ssl" and conf["sasl.username"] == "pssync"
    assert "ssl.ca.location" not in conf and conf["group.id"] == "g"
    auth = credentials_to_aiokafka_auth(faust_credentials(s))
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)


def test_every_client_uses_the_one_builder() -> None:
    # No client may build its own connection settings: grep the code for stray configs.
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [
        *root.glob("streams/**/*.py"),
        *root.glob("connectors/**/*.py"),
        *root.glob("bench/*.py"),
        *root.glob("tests/**/*.py"),
    ]:
        text = path.read_text()
        if '"bootstrap.servers"' in text and path.name not in ("security.py", "test_security.py"):
            offenders.append(str(path.relative_to(root)))
    assert offenders == []


@pytest.mark.parametrize(
    ("env", "fix"),
    [
        ({"PSSYNC_KAFKA_SECURITY_PROTOCOL": "TLS"}, "use one of PLAINTEXT, SSL"),
        ({"PSSYNC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs PSSYNC_KAFKA_SASL_MECHANISM"),
        (
            {
                "PSSYNC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                **SASL,
                "PSSYNC_KAFKA_SASL_MECHANISM": "GSSAPI",
            },
            "got 'GSSAPI'",
        ),
        (
            {
                "PSSYNC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "PSSYNC_KAFKA_SASL_MECHANISM": "PLAIN",
                "PSSYNC_KAFKA_SASL_USERNAME": "u",
            },
            "needs both PSSYNC_KAFKA_SASL_USERNAME and PSSYNC_KAFKA_SASL_PASSWORD",
        ),
        (SASL, "does not use SASL; set it to SASL_SSL"),
        ({"PSSYNC_KAFKA_SSL_CAFILE": "/etc/hostname"}, "does not use TLS; set it to SSL"),
        (
            {"PSSYNC_KAFKA_SECURITY_PROTOCOL": "SSL", "PSSYNC_KAFKA_SSL_CERTFILE": "/etc/hostname"},
            "needs both PSSYNC_KAFKA_SSL_CERTFILE and PSSYNC_KAFKA_SSL_KEYFILE",
        ),
        (
            {"PSSYNC_KAFKA_SECURITY_PROTOCOL": "SSL", "PSSYNC_KAFKA_SSL_CAFILE": "/nope/ca.pem"},
            "PSSYNC_KAFKA_SSL_CAFILE='/nope/ca.pem' is not a readable file",
        ),
        (
            {"PSSYNC_REGISTRY_CA_FILE": "/etc/hostname"},
            "is not https://; use the registry's https URL",
        ),
        (
            {"PSSYNC_REGISTRY_USER": "u"},
            "needs both PSSYNC_REGISTRY_USER and PSSYNC_REGISTRY_PASSWORD",
        ),
        (
            {
                "PSSYNC_REGISTRY_URL": "https://a:b@reg/x",
                "PSSYNC_REGISTRY_USER": "u",
                "PSSYNC_REGISTRY_PASSWORD": "p",
            },
            "keep the credentials in PSSYNC_REGISTRY_USER/PASSWORD only",
        ),
    ],
)
def test_bad_combinations_say_what_to_fix(env: dict[str, str], fix: str) -> None:
    with pytest.raises(ConfigError, match=fix.replace("(", r"\(").replace(".", r"\.")) as info:
        Settings.from_env(env)
    assert "s3cret" not in str(info.value)


def test_registry_client_gets_tls_and_basic_auth(tls_files: dict[str, str]) -> None:
    s = Settings.from_env(
        {
            "PSSYNC_REGISTRY_URL": "https://registry.example:8443/apis/ccompat/v7",
            "PSSYNC_REGISTRY_USER": "reader",
            "PSSYNC_REGISTRY_PASSWORD": "pw",
            "PSSYNC_REGISTRY_CA_FILE": tls_files["ca"],
            "PSSYNC_REGISTRY_CERT_FILE": tls_files["cert"],
            "PSSYNC_REGISTRY_KEY_FILE": tls_files["key"],
        }
    )
    assert client_config(s) == {
        "url": "https://registry.example:8443/apis/ccompat/v7",
        "timeout": 30,
        "basic.auth.user.info": "reader:pw",
        "ssl.ca.location": tls_files["ca"],
        "ssl.certificate.location": tls_files["cert"],
        "ssl.key.location": tls_files["key"],
    }
    # confluent-kafka accepts it and verifies the registry against our CA.
    from confluent_kafka.schema_registry import SchemaRegistryClient

    client = SchemaRegistryClient(client_config(s))
    assert client is not None
