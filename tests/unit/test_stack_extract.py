"""Unpacking the registry's assembly: members that would land outside the target are refused,
with or without Python's extraction filters (3.11.4+; Debian 12 has 3.11.2)."""

from __future__ import annotations

import contextlib
import io
import sys
import tarfile
from pathlib import Path

import pytest

from streams.errors import StackError

ROOT = Path(__file__).resolve().parents[2]
# docker/local/stack.py puts its folder on sys.path to import its components; so does this.
if str(ROOT / "docker" / "local") not in sys.path:
    sys.path.insert(0, str(ROOT / "docker" / "local"))
from components import jvm  # noqa: E402


def _archive(path: Path, *members: tuple[str, bytes | None, str]) -> Path:
    """A .tar.gz of (name, content, link target): a file when content is set, else a symlink."""
    with tarfile.open(path, "w:gz") as tf:
        for name, content, target in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tf.addfile(info)
            else:
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
    return path


@pytest.fixture(params=["filters", "no filters"])
def python(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "no filters":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no extraction filters")
    return str(request.param)


def test_a_sound_archive_unpacks(tmp_path: Path, python: str) -> None:
    tgz = _archive(
        tmp_path / "ok.tar.gz",
        ("app/lib/quarkus-run.jar", b"jar", ""),
        ("app/current", None, "lib"),
    )
    dest = tmp_path / "out"
    dest.mkdir()
    with tarfile.open(tgz) as tf:
        jvm._extract(tf, dest)
    assert (dest / "app/lib/quarkus-run.jar").read_bytes() == b"jar"
    assert (dest / "app/current/quarkus-run.jar").read_bytes() == b"jar"


@pytest.mark.parametrize(
    "member",
    [("../escaped", b"x", ""), ("/abs/escaped", b"x", ""), ("app/up", None, "../../etc")],
)
def test_a_member_outside_the_target_is_refused(
    tmp_path: Path, python: str, member: tuple[str, bytes | None, str]
) -> None:
    tgz = _archive(tmp_path / "bad.tar.gz", ("app/ok", b"ok", ""), member)
    dest = tmp_path / "out"
    dest.mkdir()
    with tarfile.open(tgz) as tf:
        if python == "no filters":
            with pytest.raises(StackError, match="would unpack outside"):
                jvm._extract(tf, dest)
        else:  # Python's data filter refuses, or strips a leading "/" and unpacks inside
            with contextlib.suppress(tarfile.TarError):
                jvm._extract(tf, dest)
    assert not (tmp_path / "escaped").exists()
    assert not Path("/abs/escaped").exists()
