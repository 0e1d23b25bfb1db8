"""The PSA: Redmine from Debian packages, served by puma, on the stack's PostgreSQL database
`psa`. Each stack folder is its own Redmine instance (Debian's multi-tenancy: the instance
named by REDMINE_INSTANCE lives in /var/lib/redmine/<name>, here a link to the stack folder),
so two clones never share a configuration. Ready = the integration user's API key works.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from streams.errors import StackError

from .base import HERE, Context, External, Managed, log, run, write_secret
from .postgres import Postgres, stack_key

REDMINE_ROOT = Path("/usr/share/redmine")
INSTANCES = Path("/var/lib/redmine")
PUMA = Path("/usr/bin/puma")
# Redmine series of Debian 12's package; docker/compose.yaml runs the same.
REDMINE_SERIES = "5.0"
PACKAGES = ("redmine", "redmine-pgsql", "puma")
SETUP_SCRIPT = HERE / "components" / "psa_setup.rb"
# The package must not create or touch a database: the stack configures its own.
DEBCONF = (
    "redmine redmine/instances/default/dbconfig-install boolean false\n"
    "dbconfig-common dbconfig-common/dbconfig-install boolean false\n"
)


def render_database_yml(pg_port: int, database: str) -> str:
    return (
        "production:\n"
        "  adapter: postgresql\n"
        f"  database: {database}\n"
        "  host: 127.0.0.1\n"
        f"  port: {pg_port}\n"
        "  username: postgres\n"
        "  password: postgres\n"
        "  encoding: utf8\n"
        "  pool: 5\n"
    )


def current_user(url: str, key_file: Path) -> str | None:
    """Login of the user the API key belongs to, over the REST API; None if it fails."""
    try:
        key = key_file.read_text().strip()
        req = urllib.request.Request(
            f"{url}/users/current.json", headers={"X-Redmine-API-Key": key}
        )
        with urllib.request.urlopen(req, timeout=3) as resp:
            return str(json.loads(resp.read())["user"]["login"])
    except (OSError, ValueError, KeyError, urllib.error.URLError):
        return None


class Psa(Managed):
    name = "psa"
    port_env = "PSSYNC_PSA_PORT"
    ready_timeout = 90.0

    def __init__(self, ctx: Context, postgres: Postgres) -> None:
        super().__init__(ctx, ctx.settings.ports.psa)
        self.postgres = postgres
        self.home = ctx.dir / "psa"
        self.instance_dir = self.home / "instance"
        self.instance = f"pssync-{stack_key(ctx.dir)}"
        self.link = INSTANCES / self.instance
        self.secret_key = ctx.secrets / "psa-secret-key-base"
        self.marker = self.home / ".set-up"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "REDMINE_INSTANCE": self.instance, "RAILS_ENV": "production"}

    def install(self) -> None:
        if (REDMINE_ROOT / "config.ru").exists() and PUMA.exists():
            return
        if os.geteuid() != 0:
            raise StackError(
                "Redmine is not installed; as root: preseed debconf with\n"
                f"{DEBCONF}and run `apt-get install -y {' '.join(PACKAGES)}`"
            )
        log("installing Redmine and puma from Debian packages (apt-get)")
        install_log = self.ctx.logs / "install.log"
        debconf = self.ctx.conf / "redmine.debconf"
        self.ctx.conf.mkdir(parents=True, exist_ok=True)
        debconf.write_text(DEBCONF)
        run(["debconf-set-selections", str(debconf)], "debconf-set-selections", install_log)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update"], "apt-get update", install_log, env=env)
        run(
            [
                "apt-get",
                "install",
                "-y",
                "-o",
                "Dpkg::Options::=--force-confold",
                "dbconfig-no-thanks",
                *PACKAGES,
            ],
            "apt-get install redmine",
            install_log,
            env=env,
        )

    def _write_instance(self) -> None:
        """The instance's config, logs and temp files, in the stack folder."""
        config = self.instance_dir / "config"
        for d in (config, self.instance_dir / "tmp" / "cache", self.instance_dir / "files"):
            d.mkdir(parents=True, exist_ok=True)
        (config / "database.yml").write_text(render_database_yml(self.s.ports.postgres, "psa"))
        if not self.secret_key.exists():
            write_secret(self.secret_key, secrets.token_hex(64))
        key_link = config / "secret_key.txt"
        if not key_link.is_symlink():
            key_link.unlink(missing_ok=True)
            key_link.symlink_to(self.secret_key)
        # Rails' own log goes to the same file as puma's output.
        rails_log = self.instance_dir / "log" / "production.log"
        rails_log.parent.mkdir(parents=True, exist_ok=True)
        if not rails_log.is_symlink():
            rails_log.unlink(missing_ok=True)
            rails_log.symlink_to(self.process.log)
        if not INSTANCES.is_dir():
            raise StackError(f"{INSTANCES} is missing: is the redmine package installed?")
        if self.link.is_symlink() and Path(os.readlink(self.link)) == self.instance_dir:
            return
        if self.link.exists() or self.link.is_symlink():
            raise StackError(
                f"{self.link} exists and is not this stack's Redmine instance; remove it"
            )
        self.link.symlink_to(self.instance_dir, target_is_directory=True)

    def _prepare_capture(self) -> None:
        # Idempotent, on every start: a schema upgrade by the application may add tables.
        from connectors.debezium import captured_tables, ensure_replica_identity, psa_connector

        changed = ensure_replica_identity(self.s.psa_db, captured_tables(psa_connector(self.s)))
        if changed:
            log(f"PSA: REPLICA IDENTITY FULL on {', '.join(changed)} (no primary key)")

    def _stamp(self) -> str:
        return hashlib.sha256(SETUP_SCRIPT.read_bytes()).hexdigest()[:16]

    def _set_up(self) -> bool:
        # The database is checked too: a cluster made anew leaves the marker behind.
        return (
            self.marker.exists()
            and self.marker.read_text() == self._stamp()
            and self.s.psa_api_key_file.exists()
            and self._has_integration_user()
        )

    def _has_integration_user(self) -> bool:
        exists = self.postgres.psql("SELECT to_regclass('public.users') IS NOT NULL", db="psa")
        if exists != "t":
            return False
        login = self.postgres.psql("SELECT login FROM users WHERE login = 'pssync'", db="psa")
        return login == "pssync"

    def launch(self) -> None:
        self._write_instance()
        if not self._set_up():
            self._first_run()
        self._prepare_capture()
        self.process.spawn(
            [str(PUMA), "-e", "production", "-b", f"tcp://127.0.0.1:{self.port}", "config.ru"],
            env=self._env(),
            cwd=REDMINE_ROOT,
        )

    def _first_run(self) -> None:
        setup_log = self.ctx.logs / "psa-setup.log"
        env = self._env()
        log("PSA: bundle, migrations, default data, integration user")
        self._bundle(setup_log, env)
        run(["rake", "db:migrate"], "rake db:migrate", setup_log, cwd=REDMINE_ROOT, env=env)
        run(
            ["rake", "redmine:load_default_data"],
            "rake redmine:load_default_data",
            setup_log,
            cwd=REDMINE_ROOT,
            env={**env, "REDMINE_LANG": "en"},
        )
        self.s.psa_api_key_file.parent.mkdir(parents=True, exist_ok=True)
        self.s.psa_api_key_file.parent.chmod(0o700)
        run(
            ["rails", "runner", str(SETUP_SCRIPT)],
            "PSA setup (rails runner)",
            setup_log,
            cwd=REDMINE_ROOT,
            env={**env, "PSSYNC_PSA_KEY_FILE": str(self.s.psa_api_key_file)},
        )
        self.marker.write_text(self._stamp())

    @staticmethod
    def _bundle(setup_log: Path, env: dict[str, str]) -> None:
        """Debian ships a Gemfile.lock (a link to /var/lib/redmine/Gemfile.lock) made without
        a database adapter; once it does not fit, it is removed and bundler resolves it again
        from the installed gems only (no download). Shared by every instance on the host."""
        check = subprocess.run(
            ["bundle", "check"], cwd=REDMINE_ROOT, env=env, capture_output=True, check=False
        )
        if check.returncode == 0:
            return
        lock = REDMINE_ROOT / "Gemfile.lock"
        # Remove the file the package's link points at, not the link.
        (lock.resolve() if lock.is_symlink() else lock).unlink(missing_ok=True)
        run(
            ["bundle", "install", "--local"],
            "bundle install --local",
            setup_log,
            cwd=REDMINE_ROOT,
            env=env,
        )

    def ready(self) -> bool:
        return current_user(self.s.psa_url, self.s.psa_api_key_file) is not None

    def clean(self) -> None:
        if self.link.is_symlink() and Path(os.readlink(self.link)) == self.instance_dir:
            self.link.unlink()
            log(f"removed Redmine instance link {self.link}")


def external_psa(ctx: Context) -> External:
    s = ctx.settings
    return External(
        "psa", s.psa_url, lambda: current_user(s.psa_url, s.psa_api_key_file) is not None
    )
