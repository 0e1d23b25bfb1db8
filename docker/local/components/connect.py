"""Kafka Connect (distributed mode) with the Debezium PostgreSQL connector."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from string import Template

from .base import HERE, Context, Managed, http_ok, log
from .jvm import install_jars, java_cmd, render


class Connect(Managed):
    name = "connect"
    port_env = "PSSYNC_CONNECT_PORT"
    ready_timeout = 120.0

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx, ctx.settings.ports.connect)

    def install(self) -> None:
        install_jars(self.ctx)

    def _values(self) -> dict[str, object]:
        return {
            "kafka_port": self.s.ports.kafka,
            "connect_port": self.port,
            "plugin_path": self.ctx.lib / "plugins",
            "secrets_dir": Path(self.s.connect_secrets_file).parent,
        }

    def _write_secrets(self) -> None:
        # Connectors reference the CRM credentials in this file (mode 0600) instead of
        # carrying them; written on every `up` so it follows PSSYNC_CRM_DB_USER/PASSWORD.
        from connectors.debezium import write_secrets_file

        path = write_secrets_file(self.s)
        log(f"connector secrets in {path} (mode 0600)")

    def start(self) -> None:
        self._write_secrets()
        if self.process.running():
            rendered = Template((HERE / "connect.properties").read_text()).substitute(
                {k: str(v) for k, v in self._values().items()}
            )
            current = self.ctx.conf / "connect.properties"
            if not current.exists() or current.read_text() != rendered:
                log(
                    "WARNING: connect runs with an older connect.properties (e.g. without the "
                    "config providers connectors need); restart it: "
                    "python docker/local/stack.py down --only connect && make up"
                )
        super().start()

    def launch(self) -> None:
        conf = render(self.ctx, "connect.properties", **self._values())
        cp = str(self.ctx.lib / "kafka" / "*")
        main = ["-cp", cp, "org.apache.kafka.connect.cli.ConnectDistributed", str(conf)]
        self.process.spawn(java_cmd(self.process, main, "512m"))

    def ready(self) -> bool:
        # The REST API answers before the plugins are scanned: wait for Debezium too.
        base = f"http://127.0.0.1:{self.port}"
        if not http_ok(f"{base}/connectors"):
            return False
        try:
            with urllib.request.urlopen(f"{base}/connector-plugins", timeout=2) as resp:
                return b"PostgresConnector" in resp.read()
        except (urllib.error.URLError, OSError, ValueError):
            return False
