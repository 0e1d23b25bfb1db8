"""`pssync schemas ...`: list, register, check, show, diff and set compatibility of contracts.

Works against any Confluent-API registry (Settings.registry_url, optional basic auth).
Standalone: ``python -m schemas.cli check --dir path/to/avro``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TextIO

from schemas import compat, conventions
from schemas.contracts import AVRO_DIR, Catalog
from schemas.diff import diff
from schemas.registry import Registry
from streams.errors import ConfigError, PssyncError
from streams.settings import Settings

OK, BREAKING, ERROR = 0, 1, 2


@dataclass(frozen=True)
class Context:
    registry: Registry
    catalog: Catalog
    namespace: str
    out: TextIO

    def subject(self, name: str) -> str:
        return conventions.contract_subject(name, self.catalog.is_reference(name), self.namespace)

    def level(self, name: str) -> str:
        return conventions.compatibility_level(self.catalog.is_reference(name))

    def names(self, only: list[str] | None) -> list[str]:
        names = self.catalog.names()
        unknown = sorted(set(only or []) - set(names))
        if unknown:
            raise ConfigError(f"no contract named {', '.join(unknown)} in {self.catalog.directory}"
                              f"; known: {', '.join(names)}")
        return [n for n in names if not only or n in only]

    def resolve_subject(self, arg: str) -> str:
        """A subject, or a contract name turned into its subject."""
        if arg in self.catalog.names():
            return self.subject(arg)
        return arg

    def local_name(self, subject: str) -> str | None:
        return next((n for n in self.catalog.names() if self.subject(n) == subject), None)

    def say(self, line: str = "") -> None:
        print(line, file=self.out)


def _contracts_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, default=None,
                   help="directory of .avsc files to use instead of the package's")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="limit to this contract (repeatable)")


def add_subcommands(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `schemas` command group to an argparse subparsers object."""
    p = subparsers.add_parser("schemas", help="canonical Avro contracts in the schema registry")
    _add_commands(p)
    return p  # type: ignore[no-any-return]


def _add_commands(p: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", default=None,
                        help="topic namespace (default: PSSYNC_TOPIC_NAMESPACE)")
    sub = p.add_subparsers(dest="schemas_command", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_, parents=[common])
        return parser

    add("list", "subjects, versions and compatibility levels in the registry")
    c = add("register", "register every contract and set its subject's level")
    _contracts_args(c)
    c = add("check", "check contracts against the registry without registering")
    _contracts_args(c)
    c = add("show", "print a registered schema")
    c.add_argument("subject", help="subject, or a contract name such as time_entry")
    c.add_argument("--version", default="latest")
    c = add("diff", "field-level diff between two versions of a subject")
    c.add_argument("subject", help="subject, or a contract name such as time_entry")
    c.add_argument("--from", dest="from_", default=None,
                   help="version number, latest or local (default: latest)")
    c.add_argument("--to", default=None,
                   help="version number, latest or local (default: local, the working tree)")
    _contracts_args(c)
    c = add("compat", "set a subject's compatibility level")
    c.add_argument("subject", help="subject, or a contract name such as time_entry")
    c.add_argument("level", type=str.upper, choices=conventions.LEVELS)


def _context(args: argparse.Namespace, out: TextIO, settings: Settings | None) -> Context:
    settings = settings or Settings.from_env()
    namespace = settings.topic_namespace if args.namespace is None else args.namespace
    if args.namespace is not None:
        settings = replace(settings, topic_namespace=args.namespace)
    directory = getattr(args, "dir", None) or AVRO_DIR
    return Context(Registry(settings), Catalog(directory), namespace, out)


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    subjects = ctx.registry.subjects()
    if not subjects:
        ctx.say(f"no subjects in {ctx.registry.url}")
    for subject in subjects:
        versions = ctx.registry.versions(subject)
        level = ctx.registry.compatibility(subject)
        ctx.say(f"{subject}  versions {','.join(map(str, versions))}  {level}")
    return OK


def _set_level(ctx: Context, subject: str, level: str) -> None:
    if ctx.registry.compatibility(subject) != level:
        ctx.registry.set_compatibility(subject, level)


def cmd_register(ctx: Context, args: argparse.Namespace) -> int:
    for name in ctx.names(args.only):
        subject, level = ctx.subject(name), ctx.level(name)
        existed = bool(ctx.registry.versions(subject))
        if existed:  # the new version must pass the convention's level, not the global one
            _set_level(ctx, subject, level)
        schema_id = ctx.registry.register(subject, ctx.catalog.schema_str(name))
        if not existed:  # a subject's config can only be set once the subject exists
            _set_level(ctx, subject, level)
        version = ctx.registry.versions(subject)[-1]
        ctx.say(f"{subject}: id {schema_id}, version {version}, {level}")
    return OK


