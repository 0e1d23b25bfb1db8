"""Connector configs carry config-provider references, never a credential."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from string import Template

import pytest

from connectors.debezium import crm_connector, secrets_properties, write_secrets_file
from streams.errors import ConfigError
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _java_properties(text: str) -> dict[str, str]:
    """Just enough of java.util.Properties to read back what we write."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line[0] in "#!":
            continue
        key, _, value = line.partition("=")
        chars, i, decoded = value, 0, []
        while i < len(chars):
            c = chars[i]
            if c == "\\" and i + 1 < len(chars):
                nxt = chars[i + 1]
                decoded.append({"n": "\n", "r": "\r", "t": "\t"}.get(nxt, nxt))
                i += 2
                continue
            decoded.append(c)
            i += 1
        out[key] = "".join(decoded)
    return out


def test_file_references_by_default() -> None:
    s = Settings.from_env({"PSSYNC_CRM_DB_PASSWORD": "hunter2-secret"})
    conf = crm_connector(s)["config"]
    path = s.connect_secrets_file
    assert conf["database.password"] == f"${{file:{path}:crm.password}}"
    assert conf["database.user"] == f"${{file:{path}:crm.user}}"
    assert "hunter2-secret" not in json.dumps(crm_connector(s))


def test_env_references() -> None:
    s = Settings.from_env({"PSSYNC_CONNECT_SECRETS": "env", "PSSYNC_CRM_DB_PASSWORD": "pw-xyz"})
    conf = crm_connector(s)["config"]
    assert conf["database.password"] == "${env:PSSYNC_CRM_DB_PASSWORD}"
    assert "pw-xyz" not in json.dumps(conf)


@pytest.mark.parametrize(
    ("env", "fix"),
    [
        ({"PSSYNC_CONNECT_SECRETS": "vault"}, "use `file`"),
        ({"PSSYNC_CONNECT_SECRETS_FILE": "secrets.properties"}, "use an absolute path"),
        ({"PSSYNC_CONNECT_SECRETS_FILE": "/c:/secrets.properties"}, "without ':'"),
    ],
)
def test_bad_secret_settings(env: dict[str, str], fix: str) -> None:
    with pytest.raises(ConfigError, match=fix):
        Settings.from_env(env)


def test_secrets_file_is_private_and_round_trips(tmp_path: Path) -> None:
    tricky = "p=a:s#s\\w!rd \n end"
    target = tmp_path / "sub" / "connect.properties"
    s = Settings.from_env(
        {"PSSYNC_CONNECT_SECRETS_FILE": str(target), "PSSYNC_CRM_DB_PASSWORD": tricky}
    )
    assert write_secrets_file(s) == target
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert _java_properties(target.read_text()) == {
        "crm.user": "postgres",
        "crm.password": tricky,
        # The ERP's and the PSA's databases are captured too, with their own credentials.
        "erp.user": "postgres",
        "erp.password": "postgres",
        "psa.user": "postgres",
        "psa.password": "postgres",
    }
    # Rewriting keeps the mode (an existing file is replaced, not reopened with its old mode).
    target.chmod(0o644)
    write_secrets_file(s)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert secrets_properties(s).startswith("#")


def test_local_worker_has_config_providers() -> None:
    props = (ROOT / "docker" / "local" / "connect.properties").read_text()
    assert "config.providers=file,env\n" in props
    assert (
        "config.providers.file.class=org.apache.kafka.common.config.provider.FileConfigProvider\n"
        in props
    )
    assert (
        "config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider\n"
        in props
    )
    # The file provider may read only the secrets folder, not any file the worker can read.
    assert "config.providers.file.param.allowed.paths=${secrets_dir}\n" in props


def test_local_worker_config_renders() -> None:
    # The stack fills the template with string.Template: a stray '$' would break `make up`.
    text = Template((ROOT / "docker" / "local" / "connect.properties").read_text()).substitute(
        kafka_port=9092, connect_port=8083, plugin_path="/p", secrets_dir="/s/secrets"
    )
    assert "config.providers.file.param.allowed.paths=/s/secrets\n" in text
