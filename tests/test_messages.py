"""The Kafka message parser (jobs.lib.messages) without a broker: every spelling of a value the contract allows or
rejects, with the exact reason and the exact typed values. Most messages take the typed parse; a value that does
not fit its type sends the message through the text parse, and both must agree with the contract."""

from __future__ import annotations

import datetime
import json
import math

import pytest

from jobs.lib.messages import parse_flow_messages
from jobs.lib.synthetic import synthetic_flows
from jobs.replay_flows import encode

BASE = json.loads(encode(next(iter(synthetic_flows(1, seed=3)))))
DROP = object()


def message(**changes) -> bytes:
    fields = {k: v for k, v in BASE.items() if changes.get(k) is not DROP}
    fields.update({k: v for k, v in changes.items() if v is not DROP})
    return json.dumps(fields).encode()


def spliced(field: str, literal: str) -> bytes:
    """A message with `literal` as the raw JSON text of `field` (for what json.dumps cannot write)."""
    return message(**{field: 0}).replace(f'"{field}": 0'.encode(), f'"{field}": {literal}'.encode())


# name -> (message, expected message_error, expected {field: value} beside BASE's values)
CASES = {
    "valid": (message(), None, {}),
    "number_as_text": (message(flow_duration="1.5"), None, {"flow_duration": 1.5}),
    "nan_text": (message(flow_bytes_per_s="NaN"), None, {"flow_bytes_per_s": math.nan}),
    "infinity_texts": (message(flow_bytes_per_s="Infinity", flow_packets_per_s="-Infinity"), None,
                       {"flow_bytes_per_s": math.inf, "flow_packets_per_s": -math.inf}),
    "inf_spelling": (message(flow_bytes_per_s="+INF"), None, {"flow_bytes_per_s": math.inf}),
    # out of double range: Infinity, which the value rules then reject (nonfinite_value), not a type error
    "huge_number": (spliced("flow_duration", "1e400"), None, {"flow_duration": math.inf}),
    "boolean": (message(flow_duration=True), "wrong_type: flow_duration", {"flow_duration": None}),
    "text": (message(flow_duration="abc"), "wrong_type: flow_duration", {"flow_duration": None}),
    "object": (message(flow_duration={"a": 1}), "wrong_type: flow_duration", {"flow_duration": None}),
    "port_with_fraction": (message(src_port=80.0), "wrong_type: src_port", {"src_port": None}),
    "port_as_text": (message(src_port="80"), None, {"src_port": 80}),
    "port_overflow": (message(src_port=3_000_000_000), "wrong_type: src_port", {"src_port": None}),
    "row_with_fraction": (message(source_row=1.0), "wrong_type: source_row", {"source_row": None}),
    "identifiers_absent": (message(src_ip=DROP, flow_id=DROP), None, {"src_ip": None, "flow_id": None}),
    "identifier_null": (message(src_ip=None), None, {"src_ip": None}),
    "identifier_number": (message(src_ip=1234), None, {"src_ip": "1234"}),
    "label_number": (message(label=5), None, {"label": "5"}),
    "feature_null": (message(flow_duration=None), "missing_field: flow_duration", {"flow_duration": None}),
    "feature_absent": (message(total_fwd_packets=DROP), "missing_field: total_fwd_packets",
                       {"total_fwd_packets": None}),
    # the first failing check in field order wins; a missing field before any wrong type
    "two_wrong_types": (message(total_fwd_packets="x", flow_duration="y"), "wrong_type: flow_duration",
                        {"flow_duration": None, "total_fwd_packets": None}),
    "wrong_and_missing": (message(flow_duration="x", total_fwd_packets=None), "missing_field: total_fwd_packets",
                          {"flow_duration": None, "total_fwd_packets": None}),
    "extra_field": (message(ttl=64), "unexpected_field: ttl", {}),
    # names match exactly: as many keys as fields, but one of them is not a field
    "field_in_capitals": (message(flow_duration=DROP, FLOW_DURATION=5), "unexpected_field: FLOW_DURATION",
                          {"flow_duration": None}),
    "null_identifier_and_extra_field": (message(src_ip=None, ttl=1), "unexpected_field: ttl", {"src_ip": None}),
    # a name given twice: Spark would keep the last value, another reader the first
    "label_twice": (message().replace(b'"label": ', b'"label": "BENIGN", "label": '), "duplicate_field: label",
                    {}),
    "feature_twice_unknown_first": (message(ttl=1)[:-1] + b', "ttl": 2, "flow_duration": 3}',
                                    "unexpected_field: ttl", {"flow_duration": 3.0}),
    # commas settle the keys only when there are no more of them than the filled fields need: a number given for
    # a text field does not hide a key of its own, and a comma in a value or a null field sends the message to the
    # listing of its keys, which must agree
    "identifier_number_and_extra_field": (message(src_ip=1234, ttl=1), "unexpected_field: ttl", {"src_ip": "1234"}),
    "comma_in_label": (message(label="a,b"), None, {"label": "a,b"}),
    "null_label_then_label": (message().replace(b'"label": ', b'"label": null, "label": '),
                              "duplicate_field: label", {}),
    "whitespace_before": (b" \n" + message(), None, {}),
    "flow_in_an_array": (b"[" + message() + b"]", "invalid_json", None),
    "bare_nan": (spliced("flow_duration", "NaN"), "invalid_json", None),  # not JSON (RFC 8259)
    "bare_infinity": (spliced("flow_bytes_per_s", "-Infinity"), "invalid_json", None),
    "single_quotes": (message().replace(b'"label": "', b"'label': '").replace(b'BENIGN"', b"BENIGN'"),
                      "invalid_json", None),
    "array": (b"[1, 2]", "invalid_json", None),
    "broken": (b"{not json", "invalid_json", None),
    # Spark's JSON functions read the first value and ignore what follows: the second flow would be lost unseen
    "two_flows_in_one_record": (message() + message(), "invalid_json", None),
    "text_after": (message() + b" x", "invalid_json", None),
    "bracket_after": (message() + b"]", "invalid_json", None),  # read as the only element of [text]
    "brace_after": (message() + b"}", "invalid_json", None),  # read as the member value of {"_v": text}
    "whitespace_after": (message() + b" \r\n", None, {}),
    # a brace before the last byte: the text is read again to find its end
    "brace_in_label": (message(label="{x}"), None, {"label": "{x}"}),
    "brace_in_label_then_text": (message(label="{x}") + b" x", "invalid_json", None),
    "non_ascii_label_then_flow": (message(label="Ä}") + message(), "invalid_json", None),
    "empty": (b"", "empty_payload", None),
    "not_utf8": (b"\xff\xfe\x00", "not_utf8", None),
}
CHECKED = ["flow_duration", "total_fwd_packets", "flow_bytes_per_s", "flow_packets_per_s", "src_port", "src_ip",
           "flow_id", "label", "source_row"]


@pytest.fixture(scope="module")
def parsed(spark):
    when = datetime.datetime(2026, 1, 1)
    rows = [(value, "flows", 0, offset, when) for offset, (value, _, _) in enumerate(CASES.values())]
    kafka = spark.createDataFrame(rows, "value binary, topic string, partition int, offset long, timestamp timestamp")
    names = list(CASES)
    return {names[r["offset"]]: r for r in parse_flow_messages(kafka).collect()}


@pytest.mark.parametrize("name", list(CASES))
def test_message_gets_its_exact_reason_and_values(parsed, name):
    value, error, changes = CASES[name]
    row = parsed[name]
    assert row["message_error"] == error
    assert bytes(row["value"]) == value and (row["topic"], row["partition"]) == ("flows", 0)
    if changes is None:  # not a JSON object: no field values to speak of
        return
    for field in CHECKED:
        expected = changes.get(field, BASE.get(field))
        got = row[field]
        if isinstance(expected, float) and math.isnan(expected):
            assert math.isnan(got), field
        else:
            assert got == expected, field


def test_every_field_of_a_valid_message_is_typed_exactly(parsed):
    row = parsed["valid"].asDict()
    assert {k: row[k] for k in BASE} == BASE
