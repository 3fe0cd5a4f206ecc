"""The Avro wire format (kafka.flows_format = "avro"): the producer's encoder against Apache Avro's own decoder
(Spark's from_avro), every hostile datum with its exact reason, and the same validated flows as the JSON format."""

from __future__ import annotations

import base64
import datetime
import json
import math
import struct
from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from jobs import stream_detect
from jobs.lib.config import ConfigError, load_config
from jobs.lib.flow_io import iter_flow_records
from jobs.lib.messages import parse_avro_messages, raw_text
from jobs.lib.synthetic import synthetic_flows
from jobs.replay_flows import _varint, encode, encode_avro
from models.artifact import load_model
from schemas.records import FLOW_MESSAGE, flow_message_avro_schema, flow_message_avsc

REPO = Path(__file__).resolve().parents[1]
BASE = json.loads(encode(next(iter(synthetic_flows(1, seed=3)))))
WHEN = datetime.datetime(2026, 1, 1)
KAFKA_ROW = "value binary, topic string, partition int, offset long, timestamp timestamp"


def _kafka(spark, values: list[bytes]):
    return spark.createDataFrame([(v, "flows", 0, i, WHEN) for i, v in enumerate(values)], KAFKA_ROW)


def test_the_committed_avsc_is_the_schema_module():
    text = (REPO / "schemas" / "flow_message.avsc").read_text()
    assert text == flow_message_avsc(), "regenerate: python -m schemas.records > schemas/flow_message.avsc"
    schema = json.loads(text)
    assert [f["name"] for f in schema["fields"]] == FLOW_MESSAGE.fieldNames()
    assert {f["type"][1] for f in schema["fields"]} == {"string", "int", "double", "long"}
    assert all(f["type"][0] == "null" and f["default"] is None for f in schema["fields"])


