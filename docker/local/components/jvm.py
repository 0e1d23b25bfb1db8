"""What the JVM components (Kafka, the registry, Connect) share: Java, the jars resolved from
Maven Central once for all three, rendered config files and the JVM command line."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from string import Template

from streams.errors import StackError

from .base import HERE, Context, Process, log, run

POM = HERE / "pom.xml"
APICURIO_VERSION = "3.3.3"


def java_bin() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise StackError(
            "java not found: install a JDK 17+ (apt-get install openjdk-17-jre-headless)"
        )
    return found


def modern_java_bin() -> str:
    """A JDK >= 21: Apicurio Registry 3.x is compiled for Java 21."""
    override = os.environ.get("PSSYNC_REGISTRY_JAVA_HOME")
    candidates = [Path(override)] if override else []
    candidates += sorted(Path("/usr/lib/jvm").glob("*"), reverse=True)
    for home in candidates:
        java = home / "bin" / "java"
        if not java.exists():
            continue
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, check=False)
        digits = out.stderr.split('"')[1].split(".")[0] if '"' in out.stderr else "0"
        if digits.isdigit() and int(digits) >= 21:
            return str(java)
    raise StackError(
        "the schema registry needs Java 21 or newer and none is under /usr/lib/jvm; install one "
        "(e.g. a Temurin 21+ JDK) or set PSSYNC_REGISTRY_JAVA_HOME to its home"
    )


def _extract(tf: tarfile.TarFile, dest: Path) -> None:
    """Unpack `tf` into `dest`, refusing members that would land outside it."""
    if hasattr(tarfile, "data_filter"):  # Python 3.11.4+
        tf.extractall(dest, filter="data")
        return
    # Older Pythons (Debian 12 has 3.11.2) have no extraction filters: check the names and
    # link targets here, then unpack.
    root = dest.resolve()
    for member in tf.getmembers():
        paths = [root / member.name]
        if member.issym():
            paths.append(paths[0].parent / member.linkname)
        elif member.islnk():
            paths.append(root / member.linkname)
        if member.isdev() or any(not p.resolve().is_relative_to(root) for p in paths):
            raise StackError(
                f"archive member {member.name!r} would unpack outside {dest}: the "
                "downloaded archive is damaged or not the registry's assembly"
            )
    tf.extractall(dest)


def install_jars(ctx: Context) -> None:
    """Kafka, Connect, Debezium and Apicurio, resolved by Maven; redone when pom.xml changes."""
    stamp = hashlib.sha256(POM.read_bytes()).hexdigest()[:16]
    marker = ctx.lib / ".installed"
    if marker.exists() and marker.read_text() == stamp:
        return
    if not shutil.which("mvn"):
        raise StackError("Maven (mvn) not found: install it (apt-get install -y maven)")
    log("resolving Kafka, Kafka Connect, Debezium and the schema registry from Maven Central")
    kafka_libs = ctx.lib / "kafka"
    plugin = ctx.lib / "plugins" / "debezium-connector-postgres"
    jdbc_plugin = ctx.lib / "plugins" / "debezium-connector-jdbc"
    for d in (kafka_libs, plugin, jdbc_plugin):
        shutil.rmtree(d, ignore_errors=True)
    mvn = ["mvn", "-q", "-B", "-f", str(POM)]
    run(
        [*mvn, "-Pkafka", "dependency:copy-dependencies", f"-DoutputDirectory={kafka_libs}"],
        "resolving Kafka jars",
        ctx.logs / "install.log",
    )
    run(
        [*mvn, "-Pdebezium", "dependency:copy-dependencies", f"-DoutputDirectory={plugin}"],
        "resolving the Debezium PostgreSQL connector",
        ctx.logs / "install.log",
    )
    # Its own directory: Connect gives each plugin directory its own class loader.
    run(
        [
            *mvn,
            "-Pdebezium-jdbc",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={jdbc_plugin}",
        ],
        "resolving the Debezium JDBC sink connector",
        ctx.logs / "install.log",
    )
    tgz_dir = ctx.lib / "download"
    run(
        [
            *mvn,
            "dependency:copy",
            f"-Dartifact=io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all",
            f"-DoutputDirectory={tgz_dir}",
        ],
        "downloading Apicurio Registry",
        ctx.logs / "install.log",
    )
    app_dir = ctx.lib / "apicurio"
    shutil.rmtree(app_dir, ignore_errors=True)
    app_dir.mkdir(parents=True)
    tgz = next(tgz_dir.glob("apicurio-registry-app-*-all.tar.gz"))
    with tarfile.open(tgz) as tf:
        _extract(tf, app_dir)
    tgz.unlink()
    if not list(app_dir.rglob("quarkus-run.jar")):
        raise StackError(f"Apicurio assembly {tgz.name} has no quarkus-run.jar; see {app_dir}")
    marker.write_text(stamp)


def render(ctx: Context, name: str, **values: object) -> Path:
    text = Template((HERE / name).read_text()).substitute({k: str(v) for k, v in values.items()})
    out = ctx.conf / name
    out.write_text(text)
    return out


def java_cmd(process: Process, main: list[str], heap: str, java: str | None = None) -> list[str]:
    return [
        java or java_bin(),
        f"-Xmx{heap}",
        "-Xms64m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={HERE / 'log4j2.properties'}",
        f"-Dpssync.log.file={process.log}",
        *main,
    ]
