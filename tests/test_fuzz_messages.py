"""A fuzz test of the message contract: mutations of real CICIDS2017 messages through the real job.

Hypothesis draws the mutations (a field removed, retyped, out of range or extreme, NaN/Infinity spellings,
unicode, overlong strings, keys renamed, bytes flipped; up to three per message) from real records of both
layouts. The job runs once over all of them (a run per example would take minutes each), so hypothesis serves
as the generator of cases here, not as a shrinker: a failure names the offending messages instead. The contract:
the query ends without an error, and every record is in exactly one of flows_scored and quarantine, with a
reason the job knows; an unmutated message is scored.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs import stream_detect
from jobs.lib import prep as pp
from jobs.lib.config import load_config
from jobs.lib.flow_io import iter_flow_records
from jobs.lib.kafka_broker import ensure_topics
from jobs.replay_flows import encode, make_producer
from models.artifact import load_model
from schemas.records import FLOW_MESSAGE
from tests.helpers import random_artifact

FIELDS = FLOW_MESSAGE.fieldNames()
SPELLINGS = ["NaN", "Infinity", "-Infinity", "nan", "inf", "+Infinity", "1e309", "-1e309", "-0", "0x10", "", " 1 ",
             "1,5", "١٢٣"]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(SPELLINGS), st.text(max_size=40),
    st.integers(min_value=-1, max_value=70000), st.text(min_size=300, max_size=2000).map(lambda t: t * 3),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
FIELD = st.sampled_from(FIELDS)
MUTATION = st.one_of(
    st.tuples(st.just("remove"), FIELD),
    st.tuples(st.just("set"), FIELD, VALUES),
    st.tuples(st.just("rename"), FIELD, st.one_of(st.text(min_size=1, max_size=20), FIELD.map(str.upper))),
    st.tuples(st.just("flip"), st.integers(min_value=0, max_value=10**6), st.integers(min_value=1, max_value=255)),
)
# Every reason category the job writes (jobs.lib.messages, jobs.lib.prep, jobs.stream_detect).
KNOWN_REASONS = {"empty_payload", "not_utf8", "invalid_json", "unexpected_field", "duplicate_field", "missing_field",
                 "wrong_type", "missing_key", *pp.REJECT_REASONS}


def mutate(record: dict[str, Any], mutations: list[tuple[Any, ...]], ascii_only: bool) -> bytes:
    fields = dict(record)
    flips = []
    for mutation in mutations:
        if mutation[0] == "remove":
            fields.pop(mutation[1], None)
        elif mutation[0] == "set":
            fields[mutation[1]] = mutation[2]
        elif mutation[0] == "rename" and mutation[1] in fields:
            fields[mutation[2]] = fields.pop(mutation[1])
        elif mutation[0] == "flip":
            flips.append(mutation[1:])
    # Python writes NaN and Infinity bare (not JSON); the job must take them like any other bad text.
    data = bytearray(json.dumps(fields, ensure_ascii=ascii_only).encode("utf-8"))
    for at, bits in flips:
        data[at % len(data)] ^= bits
    return bytes(data)


def fuzzed_messages(shared_data, n: int, seed: int) -> list[bytes]:
    records = (list(iter_flow_records(shared_data / "friday-afternoon-ddos.csv"))[:50]
               + list(iter_flow_records(shared_data / "friday-afternoon-portscan.csv"))[:50]
               + list(iter_flow_records(shared_data / "thursday-morning-webattacks.csv"))[:50])
    drawn: list[bytes] = []

    @settings(max_examples=n, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(records), st.lists(MUTATION, min_size=1, max_size=3), st.booleans())
    def draw(record: dict[str, Any], mutations: list[tuple[Any, ...]], ascii_only: bool) -> None:
        drawn.append(mutate(record, mutations, ascii_only))

    draw()
    # and the unmutated originals, which must be scored
    return drawn + [encode(r) for r in records[seed % 50::50]]


def run_fuzz(spark, kafka_broker, shared_data, tmp_path, n: int) -> None:
    topic = f"fuzz-{n}"
    sets = [f"kafka.bootstrap_servers={kafka_broker.bootstrap}", f"kafka.flows_topic={topic}",
            "stream.publish_alerts=false", "spark.shuffle_partitions=2", "stream.max_offsets_per_trigger=1000"]
    cfg = load_config(sets, env={})
    values = fuzzed_messages(shared_data, n, seed=n)
    ensure_topics(kafka_broker.bootstrap, cfg, [topic])
    producer = make_producer(kafka_broker.bootstrap, cfg)
    sent = {}
    for i, value in enumerate(values):
        sent[i] = producer.send(topic, key=b"fuzz", value=value)
    producer.flush()
    offsets = {(m.partition, m.offset): values[i] for i, m in ((i, f.get(timeout=30)) for i, f in sent.items())}
    producer.close()

    artifact = random_artifact(tmp_path / "model", seq_len=2, threshold=0.5)
    detector = load_model(artifact, device="cpu")
    model_cfg = stream_detect.model_config(cfg, detector, sets, None)
    query = stream_detect.start(spark, cfg, model_cfg, detector, str(artifact), tmp_path / "out",
                                available_now=True)
    query.awaitTermination()
    assert query.exception() is None  # the job is up: no message content fails it

    def table(name: str) -> list[Any]:
        return spark.read.format("delta").load(str(tmp_path / "out" / "tables" / name)).collect()

    scored, quarantined = table("flows_scored"), table("quarantine")
    seen = Counter([(r.partition, r.offset) for r in scored] + [(r.partition, r.offset) for r in quarantined])
    assert sorted(seen) == sorted(offsets), "every record in flows_scored or quarantine"
    twice = {k: offsets[k][:200] for k, c in seen.items() if c > 1}
    assert not twice, f"records in both tables or twice: {twice}"
    unknown = {(r.reason, offsets[(r.partition, r.offset)][:200]) for r in quarantined
               if (r.reason or "").split(":")[0] not in KNOWN_REASONS}
    assert not unknown, f"quarantined with a reason the contract does not name (scoring_error included): {unknown}"
    originals = list(offsets)[n:]  # sent last, in order
    scored_keys = {(r.partition, r.offset) for r in scored}
    assert originals and all(k in scored_keys for k in originals), "unmutated messages are scored"
    assert len(quarantined) > n // 4 and len(scored) > len(originals)  # the mutations reached both tables


def test_fuzzed_messages_each_land_in_exactly_one_table(spark, kafka_broker, shared_data, tmp_path):
    run_fuzz(spark, kafka_broker, shared_data, tmp_path, 200)


@pytest.mark.slow
def test_fuzzed_messages_each_land_in_exactly_one_table_long(spark, kafka_broker, shared_data, tmp_path):
    run_fuzz(spark, kafka_broker, shared_data, tmp_path, 2500)