@pytest.mark.parametrize(("n", "encoded"), [(0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (-2, b"\x03"),
                                            (63, b"\x7e"), (-64, b"\x7f"), (64, b"\x80\x01"),
                                            (-(2**63), b"\xff" * 9 + b"\x01")])
def test_varint_is_avros_zigzag_encoding(n, encoded):
    # the examples of the Avro specification, "Binary Encoding", and the lowest long
    assert _varint(n) == encoded


def test_encoder_writes_each_field_as_the_schema_says():
    record = {"src_port": -5, "flow_duration": 1.5, "label": "Ä", "source_row": 2**40}
    names = FLOW_MESSAGE.fieldNames()
    expected = b""
    for name in names:
        if name not in record:
            expected += b"\x00"
        elif name == "flow_duration":
            expected += b"\x02" + struct.pack("<d", 1.5)
        elif name == "label":
            expected += b"\x02\x04" + "Ä".encode()
        else:
            expected += b"\x02" + _varint(record[name])
    assert encode_avro(record) == expected


@pytest.mark.parametrize(("record", "message"), [
    ({"ttl": 64}, "fields not in schemas/flow_message.avsc: ['ttl']"),
    ({"src_port": 2**31}, "field 'src_port': 2147483648 is not an Avro int"),
    ({"src_port": 80.5}, "field 'src_port': 80.5 is not an Avro int"),
    ({"source_row": True}, "field 'source_row': True is not an Avro long"),
    ({"flow_duration": "abc"}, "field 'flow_duration': 'abc' is not a number"),
    ({"label": 5}, "field 'label': 5 is not a string"),
])
def test_encoder_refuses_what_the_schema_cannot_carry(record, message):
    with pytest.raises(ValueError) as error:
        encode_avro(record)
    assert str(error.value) == message


GOOD = encode_avro(BASE)
FLOW_ID = BASE["flow_id"].encode()
AFTER_FLOW_ID = GOOD[2 + len(FLOW_ID):]  # the datum after its first field (flow_id: branch, length, bytes)
assert GOOD[:2 + len(FLOW_ID)] == b"\x02" + _varint(len(FLOW_ID)) + FLOW_ID
ALL_NULL = b"\x00" * len(FLOW_MESSAGE.fields)

# every value a field can hold, at its type's edges
ODD = {**BASE, "flow_bytes_per_s": math.nan, "flow_packets_per_s": -math.inf, "flow_iat_max": math.inf,
       "src_ip": None, "flow_id": None, "label": "Web Attack \u2013 XSS \U0001F600", "src_port": -(2**31),
       "dst_port": 2**31 - 1, "source_row": 2**63 - 1, "flow_duration": -0.0, "source_file": ""}

# name -> (message, expected message_error, flow_duration as parsed)
CASES = {
    "valid": (GOOD, None, BASE["flow_duration"]),
    "odd": (encode_avro(ODD), None, -0.0),
    "empty": (b"", "empty_payload", None),
    # Spark's decoder reads one datum and ignores what follows: these would lose the rest silently
    "byte_after": (GOOD + b"\x00", "invalid_avro", BASE["flow_duration"]),
    "two_flows_in_one_record": (GOOD + GOOD, "invalid_avro", BASE["flow_duration"]),
    # the same datum with its first branch index as a two-byte varint: decodes, but is not one datum's bytes
    "overlong_varint": (b"\x82\x00" + GOOD[1:], "invalid_avro", BASE["flow_duration"]),
    "truncated": (GOOD[:-3], "invalid_avro", None),
    "a_json_message": (encode(BASE), "invalid_avro", None),
    # Confluent's serializer frames the datum: magic byte 0 and a 4-byte schema id before it
    "confluent_framed": (b"\x00\x00\x00\x00\x07" + GOOD, "invalid_avro", None),
    "garbage": (b"\xff\xfe\xfd", "invalid_avro", None),
    "branch_out_of_range": (b"\x04" + GOOD[1:], "invalid_avro", None),
    # a string that claims 2 GB in a short message must not allocate it, nor stop the job
    "string_length_bomb": (b"\x02" + _varint(2_000_000_000) + AFTER_FLOW_ID, "invalid_avro", None),
    "negative_string_length": (b"\x02" + _varint(-5) + AFTER_FLOW_ID, "invalid_avro", None),
    "varint_without_end": (b"\x02" + b"\xff" * 12, "invalid_avro", None),
    "not_utf8_flow_id": (b"\x02\x04\xff\xfe" + AFTER_FLOW_ID, "not_utf8: flow_id", BASE["flow_duration"]),
    "every_field_null": (ALL_NULL, "missing_field: flow_duration", None),
    "null_with_a_byte_after": (ALL_NULL + b"\x00", "invalid_avro", None),
    # undecodable (0x07 is no branch index) and exactly as long as ALL_NULL: the decoder's record of nulls is not it
    "garbage_as_long_as_all_null": (b"\x02\x00" + b"\x07" * (len(ALL_NULL) - 2), "invalid_avro", None),
    "one_feature_null": (encode_avro({**BASE, "total_fwd_packets": None}), "missing_field: total_fwd_packets",
                         BASE["flow_duration"]),
}


@pytest.fixture(scope="module")
def parsed(spark):
    names = list(CASES)
    df = parse_avro_messages(_kafka(spark, [v for v, _, _ in CASES.values()]))
    return {names[r["offset"]]: r for r in df.withColumn("raw", raw_text(F.col("value"), "avro")).collect()}


@pytest.mark.parametrize("name", list(CASES))
def test_avro_message_gets_its_exact_reason(parsed, name):
    value, error, duration = CASES[name]
    row = parsed[name]
    assert row["message_error"] == error
    assert row["flow_duration"] == duration
    assert bytes(row["value"]) == value and (row["topic"], row["partition"]) == ("flows", 0)
    assert row["raw"] == "base64:" + base64.b64encode(value).decode()  # quarantined losslessly


@pytest.mark.parametrize(("name", "record"), [("valid", BASE), ("odd", ODD)])
def test_apache_avro_decodes_every_field_exactly(parsed, name, record):
    row = parsed[name]
    for field in FLOW_MESSAGE.fieldNames():
        want, got = record.get(field), row[field]
        if isinstance(want, float) and math.isnan(want):
            assert math.isnan(got), field
        else:
            assert got == want and type(got) is type(want), field
            assert not isinstance(want, float) or math.copysign(1, got) == math.copysign(1, want), field


def test_the_jvm_limits_avro_string_lengths(spark):
    """The string-length bomb above is rejected without allocating only because the JVM carries Avro's limit;
    the stream job refuses to start an Avro run without it."""
    from jobs.lib.preflight import PreflightError
    from jobs.lib.spark import AVRO_STRING_LIMIT

    system = spark.sparkContext._jvm.java.lang.System
    assert system.getProperty(AVRO_STRING_LIMIT) == "1048576"
    stream_detect.check_avro_limits(spark, "avro")
    system.clearProperty(AVRO_STRING_LIMIT)  # Avro read it when its classes loaded: the limit stays in force
    try:
        stream_detect.check_avro_limits(spark, "json")
        with pytest.raises(PreflightError, match=f"kafka.flows_format = 'avro' needs -D{AVRO_STRING_LIMIT}"):
            stream_detect.check_avro_limits(spark, "avro")
    finally:
        system.setProperty(AVRO_STRING_LIMIT, "1048576")


def test_json_and_avro_give_the_same_validated_flows(spark, shared_data, tmp_path):
    """The same flows, one topic in each format: identical rows out of validated_flows (values, reasons, z-scored
    vector), real flows of both layouts and values the rules reject."""
    from tests.helpers import random_artifact

    ddos = list(iter_flow_records(shared_data / "friday-afternoon-ddos.csv"))[:12]
    web = list(iter_flow_records(shared_data / "thursday-morning-webattacks.csv"))[:6]  # 79 columns, no IPs
    odd = [{**ddos[0], "flow_bytes_per_s": math.inf}, {**ddos[1], "total_fwd_packets": -3.0},
           {**ddos[2], "dst_port": 70000}, {**ddos[3], "src_ip": "1.2.3.4'; DROP TABLE alerts;--"},
           {**ddos[4], "label": "NotALabel"}, {k: v for k, v in ddos[5].items() if k not in ("src_ip", "source_file")}]
    records = ddos + web + odd
    artifact = random_artifact(tmp_path / "model", seq_len=1)
    detector = load_model(artifact, device="cpu")
    out = {}
    for fmt, enc in (("json", encode), ("avro", encode_avro)):
        cfg = load_config([f"kafka.flows_format={fmt}"], env={})
        model_cfg = stream_detect.model_config(cfg, detector, [f"kafka.flows_format={fmt}"], None)
        flows = stream_detect.validated_flows(_kafka(spark, [enc(r) for r in records]), model_cfg,
                                              detector.norm_stats)
        out[fmt] = [r.asDict(recursive=True) for r in flows.drop("value", "raw").orderBy("offset").collect()]
    assert len(out["avro"]) == len(records)
    reasons = [r["reason"] for r in out["avro"]]
    assert reasons == [None] * 18 + [None, "negative_counter: total_fwd_packets", "invalid_identifier: dst_port",
                                     "invalid_identifier: src_ip", "unknown_label", "missing_key: src_ip"]

    def same(a, b):  # NaN == NaN for the comparison
        return json.dumps(a, default=str, sort_keys=True) == json.dumps(b, default=str, sort_keys=True)

    for row_json, row_avro in zip(out["json"], out["avro"], strict=True):
        assert same(row_json, row_avro), row_json["offset"]
    # Infinity crossed the wire as a double and was imputed as in the JSON format (prep.nonfinite_policy)
    assert math.isfinite(out["avro"][18]["flow_bytes_per_s"]) and len(out["avro"][0]["vector"]) == 76


def test_the_wire_format_is_checked_at_start():
    with pytest.raises(ConfigError, match="kafka.flows_format"):
        load_config(["kafka.flows_format=protobuf"], env={})


def test_avro_schema_types_come_from_the_schema_module():
    types = {f["name"]: f["type"][1] for f in flow_message_avro_schema()["fields"]}
    assert (types["src_port"], types["flow_duration"], types["source_row"], types["label"]) == (
        "int", "double", "long", "string")


def _mutations(n: int, seed: int) -> list[bytes]:
    """Valid datums (some without identifiers) each changed by 1-3 random edits: a byte set, bytes cut out or put
    in, the end cut off, a slice repeated, a large varint put in."""
    import random

    rng = random.Random(seed)
    base = [encode_avro(r) for r in synthetic_flows(20, seed=seed)]
    base += [encode_avro({**r, "src_ip": None, "flow_id": None}) for r in synthetic_flows(5, seed=seed + 1)]
    out = []
    for _ in range(n):
        m = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(m) + 1)
            op = rng.randrange(6)
            if op == 0 and i < len(m):
                m[i] = rng.randrange(256)
            elif op == 1:
                del m[i:i + rng.randint(1, 16)]
            elif op == 2:
                m[i:i] = rng.randbytes(rng.randint(1, 16))
            elif op == 3:
                del m[i:]
            elif op == 4:
                m[i:i] = m[max(0, i - 16):i]
            else:
                m[i:i] = _varint(rng.choice([2**31 - 9, 2**40, -(2**40), 10**6, 300]))
        out.append(bytes(m))
    return out


