"""Kafka in KRaft mode (broker and controller in one JVM)."""

from __future__ import annotations

import subprocess

from .base import Context, Managed, log, port_open, run
from .jvm import install_jars, java_bin, java_cmd, render


class Kafka(Managed):
    name = "kafka"
    port_env = "PSSYNC_KAFKA_PORT"
    ready_timeout = 90.0

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx, ctx.settings.ports.kafka)

    def install(self) -> None:
        install_jars(self.ctx)

    def launch(self) -> None:
        data = self.ctx.dir / "kafka" / "data"
        conf = render(
            self.ctx,
            "server.properties",
            kafka_port=self.port,
            controller_port=self.s.ports.controller,
            data_dir=data,
        )
        cp = str(self.ctx.lib / "kafka" / "*")
        if not (data / "meta.properties").exists():
            log("formatting KRaft storage")
            cluster_id = (
                subprocess.run(
                    [java_bin(), "-cp", cp, "kafka.tools.StorageTool", "random-uuid"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            fmt = [
                "-cp",
                cp,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(conf),
            ]
            run(java_cmd(self.process, fmt, "256m"), "formatting Kafka storage", self.process.log)
        self.process.spawn(java_cmd(self.process, ["-cp", cp, "kafka.Kafka", str(conf)], "768m"))

    def ready(self) -> bool:
        if not port_open(self.port):
            return False
        from confluent_kafka.admin import AdminClient

        try:
            md = AdminClient({"bootstrap.servers": f"127.0.0.1:{self.port}"}).list_topics(timeout=2)
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False
        return bool(md.brokers)
