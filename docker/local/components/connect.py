"""Kafka Connect (distributed mode) with the Debezium PostgreSQL connector."""

from __future__ import annotations

import urllib.error
import urllib.request

from .base import Context, Managed, http_ok
from .jvm import install_jars, java_cmd, render


class Connect(Managed):
    name = "connect"
    port_env = "PSSYNC_CONNECT_PORT"
    ready_timeout = 120.0

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx, ctx.settings.ports.connect)

    def install(self) -> None:
        install_jars(self.ctx)

    def launch(self) -> None:
        conf = render(
            self.ctx,
            "connect.properties",
            kafka_port=self.s.ports.kafka,
            connect_port=self.port,
            plugin_path=self.ctx.lib / "plugins",
        )
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
