"""A private single-node Kafka that only accepts clients over SASL_SSL (SCRAM-SHA-512, TLS with
a throw-away CA), from the local stack's Kafka jars. Tests point pssync at it to prove every
client pssync builds really speaks TLS and SASL.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from streams.security import kafka_config
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
USER = "pssync"


@dataclass(frozen=True)
class SecureBroker:
    bootstrap: str
    ca_file: str
    user: str
    password: str

    def env(self) -> dict[str, str]:
        """Settings that make pssync's clients talk to this broker."""
        return {
            "PSSYNC_KAFKA_BOOTSTRAP": self.bootstrap,
            "PSSYNC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "PSSYNC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "PSSYNC_KAFKA_SASL_USERNAME": self.user,
            "PSSYNC_KAFKA_SASL_PASSWORD": self.password,
            "PSSYNC_KAFKA_SSL_CAFILE": self.ca_file,
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise AssertionError("java not found; the local stack needs it too (make up)")
    return found


def _certificate(d: Path) -> tuple[Path, Path]:
    """Self-signed server certificate for 127.0.0.1: (PEM key+chain for Kafka, CA file)."""
    key, cert = d / "broker.key", d / "broker.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    keystore = d / "keystore.pem"
    keystore.write_text(key.read_text() + cert.read_text())
    return keystore, cert


@contextmanager
def secure_broker(lib: Path, workdir: Path, timeout: float = 120) -> Iterator[SecureBroker]:
    jars = lib / "kafka"
    if not any(jars.glob("kafka-clients-*.jar")):
        raise AssertionError(f"no Kafka jars under {jars}: run `make up` first")
    workdir.mkdir(parents=True, exist_ok=True)
    keystore, ca = _certificate(workdir)
    port, internal, controller = _free_port(), _free_port(), _free_port()
    password = secrets.token_hex(12)
    conf = workdir / "server.properties"
    conf.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{controller}",
                # Clients get the SASL_SSL listener only; the broker talks to itself in plain.
                f"listeners=SECURE://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal},"
                f"CONTROLLER://127.0.0.1:{controller}",
                f"advertised.listeners=SECURE://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=SECURE:SASL_SSL,INTERNAL:PLAINTEXT,"
                "CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=INTERNAL",
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "listener.name.secure.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={keystore}",
                f"log.dirs={workdir / 'data'}",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "",
            ]
        )
    )
    java, cp = _java(), str(jars / "*")
    log = workdir / "kafka.log"
    base = [
        java, "-Xmx384m", "-Xms64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
        f"-Dlog4j2.configurationFile={ROOT / 'docker' / 'local' / 'log4j2.properties'}",
        f"-Dpssync.log.file={log}", "-cp", cp,
    ]  # fmt: skip
    cluster = subprocess.run(
        [*base, "kafka.tools.StorageTool", "random-uuid"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]
    subprocess.run(
        [*base, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(conf),
         "--add-scram", f"SCRAM-SHA-512=[name={USER},password={password}]"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    broker = SecureBroker(f"127.0.0.1:{port}", str(ca), USER, password)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*base, "kafka.Kafka", str(conf)], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        admin = AdminClient(kafka_config(Settings.from_env(broker.env())))
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"secure broker exited:\n{log.read_text()[-3000:]}")
            try:
                if admin.list_topics(timeout=2).brokers:
                    break
            except Exception:  # noqa: BLE001 - not ready yet
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"secure broker not ready:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield broker
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
