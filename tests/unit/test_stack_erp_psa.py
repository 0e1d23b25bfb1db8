"""The ERP's and PSA's local configuration, rendered from settings; `--only` knows them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import yaml

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _load_stack() -> Any:
    name = "pssync_local_stack_erp_psa"
    spec = importlib.util.spec_from_file_location(name, ROOT / "docker" / "local" / "stack.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


stack = _load_stack()
from components import erp, psa  # noqa: E402  (importable once stack.py is loaded)


def test_trytond_config_points_at_the_stacks_postgres_and_port(tmp_path: Path) -> None:
    text = erp.render_config(25432, 28000, tmp_path)
    assert "uri = postgresql://postgres:postgres@127.0.0.1:25432/\n" in text
    assert "listen = 127.0.0.1:28000\n" in text
    assert f"path = {tmp_path / 'attachments'}\n" in text


def test_redmine_database_yml_is_the_psa_database_on_the_stacks_port() -> None:
    conf = yaml.safe_load(psa.render_database_yml(25432, "psa"))["production"]
    assert conf["adapter"] == "postgresql"
    assert (conf["host"], conf["port"], conf["database"]) == ("127.0.0.1", 25432, "psa")


def test_session_header_is_login_uid_token_in_base64() -> None:
    header = erp.session_header("pssync", 4, "abc")["Authorization"]
    assert header == "Session cHNzeW5jOjQ6YWJj"  # base64("pssync:4:abc")


def test_ports_urls_and_credential_files_come_from_settings(tmp_path: Path) -> None:
    s = Settings.from_env(
        {"PSSYNC_ERP_PORT": "28000", "PSSYNC_PSA_PORT": "23000", "PSSYNC_STACK_DIR": str(tmp_path)}
    )
    assert (s.erp_url, s.psa_url) == ("http://127.0.0.1:28000", "http://127.0.0.1:23000")
    assert s.erp_password_file == tmp_path / "secrets" / "erp-pssync.password"
    assert s.psa_api_key_file == tmp_path / "secrets" / "psa-pssync.key"
    assert not s.erp_external and not s.psa_external
    st = stack.Stack(s)
    assert st.by_name["erp"].status().where == "port 28000"
    assert st.by_name["psa"].status().where == "port 23000"


def test_a_url_makes_the_system_external_only_checked(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "PSSYNC_ERP_URL": "https://erp.example.com/",
            "PSSYNC_PSA_URL": "https://psa.example.com",
            "PSSYNC_STACK_DIR": str(tmp_path),
        }
    )
    assert s.erp_external and s.psa_external
    assert s.erp_url == "https://erp.example.com"
    st = stack.Stack(s)
    for name in ("erp", "psa"):
        c = st.by_name[name]
        assert c.log_path is None
        c.install()
        c.stop()  # nothing to install or stop: the user runs it


def test_each_clone_is_its_own_redmine_instance(tmp_path: Path) -> None:
    a = stack.Stack(Settings.from_env({"PSSYNC_STACK_DIR": str(tmp_path / "a" / ".stack")}))
    b = stack.Stack(Settings.from_env({"PSSYNC_STACK_DIR": str(tmp_path / "b" / ".stack")}))
    pa, pb = a.by_name["psa"], b.by_name["psa"]
    assert pa.instance != pb.instance
    assert pa.link.parent == Path("/var/lib/redmine")
    assert pa.instance_dir == tmp_path / "a" / ".stack" / "psa" / "instance"


def test_only_accepts_erp_and_psa() -> None:
    assert stack.parse_only("postgres,erp,psa") == ("postgres", "erp", "psa")
    assert stack.COMPONENTS[-2:] == ("erp", "psa")


class _Recorder:
    """A component that only records when it is started and waited for."""

    def __init__(self, name: str, events: list[str]) -> None:
        self.name = name
        self.events = events

    @property
    def log_path(self) -> Path | None:
        return None

    def install(self) -> None:
        self.events.append(f"install {self.name}")

    def start(self) -> None:
        self.events.append(f"start {self.name}")

    def ready(self) -> bool:
        return True

    def wait_ready(self) -> float:
        self.events.append(f"ready {self.name}")
        return 0.0

    def stop(self) -> None:
        self.events.append(f"stop {self.name}")


def test_up_starts_each_component_once_what_it_needs_is_ready(tmp_path: Path) -> None:
    events: list[str] = []
    st = stack.Stack(Settings.from_env({"PSSYNC_STACK_DIR": str(tmp_path)}))
    st.by_name = {n: _Recorder(n, events) for n in stack.COMPONENTS}
    st.up()
    starts = [e for e in events if not e.startswith("install")]
    assert sorted(starts) == sorted(
        [f"{verb} {n}" for n in stack.COMPONENTS for verb in ("start", "ready")]
    )
    for name, needs in stack.NEEDS.items():
        for dep in needs:
            assert starts.index(f"ready {dep}") < starts.index(f"start {name}"), (name, dep)
    # Independent components boot side by side: Kafka starts before PostgreSQL is ready.
    assert starts.index("start kafka") < starts.index("ready postgres")
    events.clear()
    st.down(("erp", "psa"))
    assert events == ["stop psa", "stop erp"]
