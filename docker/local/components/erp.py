"""The ERP: Tryton 8.2 from PyPI (installed in the project venv), on the stack's PostgreSQL
database `erp`. First start: `trytond-admin` creates the schema and activates the modules,
then erp_setup.py creates the company, accounts, product, employee and the integration user.
Ready = the integration user can log in over JSON-RPC.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from streams.errors import StackError

from .base import HERE, Context, External, Managed, log, run, write_secret
from .postgres import Postgres

# Tryton series the stack runs; pyproject's `stack` extra and docker/compose.yaml follow it.
TRYTON_SERIES = "8.2"
MODULES = (
    "party",
    "company",
    "currency",
    "product",
    "account",
    "account_invoice",
    "account_product",
    "project",
    "project_invoice",
    "timesheet",
    "timesheet_cost",
    "sale_opportunity",
)
SETUP_SCRIPT = HERE / "components" / "erp_setup.py"


def render_config(pg_port: int, port: int, data_dir: Path) -> str:
    """trytond's config file: the stack's PostgreSQL, loopback only."""
    return (
        "[database]\n"
        f"uri = postgresql://postgres:postgres@127.0.0.1:{pg_port}/\n"
        f"path = {data_dir / 'attachments'}\n"
        "\n[web]\n"
        f"listen = 127.0.0.1:{port}\n"
        "\n[session]\n"
        # pssync logs in once and keeps its session; a day covers any sync pause.
        "timeout = 86400\n"
    )


def rpc(url: str, database: str, method: str, params: list[Any], headers: dict[str, str]) -> Any:
    """One JSON-RPC call; Tryton's error list is raised as StackError."""
    body = json.dumps({"id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(
        f"{url}/{database}/rpc/",
        data=body,
        headers={"Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer = json.loads(resp.read())
    if answer.get("error"):
        raise StackError(f"ERP {method}: {answer['error']}")
    return answer["result"]


def session_header(login: str, uid: int, token: str) -> dict[str, str]:
    raw = base64.b64encode(f"{login}:{uid}:{token}".encode()).decode()
    return {"Authorization": f"Session {raw}"}


def can_log_in(url: str, database: str, login: str, password_file: Path) -> bool:
    """The integration user logs in and reads its own preferences over RPC."""
    try:
        password = password_file.read_text().strip()
        uid, token = rpc(
            url, database, "common.db.login", [login, {"password": password}, "en"], {}
        )[:2]
        rpc(
            url,
            database,
            "model.res.user.get_preferences",
            [True, {}],
            session_header(login, uid, token),
        )
    except (OSError, ValueError, StackError, urllib.error.URLError, TypeError):
        return False
    return True


class Erp(Managed):
    name = "erp"
    port_env = "PSSYNC_ERP_PORT"
    ready_timeout = 60.0

    def __init__(self, ctx: Context, postgres: Postgres) -> None:
        super().__init__(ctx, ctx.settings.ports.erp)
        self.postgres = postgres
        self.home = ctx.dir / "erp"
        self.config = self.home / "trytond.conf"
        self.admin_password = ctx.secrets / "erp-admin.password"
        self.marker = self.home / ".set-up"

    @staticmethod
    def bin(name: str) -> Path:
        return Path(sys.executable).parent / name

    def install(self) -> None:
        if not self.bin("trytond").exists():
            raise StackError(
                f"trytond is not installed next to {sys.executable}; run `make install` "
                "(pip install -e '.[dev,stack]')"
            )

    def _prepare_capture(self) -> None:
        # Idempotent, on every start: a schema upgrade by the application may add tables.
        from connectors.debezium import captured_tables, ensure_replica_identity, erp_connector

        changed = ensure_replica_identity(self.s.erp_db, captured_tables(erp_connector(self.s)))
        if changed:
            log(f"ERP: REPLICA IDENTITY FULL on {', '.join(changed)} (no primary key)")

    def _stamp(self) -> str:
        # Redo the setup when the module list or the setup script changes.
        h = hashlib.sha256(" ".join(MODULES).encode() + SETUP_SCRIPT.read_bytes())
        return h.hexdigest()[:16]

    def _set_up(self) -> bool:
        # The database is checked too: a cluster made anew leaves the marker behind.
        return (
            self.marker.exists()
            and self.marker.read_text() == self._stamp()
            and self.s.erp_password_file.exists()
            and self.admin_password.exists()
            and set(MODULES) <= self._activated()
        )

    def launch(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.config.write_text(render_config(self.s.ports.postgres, self.port, self.home))
        if not self._set_up():
            self._first_run()
        self._prepare_capture()
        self.process.spawn(
            [str(self.bin("trytond")), "-c", str(self.config), "-d", self.s.erp_database]
        )

    def _admin(self, args: list[str], what: str, admin_log: Path) -> None:
        """trytond-admin on this ERP's database; it reads the admin password, when it sets
        one, from TRYTONPASSFILE."""
        run(
            [
                str(self.bin("trytond-admin")),
                *("-c", str(self.config), "-d", self.s.erp_database),
                *args,
            ],
            what,
            admin_log,
            env={"TRYTONPASSFILE": str(self.admin_password), **os.environ},
        )

    def _first_run(self) -> None:
        installed = self._activated()
        admin_log = self.ctx.logs / "erp-setup.log"
        if "ir" not in installed:
            log(f"ERP: creating the Tryton schema in database {self.s.erp_database!r}")
            if not self.admin_password.exists():
                write_secret(self.admin_password, secrets.token_urlsafe(24))
            self._admin(
                ["--all", "--email", "admin@localhost.invalid"], "trytond-admin --all", admin_log
            )
        elif not self.admin_password.exists():
            # The schema outlived the secrets folder (it was removed): set a new admin password.
            log("ERP: the admin password file is missing; setting a new admin password")
            write_secret(self.admin_password, secrets.token_urlsafe(24))
            # Without --administrator trytond-admin also clears the user's administrator flag.
            self._admin(["--password", "--administrator"], "trytond-admin --password", admin_log)
        if not set(MODULES) <= installed:
            log(f"ERP: activating modules {' '.join(MODULES)}")
            self._admin(
                ["-u", *MODULES, "--activate-dependencies"],
                "trytond-admin -u (module activation)",
                admin_log,
            )
        log("ERP: company, accounts, product, employee and integration user")
        run(
            [
                sys.executable,
                str(SETUP_SCRIPT),
                "--config",
                str(self.config),
                "--database",
                self.s.erp_database,
                "--login",
                self.s.erp_user,
                "--secret",
                str(self.s.erp_password_file),
            ],
            "ERP setup",
            admin_log,
            env=dict(os.environ),
        )
        self.marker.write_text(self._stamp())

    def _activated(self) -> set[str]:
        exists = self.postgres.psql(
            "SELECT to_regclass('public.ir_module') IS NOT NULL", db=self.s.erp_database
        )
        if exists != "t":
            return set()
        rows = self.postgres.psql(
            "SELECT name FROM ir_module WHERE state = 'activated'", db=self.s.erp_database
        )
        return set(rows.split())

    def ready(self) -> bool:
        return can_log_in(
            self.s.erp_url, self.s.erp_database, self.s.erp_user, self.s.erp_password_file
        )


def external_erp(ctx: Context) -> External:
    s = ctx.settings
    return External(
        "erp",
        s.erp_url,
        lambda: can_log_in(s.erp_url, s.erp_database, s.erp_user, s.erp_password_file),
    )
