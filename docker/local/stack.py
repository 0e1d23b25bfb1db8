"""The local stack without a Docker engine: PostgreSQL, Kafka (KRaft), the schema registry,
Kafka Connect with Debezium, the ERP (Tryton) and the PSA (Redmine), all from package
registries, all under one project folder.

    python docker/local/stack.py up|down|status|install|clean [--only postgres,kafka,...]

Idempotent: `up` installs what is missing, starts what is not running and waits for each
component with a timeout; on failure it names the component and prints the tail of its log.
Each component is a module of docker/local/components/ behind one interface (base.Component).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Run as a script or loaded by file path (the tests): the sibling package must be importable.
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from components.base import Component, Context, log, make_dirs  # noqa: E402
from components.connect import Connect  # noqa: E402
from components.erp import Erp, external_erp  # noqa: E402
from components.jvm import APICURIO_VERSION, POM  # noqa: E402
from components.kafka import Kafka  # noqa: E402
from components.postgres import (  # noqa: E402
    PG_HOME_BASE,
    PG_OWNER_FILE,
    SOURCE_DATABASES,
    Postgres,
    in_clone_pg_data,
    outside_pg_data,
    pg_data_dir,
    stack_key,
)
from components.psa import Psa, external_psa  # noqa: E402
from components.registry import Registry  # noqa: E402

from streams.errors import StackError  # noqa: E402
from streams.settings import Settings  # noqa: E402

COMPONENTS = ("postgres", "kafka", "registry", "connect", "erp", "psa")  # start order
# What each component needs ready before it starts; the rest boot side by side.
NEEDS: dict[str, tuple[str, ...]] = {
    "postgres": (),
    "kafka": (),
    "registry": ("postgres",),
    "connect": ("kafka",),
    "erp": ("postgres",),
    "psa": ("postgres",),
}

__all__ = [
    "APICURIO_VERSION",
    "COMPONENTS",
    "PG_HOME_BASE",
    "PG_OWNER_FILE",
    "POM",
    "SOURCE_DATABASES",
    "Stack",
    "in_clone_pg_data",
    "main",
    "make_dirs",
    "outside_pg_data",
    "parse_only",
    "pg_data_dir",
    "stack_key",
]


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.ctx = Context.of(settings)
        self.dir = self.ctx.dir
        self.logs = self.ctx.logs
        self.postgres = Postgres(self.ctx)
        erp: Component = (
            external_erp(self.ctx) if settings.erp_external else Erp(self.ctx, self.postgres)
        )
        psa: Component = (
            external_psa(self.ctx) if settings.psa_external else Psa(self.ctx, self.postgres)
        )
        self.by_name: dict[str, Component] = {
            "postgres": self.postgres,
            "kafka": Kafka(self.ctx),
            "registry": Registry(self.ctx),
            "connect": Connect(self.ctx),
            "erp": erp,
            "psa": psa,
        }

    @property
    def pg_data(self) -> Path:
        return self.postgres.pg_data

    def components(self, only: tuple[str, ...] = COMPONENTS) -> list[Component]:
        return [self.by_name[n] for n in COMPONENTS if n in only]

    def install(self, only: tuple[str, ...] = COMPONENTS) -> None:
        self.ctx.make_dirs()
        for c in self.components(only):
            c.install()

    def up(self, only: tuple[str, ...] = COMPONENTS) -> None:
        t0 = time.monotonic()
        self.install(only)
        waiting: list[Component] = []

        def wait_for(name: str) -> None:
            for c in [c for c in waiting if c.name == name]:
                c.wait_ready()
                waiting.remove(c)

        for c in self.components(only):
            for dep in NEEDS[c.name]:
                wait_for(dep)
            c.start()
            waiting.append(c)
        for c in list(waiting):
            wait_for(c.name)
        log(f"stack up in {time.monotonic() - t0:.1f}s; logs in {self.logs}")

    def down(self, only: tuple[str, ...] = COMPONENTS) -> None:
        for c in reversed(self.components(only)):
            c.stop()
        log("stack down")

    def clean(self) -> None:
        """Stop everything and remove what the stack keeps outside its folder (the
        PostgreSQL cluster, the Redmine instance link); `make clean` removes the folder."""
        self.down()
        for c in reversed(self.components()):
            c.clean()

    def status(self) -> bool:
        ok = True
        for c in self.components():
            st = c.status()
            ok = ok and st.ok
            print(st.line())
        exists = "" if (self.pg_data / "PG_VERSION").exists() else " (not created yet)"
        print(f"postgres cluster in {self.pg_data}{exists}")
        return ok


def parse_only(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return COMPONENTS
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    unknown = sorted(set(names) - set(COMPONENTS))
    if unknown or not names:
        raise StackError(
            f"--only {raw!r}: unknown component(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(COMPONENTS)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("verb", choices=["up", "down", "status", "install", "clean"])
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help=f"comma-separated components for up/down/install, from: {', '.join(COMPONENTS)}",
    )
    args = parser.parse_args(argv)
    try:
        only = parse_only(args.only)
        stack = Stack(Settings.from_env())
        if args.verb == "up":
            stack.up(only)
        elif args.verb == "down":
            stack.down(only)
        elif args.verb == "install":
            stack.install(only)
        elif args.verb == "clean":
            stack.clean()
        else:
            return 0 if stack.status() else 1
    except StackError as exc:
        print(f"[stack] ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
