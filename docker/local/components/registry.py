"""The schema registry: Apicurio Registry with its Confluent-compatible API, schemas kept in
PostgreSQL so ids survive restarts."""

from __future__ import annotations

from .base import Context, Managed, http_ok
from .jvm import install_jars, java_cmd, modern_java_bin


class Registry(Managed):
    name = "registry"
    port_env = "PSSYNC_REGISTRY_PORT"
    ready_timeout = 180.0

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx, ctx.settings.ports.registry)

    def install(self) -> None:
        install_jars(self.ctx)

    def launch(self) -> None:
        jar = next((self.ctx.lib / "apicurio").rglob("quarkus-run.jar"))
        db = f"jdbc:postgresql://127.0.0.1:{self.s.ports.postgres}/registry"
        props = {
            "quarkus.http.host": "127.0.0.1",
            "quarkus.http.port": self.port,
            "quarkus.management.host": "127.0.0.1",
            "quarkus.management.port": self.s.ports.registry_management,
            "quarkus.oidc.tenant-enabled": "false",
            "apicurio.storage.kind": "sql",
            "apicurio.storage.sql.kind": "postgresql",
            "apicurio.datasource.url": db,
            "apicurio.datasource.username": "postgres",
            "apicurio.datasource.password": "postgres",
            "apicurio.datasource.jdbc.initial-size": 2,
            "apicurio.datasource.jdbc.min-size": 2,
            "apicurio.datasource.jdbc.max-size": 10,
            "apicurio.rules.global.compatibility": "BACKWARD_TRANSITIVE",
            "apicurio.ccompat.use-canonical-hash": "true",
            "apicurio.rest.deletion.artifact.enabled": "true",
            "apicurio.rest.deletion.artifact-version.enabled": "true",
        }
        main = [f"-D{k}={v}" for k, v in props.items()] + ["-jar", str(jar)]
        self.process.spawn(
            java_cmd(self.process, main, "384m", java=modern_java_bin()), cwd=jar.parent
        )

    def ready(self) -> bool:
        # Health first (cheap), then the API pssync uses: the Confluent-compatible subjects.
        health = f"http://127.0.0.1:{self.s.ports.registry_management}/health/ready"
        subjects = f"http://127.0.0.1:{self.port}/apis/ccompat/v7/subjects"
        return http_ok(health) and http_ok(subjects)