def test_mutated_datums_are_accepted_only_as_exact_encodings(spark):
    """2,000 random edits of valid datums: each gets a known reason, and a message that passes is exactly the
    encoding of what was read from it (the Python encoder writes the same bytes): nothing after it, nothing
    misread."""
    values = _mutations(2000, seed=7)
    rows = parse_avro_messages(_kafka(spark, values)).collect()
    strings = [f.name for f in FLOW_MESSAGE.fields if f.dataType.typeName() == "string"]
    known = {None, "empty_payload", "invalid_avro", *(f"not_utf8: {n}" for n in strings),
             *(f"missing_field: {n}" for n in FLOW_MESSAGE.fieldNames())}
    assert len(rows) == 2000 and {r["message_error"] for r in rows} <= known
    accepted = [r for r in rows if r["message_error"] is None]
    assert 0 < len(accepted) < 2000
    for r in accepted:
        record = {k: r[k] for k in FLOW_MESSAGE.fieldNames()}
        if any(isinstance(v, float) and math.isnan(v) for v in record.values()):
            continue  # a NaN's payload bits need not survive the trip through Python
        assert encode_avro(record) == bytes(r["value"]), r["offset"]
    rejected = Counter(r["message_error"].split(":")[0] for r in rows if r["message_error"])
    assert rejected["invalid_avro"] > 1000