def _history(ctx: Context, subject: str, versions: list[int]) -> list[tuple[int, Any]]:
    return [(v, ctx.registry.version(subject, v).schema) for v in versions]


def cmd_check(ctx: Context, args: argparse.Namespace) -> int:
    failed = 0
    for name in ctx.names(args.only):
        subject, wanted = ctx.subject(name), ctx.level(name)
        local = ctx.catalog.schema_str(name)
        ctx.catalog.parsed(name)  # invalid Avro fails here, with the file named
        versions = ctx.registry.versions(subject)
        if not versions:
            ctx.say(f"ok    {subject}: new subject, nothing to be compatible with")
            continue
        latest = ctx.registry.version(subject, versions[-1])
        if latest.schema == json.loads(local):
            ctx.say(f"ok    {subject}: unchanged (version {latest.version})")
            continue
        level = ctx.registry.compatibility(subject)
        accepted = ctx.registry.is_compatible(subject, local)
        reasons = compat.breaking_changes(json.loads(local), _history(ctx, subject, versions),
                                          level)
        if accepted:
            ctx.say(f"ok    {subject}: compatible under {level}")
            for reason in reasons:  # our checker is stricter here; worth a look
                ctx.say(f"      note: {reason}")
        else:
            failed += 1
            ctx.say(f"FAIL  {subject}: the registry rejects it under {level}")
            for reason in reasons or ["the registry gave no reason and the local checker found "
                                      "none; compare with `pssync schemas diff " + name + "`"]:
                ctx.say(f"      - {reason}")
        if level != wanted:
            ctx.say(f"      warning: level is {level}, the convention says {wanted}; "
                    f"run `pssync schemas compat {subject} {wanted}`")
    if failed:
        ctx.say(f"{failed} contract(s) would break their consumers; see above")
    return BREAKING if failed else OK


def cmd_show(ctx: Context, args: argparse.Namespace) -> int:
    subject = ctx.resolve_subject(args.subject)
    which = _version_arg(args.version)
    if which == "local":
        raise ConfigError("show reads the registry; use a version number or latest")
    v = ctx.registry.version(subject, which)
    ctx.say(f"{subject} version {v.version} (id {v.schema_id})")
    ctx.say(json.dumps(v.schema, indent=2))
    return OK


def _version_arg(raw: str) -> int | Literal["latest", "local"]:
    if raw == "latest":
        return "latest"
    if raw == "local":
        return "local"
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"version {raw!r}: use a number, latest or local") from None


def _schema_at(ctx: Context, subject: str, which: int | Literal["latest", "local"]
               ) -> tuple[str, Any]:
    if which == "local":
        name = ctx.local_name(subject)
        if name is None:
            raise ConfigError(f"{subject} is not one of the contracts in {ctx.catalog.directory}; "
                              "give --from and --to as version numbers")
        return "working tree", ctx.catalog.schema(name)
    v = ctx.registry.version(subject, which)
    return f"version {v.version}", v.schema


def cmd_diff(ctx: Context, args: argparse.Namespace) -> int:
    subject = ctx.resolve_subject(args.subject)
    local = ctx.local_name(subject) is not None
    versions = ctx.registry.versions(subject)
    default_from: int | str = "latest" if local or len(versions) < 2 else versions[-2]
    a_label, a = _schema_at(ctx, subject, _version_arg(args.from_ or str(default_from)))
    b_label, b = _schema_at(ctx, subject, _version_arg(args.to or
                                                       ("local" if local else "latest")))
    ctx.say(f"{subject}: {a_label} -> {b_label}")
    lines = diff(a, b)
    for line in lines or ["(no field changes)"]:
        ctx.say(line)
    return OK


def cmd_compat(ctx: Context, args: argparse.Namespace) -> int:
    subject = ctx.resolve_subject(args.subject)
    ctx.registry.set_compatibility(subject, args.level)
    ctx.say(f"{subject}: {ctx.registry.compatibility(subject)}")
    return OK


COMMANDS: dict[str, Callable[[Context, argparse.Namespace], int]] = {
    "list": cmd_list, "register": cmd_register, "check": cmd_check, "show": cmd_show,
    "diff": cmd_diff, "compat": cmd_compat,
}


def run(args: argparse.Namespace, out: TextIO | None = None,
        settings: Settings | None = None) -> int:
    """Run a parsed `schemas` command; 0 ok, 1 breaking changes found, 2 error."""
    stream = out or sys.stdout
    try:
        return COMMANDS[args.schemas_command](_context(args, stream, settings), args)
    except PssyncError as exc:
        print(f"pssync schemas: error: {exc}", file=sys.stderr)
        return ERROR


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["schemas"]:  # accept the same words as `pssync schemas ...`
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="python -m schemas.cli",
                                     description="canonical Avro contracts in the schema registry")
    _add_commands(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
