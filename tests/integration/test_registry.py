"""Contracts against the real registry: evolution gates, the CLI's account, wire interop."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas import cli, contracts, conventions
from schemas.registry import Registry, client_config
from schemas.samples import Sampler
from schemas.serde import Decoder, encode
from streams.errors import RegistryError, SerdeError
from streams.settings import Settings

pytestmark = pytest.mark.integration

Data = dict[str, Any]


@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = Registry(Settings.from_env())
    try:
        reg.subjects()
    except RegistryError as exc:
        pytest.skip(f"no schema registry: {exc}")
    return reg


@pytest.fixture
def namespace(registry: Registry) -> Iterator[str]:
    ns = f"it{uuid.uuid4().hex[:10]}"
    yield ns
    for subject in registry.subjects():
        if subject.startswith(f"{ns}."):
            registry.delete_subject(subject)


def scratch(tmp_path: Path, *stems: str) -> Path:
    d = tmp_path / "avro"
    d.mkdir(exist_ok=True)
    for stem in ("envelope", *stems):
        shutil.copy(contracts.AVRO_DIR / f"{stem}.avsc", d / f"{stem}.avsc")
    return d


def mutate(directory: Path, stem: str, change: Callable[[list[Data]], None]) -> None:
    """Apply `change` to the fields of the `data` record of `<stem>.avsc`."""
    path = directory / f"{stem}.avsc"
    schema = json.loads(path.read_text())
    change(schema["fields"][1]["type"][1]["fields"])
    path.write_text(json.dumps(schema))


def field(fields: list[Data], name: str) -> Data:
    return next(f for f in fields if f["name"] == name)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def add_optional(fields: list[Data]) -> None:
    fields.append(
        {
            "name": "overtime_code",
            "type": ["null", "string"],
            "default": None,
            "doc": "Overtime class.",
        }
    )


def add_required(fields: list[Data]) -> None:
    fields.append({"name": "overtime_code", "type": "string", "doc": "Overtime class."})


def change_type(fields: list[Data]) -> None:
    field(fields, "hours")["type"] = "string"


def drop_enum_symbol(fields: list[Data]) -> None:
    enum = field(fields, "approval_state")
    enum["type"]["symbols"].remove("withdrawn")
    del enum["type"]["default"]


def remove_field(fields: list[Data]) -> None:
    fields.remove(field(fields, "description"))


def test_compatible_evolution_is_accepted(
    registry: Registry, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = scratch(tmp_path, "time_entry")
    args = ("--dir", str(d), "--namespace", namespace)
    assert run(capsys, "register", *args)[0] == 0
    subject = f"{namespace}.canonical.time_entry-value"
    assert registry.compatibility(subject) == "BACKWARD_TRANSITIVE"
    assert run(capsys, "register", *args)[0] == 0  # idempotent
    assert registry.versions(subject) == [1]

    mutate(d, "time_entry", add_optional)
    code, out = run(capsys, "check", *args)
    assert code == 0, out
    assert run(capsys, "register", *args)[0] == 0
    assert registry.versions(subject) == [1, 2]
    code, out = run(capsys, "diff", subject, "--from", "1", "--to", "2", *args)
    assert "+ data.overtime_code: null | string (default null)" in out
    # Removing a field is BACKWARD compatible: new readers simply ignore it.
    mutate(d, "time_entry", remove_field)
    assert run(capsys, "check", *args)[0] == 0


@pytest.mark.parametrize(
    ("stem", "change", "expected"),
    [
        ("time_entry", add_required, "new field `data.overtime_code` has no default"),
        ("time_entry", change_type, "field `data.hours` changed type from double to string"),
        ("time_entry", drop_enum_symbol, "enum symbol(s) `withdrawn` removed"),
        (
            "ref_currency",
            lambda fs: fs.remove(field(fs, "name")),
            "field `data.name` removed without default",
        ),
    ],
)
def test_breaking_change_is_rejected_and_explained(
    registry: Registry,
    namespace: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    stem: str,
    change: Callable[[list[Data]], None],
    expected: str,
) -> None:
    d = scratch(tmp_path, stem)
    args = ("--dir", str(d), "--namespace", namespace)
    assert run(capsys, "register", *args)[0] == 0
    mutate(d, stem, change)

    code, out = run(capsys, "check", *args)
    assert code == 1
    assert "FAIL" in out and expected in out, out

    name = stem.removeprefix("ref_")
    subject = conventions.contract_subject(name, stem.startswith("ref_"), namespace)
    with pytest.raises(RegistryError, match="refused schema"):
        registry.register(subject, contracts.Catalog(d).schema_str(name))
    assert registry.versions(subject) == [1]


def test_show_list_and_compat(
    registry: Registry, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = scratch(tmp_path, "ref_region")
    args = ("--dir", str(d), "--namespace", namespace)
    run(capsys, "register", *args)
    subject = f"{namespace}.reference.region-value"
    code, out = run(capsys, "show", subject, "--namespace", namespace)
    assert code == 0 and '"RegionEvent"' in out
    code, out = run(capsys, "list")
    assert f"{subject}  versions 1  FULL" in out
    assert run(capsys, "compat", subject, "none")[0] == 0
    assert registry.compatibility(subject) == "NONE"


def test_unknown_schema_id_is_a_serde_error(registry: Registry) -> None:
    with pytest.raises(SerdeError, match="unknown"):
        Decoder(registry.schema_by_id).decode(b"\x00\x7f\xff\xff\xf0" + b"\x00")


def _confluent(registry: Registry) -> SchemaRegistryClient:
    return SchemaRegistryClient(client_config(Settings.from_env()))


def test_confluent_serializer_to_our_decoder(registry: Registry, namespace: str) -> None:
    topic = f"{namespace}.canonical.time_entry"
    ser = AvroSerializer(_confluent(registry), contracts.schema_str("time_entry"))
    ctx = SerializationContext(topic, MessageField.VALUE)
    decoder = Decoder(registry.schema_by_id)
    for rec in Sampler(contracts.schema("time_entry"), seed=3).records(20):
        data = ser(rec, ctx)
        assert data is not None
        assert decoder.decode(data) == rec


def test_our_encoder_to_confluent_deserializer(registry: Registry, namespace: str) -> None:
    topic = f"{namespace}.canonical.invoice"
    schema_id = registry.register(f"{topic}-value", contracts.schema_str("invoice"))
    de = AvroDeserializer(_confluent(registry))
    ctx = SerializationContext(topic, MessageField.VALUE)
    for rec in Sampler(contracts.schema("invoice"), seed=4).records(20):
        assert de(encode(schema_id, contracts.parsed("invoice"), rec), ctx) == rec
