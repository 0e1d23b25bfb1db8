"""`pssync dlq list | show | rerun` on the real stack, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer

from schemas import contracts
from schemas.registry import Registry
from schemas.samples import Sampler
from schemas.serde import Encoder
from streams.admin import delete_topics, ensure_topics
from streams.deadletters.model import RERUN_HEADER
from streams.dlq import dlq_headers, read_context
from streams.errors import BadEventError, SerdeError
from streams.output import produce_sync
from streams.security import kafka_config
from streams.settings import Settings
from streams.topology import Topology, topic_specs, topology
from tests.integration.conftest import REPO, SliceEnv
from tests.integration.kafka_util import read_all

pytestmark = pytest.mark.integration


def pssync(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(env: dict[str, str], *args: str) -> str:
    done = pssync(env, *args)
    assert done.returncode == 0, f"pssync {' '.join(args)}: {done.stderr}\n{done.stdout}"
    return done.stdout


def ok_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(ok(env, *args, "--json"))


def fails(env: dict[str, str], *args: str) -> str:
    done = pssync(env, *args)
    assert done.returncode == 2, f"pssync {' '.join(args)} should fail: {done.stdout}"
    return done.stderr


def count(settings: Settings, topic: str) -> int:
    return len(read_all(settings, topic)) if _end(settings, topic) else 0


def _end(settings: Settings, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(kafka_config(settings, **{"group.id": f"assert-{uuid.uuid4()}"}))
    try:
        return int(c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        c.close()


@dataclass
class DlqEnv:
    settings: Settings
    env: dict[str, str]
    topo: Topology


@pytest.fixture
def dlq_env(base_settings: Settings) -> Iterator[DlqEnv]:
    sfx = "q" + uuid.uuid4().hex[:10]
    env = {
        **os.environ,
        "PSSYNC_TOPIC_NAMESPACE": sfx,
        "PSSYNC_CRM_TOPIC_PREFIX": f"crm_{sfx}",
        "PSSYNC_ERP_TOPIC_PREFIX": f"erp_{sfx}",
        "PSSYNC_PSA_TOPIC_PREFIX": f"psa_{sfx}",
    }
    settings = Settings.from_env(env)
    ensure_topics(settings, topic_specs(settings))
    topo = topology(settings)
    try:
        yield DlqEnv(settings, env, topo)
    finally:
        delete_topics(settings, [s.name for s in topic_specs(settings)])
        registry = Registry(settings)
        if topo.subject("opportunity") in registry.subjects():
            registry.delete_subject(topo.subject("opportunity"))


def _poison(e: DlqEnv) -> dict[str, tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    """Four dead letters, as the worker writes them, on the test's own DLQ topics.

    Returns dead letter ref -> (origin topic, key, value, original headers).
    """
    raw, canonical = e.topo.routes[0].raw_topic, e.topo.canonical("opportunity")
    registry = Registry(e.settings)
    record = Sampler(contracts.schema("opportunity"), seed=3).record()
    avro = Encoder(
        registry.register, e.topo.subject("opportunity"), contracts.schema_str("opportunity")
    ).encode(record)
    no_after = json.dumps({"op": "c", "before": None, "after": None}).encode()
    binary_header = [("trace", b"\x00\xffbin"), ("empty", b"")]
    letters = [
        # (stage, origin topic, origin offset, key, value, original headers, error)
        ("normalize", raw, 7, b'{"id":"006A"}', b"{not json", binary_header, BadEventError("x")),
        ("normalize", raw, 9, b'{"id":"006B"}', no_after, [], KeyError("'after'")),
        ("sink", canonical, 3, b"crm:opportunity:006C", avro, [], ValueError("char(3)")),
        ("sink", canonical, 4, b"crm:opportunity:006J", b"\x00\x00\x00", [], SerdeError("short")),
    ]
    p = Producer(kafka_config(e.settings))
    out = {}
    per_topic: dict[str, int] = {}
    for stage, origin, offset, key, value, headers, error in letters:
        dlq = e.topo.dlq(stage)
        h = dlq_headers(stage, origin, 0, offset, 1_700_000_000_000, error, list(headers))
        p.produce(dlq, key=key, value=value, headers=h)
        ref = f"{dlq}:0:{per_topic.get(dlq, 0)}"
        per_topic[dlq] = per_topic.get(dlq, 0) + 1
        out[ref] = (origin, key, value, headers)
    assert p.flush(30) == 0
    return out


def test_list_show_rerun_and_rerun_again(dlq_env: DlqEnv) -> None:
    e = dlq_env
    boot = e.settings
    raw, canonical = e.topo.routes[0].raw_topic, e.topo.canonical("opportunity")
    letters = _poison(e)
    n0, n1, s0, s1 = list(letters)

    listed = ok_json(e.env, "dlq", "list")
    groups = {(g["stage"], g["error_class"]): (g["count"], g["rerun"]) for g in listed["groups"]}
    assert groups == {
        ("normalize", "BadEventError"): (1, 0),
        ("normalize", "KeyError"): (1, 0),
        ("sink", "ValueError"): (1, 0),
        ("sink", "SerdeError"): (1, 0),
    }
    assert [r["dead_letter"] for r in listed["records"]] == [n0, n1, s0, s1]
    assert listed["records"][0]["origin"] == f"{raw}:0:7"
    table = ok(e.env, "dlq", "list", "--records")
    assert "BadEventError" in table and f"{n0}  <- {raw}:0:7" in table and "not rerun" in table
    assert [
        r["dead_letter"] for r in ok_json(e.env, "dlq", "list", "--stage", "sink")["records"]
    ] == [s0, s1]
    only = ok_json(e.env, "dlq", "list", "--error-class", "serdeerror")["records"]
    assert [r["dead_letter"] for r in only] == [s1]
    assert ok_json(e.env, "dlq", "list", "--older-than", "1h")["records"] == []
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert len(ok_json(e.env, "dlq", "list", "--since", since)["records"]) == 4

    # show: raw JSON pretty-printed, canonical Avro through the registry, junk as hex.
    shown = ok_json(e.env, "dlq", "show", n1)
    assert shown["value"] == {
        "encoding": "json",
        "decoded": {"op": "c", "before": None, "after": None},
    }
    assert shown["key"]["decoded"] == {"id": "006B"}
    assert shown["context"]["error.class"] == "KeyError" and shown["rerun"] is None
    shown = ok_json(e.env, "dlq", "show", n0)
    assert shown["value"]["encoding"] == "utf-8" and shown["value"]["note"] == "not valid JSON"
    assert shown["headers"][0] == {"name": "trace", "encoding": "hex", "decoded": "00 ff 62 69 6e"}
    shown = ok_json(e.env, "dlq", "show", s0)
    assert shown["value"]["encoding"] == "avro"
    assert (
        shown["value"]["decoded"]["data"]["opportunity_id"]
        == Sampler(contracts.schema("opportunity"), seed=3).record()["data"]["opportunity_id"]
    )
    shown = ok_json(e.env, "dlq", "show", s1)
    assert shown["value"]["encoding"] == "hex" and shown["value"]["decoded"] == "00 00 00"
    assert "not decodable as Avro" in shown["value"]["note"]
    text = ok(e.env, "dlq", "show", s0)
    assert "value (avro)" in text and f"origin       {canonical}:0:3" in text

    # Dry run by default: a plan, nothing produced.
    plan = ok(e.env, "dlq", "rerun")
    assert "4 dead letter(s) to rerun" in plan and "dry run" in plan
    assert f"note: {canonical} is compacted" in plan
    assert _end(boot, raw) == 0 and _end(boot, canonical) == 0
    assert _end(boot, e.topo.dlq_reruns) == 0

    out = ok(e.env, "dlq", "rerun", "--stage", "normalize", "--execute")
    assert "2 dead letter(s) rerun and recorded" in out
    again = ok(e.env, "dlq", "rerun", "--stage", "normalize", "--execute")
    assert "nothing to rerun (2 selected already rerun)" in again
    out = ok(e.env, "dlq", "rerun", "--execute")  # only the two sink dead letters are left
    assert f"rerun {s0} -> {canonical}:0:0" in out and f"rerun {n0}" not in out
    assert f"skip {n0}: already rerun" in out
    assert "nothing to rerun (4 selected already rerun)" in ok(e.env, "dlq", "rerun", "--execute")

    # Each dead letter is on its origin topic exactly once: original bytes and headers, the
    # pssync.dlq.* context gone, the dead letter it came from named.
    for topic, refs in ((raw, [n0, n1]), (canonical, [s0, s1])):
        copies = read_all(boot, topic)
        assert [c.headers()[-1] for c in copies] == [(RERUN_HEADER, r.encode()) for r in refs]
        for copy, ref in zip(copies, refs, strict=True):
            origin, key, value, headers = letters[ref]
            assert (origin, copy.key(), copy.value()) == (topic, key, value)
            assert copy.headers()[:-1] == headers
            assert read_context(copy.headers()) == {}
    reruns = {m.key().decode(): json.loads(m.value()) for m in read_all(boot, e.topo.dlq_reruns)}
    assert set(reruns) == set(letters)
    assert reruns[n1]["topic"] == raw and reruns[n1]["offset"] == 1
    assert reruns[s0]["topic"] == canonical and reruns[s0]["offset"] == 0
    assert all(r["dead_letter_ts"] > 0 for r in reruns.values())

    listed = ok_json(e.env, "dlq", "list")
    assert all(g["rerun"] == g["count"] == 1 for g in listed["groups"])
    assert listed["records"][1]["rerun"]["to"] == f"{raw}:0:1"
    assert ok_json(e.env, "dlq", "show", n1)["rerun"]["to"] == f"{raw}:0:1"


def test_bad_selectors_unknown_topics_and_an_unreachable_registry(dlq_env: DlqEnv) -> None:
    e = dlq_env
    letters = _poison(e)
    n0, _, s0, _ = list(letters)
    dlq = e.topo.dlq("normalize")
    assert "<dlq topic>:<partition>:<offset>" in fails(e.env, "dlq", "show", "dlq.normalize")
    assert "does not exist" in fails(e.env, "dlq", "show", f"{dlq}x:0:0")
    assert "holds offsets 0..1" in fails(e.env, "dlq", "show", f"{dlq}:0:5")
    assert "partitions [0], not 3" in fails(e.env, "dlq", "show", f"{dlq}:3:0")
    assert "30m, 1h" in fails(e.env, "dlq", "list", "--older-than", "1 hour")
    assert "time zone" in fails(e.env, "dlq", "rerun", "--since", "2026-11-29T10:00:00")
    assert "does not exist" in fails(e.env, "dlq", "rerun", "--offsets", f"nope.{dlq}:0:0")
    # A record without pssync.dlq.* headers is not a dead letter.
    produce_sync(e.settings, [(dlq, b"k", b"v")])
    assert "not a dead letter" in fails(e.env, "dlq", "show", f"{dlq}:0:2")
    # The registry cannot be asked: say so (the bytes may be fine); --raw still shows them.
    away = {**e.env, "PSSYNC_REGISTRY_URL": "http://127.0.0.1:9/apis/ccompat/v7"}
    assert "PSSYNC_REGISTRY_URL" in fails(away, "dlq", "show", s0)
    assert ok_json(away, "dlq", "show", s0, "--raw")["value"]["encoding"] == "hex"
    # Offsets select exactly; a dead letter whose origin topic is gone is refused, not
    # produced to an auto-created topic.
    assert "1 dead letter(s) to rerun" in ok(e.env, "dlq", "rerun", "--offsets", n0)
    delete_topics(e.settings, [e.topo.routes[0].raw_topic])
    assert "does not exist" in fails(e.env, "dlq", "rerun", "--offsets", n0, "--execute")
    assert _end(e.settings, e.topo.dlq_reruns) == 0


def test_poison_rerun_goes_back_to_the_worker_and_dead_letters_again(
    slice_env: SliceEnv,
) -> None:
    """The loop is bounded (one rerun per dead letter) and visible (rerun-of header)."""
    env = slice_env
    boot = env.settings
    topo = topology(env.settings)
    raw, dlq = topo.routes[0].raw_topic, topo.dlq("normalize")
    env.worker().start()
    p = Producer(kafka_config(boot))
    p.produce(raw, key=b'{"id":"006Z"}', value=b"{still not json", headers=[("trace", b"t1")])
    assert p.flush(30) == 0
    env.wait_for(lambda: count(boot, dlq) == 1, what="first dead letter")
    first = f"{dlq}:0:0"

    out = ok(env.env, "dlq", "rerun", "--execute")
    assert f"rerun {first} -> {raw}:0:1" in out
    env.wait_for(lambda: count(boot, dlq) == 2, what="the rerun poison dead-lettered again")
    copies = read_all(boot, raw)
    assert [(c.key(), c.value()) for c in copies] == [(b'{"id":"006Z"}', b"{still not json")] * 2
    assert copies[1].headers() == [("trace", b"t1"), (RERUN_HEADER, first.encode())]
    second = read_all(boot, dlq)[1]
    assert second.value() == b"{still not json"
    assert read_context(second.headers())["offset"] == "1"

    listed = ok_json(env.env, "dlq", "list")["records"]
    assert [(r["dead_letter"], r["rerun_of"]) for r in listed] == [
        (first, None),
        (f"{dlq}:0:1", first),
    ]
    assert listed[0]["rerun"]["to"] == f"{raw}:0:1" and listed[1]["rerun"] is None
    again = ok(env.env, "dlq", "rerun", "--offsets", first, "--execute")
    assert "nothing to rerun (1 selected already rerun)" in again
    assert count(boot, raw) == 2


def test_sink_dead_letter_lands_after_the_target_is_fixed(slice_env: SliceEnv) -> None:
    """The use the tool is for: the target rejected a row, it is fixed, the row is rerun."""
    env = slice_env
    boot = env.settings
    topo = topology(env.settings)
    canonical, dlq = topo.canonical("opportunity"), topo.dlq("sink")
    env.worker().start()
    insert = (
        "INSERT INTO sales.opportunity (id, name, stage_name, amount, currency_iso_code, "
        "close_date) VALUES (:id, :name, 'Prospecting', 1, 'EUR', '2027-02-01')"
    )
    env.crm(insert, {"id": "006F0", "name": "First"})
    env.wait_for(lambda: len(env.target_rows()) == 1, what="the sink's table")
    env.crm_target("ALTER TABLE opportunity ADD CONSTRAINT not_blocked CHECK (name <> 'Blocked')")
    env.crm(insert, {"id": "006F1", "name": "Blocked"})
    env.wait_for(lambda: count(boot, dlq) == 1, what="the rejected row dead-lettered")
    listed = ok_json(env.env, "dlq", "list", "--stage", "sink")["records"]
    assert "not_blocked" in listed[0]["error_message"]

    env.crm_target("ALTER TABLE opportunity DROP CONSTRAINT not_blocked")
    out = ok(env.env, "dlq", "rerun", "--stage", "sink", "--execute")
    assert f"rerun {dlq}:0:0 -> {canonical}:0:2" in out
    env.wait_for(
        lambda: len(env.target_rows("name = 'Blocked'")) == 1, what="the rerun row in the target"
    )
    events = read_all(boot, canonical)
    assert events[2].value() == events[1].value() and events[2].key() == events[1].key()
    assert count(boot, dlq) == 1  # it did not fail again
    assert "nothing to rerun" in ok(env.env, "dlq", "rerun", "--stage", "sink", "--execute")
