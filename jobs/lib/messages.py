"""Kafka flow messages -> typed flow records, with a reason for every message that cannot be one.

Two wire formats (conf kafka.flows_format), one output: :func:`parse_messages`.

Avro (:func:`parse_avro_messages`): one Avro binary datum of schemas/flow_message.avsc per record, no header.
The schema fixes every field's name and type, so what is left to check is that the bytes are exactly one datum
(Spark's decoder stops after the record and ignores what follows, and gives a record of nulls for bytes it cannot
read: the message must be as long as the record's encoding), that strings are UTF-8, and that every feature is
present.

JSON (:func:`parse_flow_messages`), the message contract of schemas.records.FLOW_MESSAGE: a strict JSON object
(RFC 8259) with nothing after it but whitespace, one flow, canonical field names; numeric fields are JSON numbers,
or the strings "NaN", "Infinity", "-Infinity" that CICFlowMeter writes (JSON has no such numbers). Every flow
feature is required; identifier fields, label and provenance may be absent (79-column sources have no IPs); a
field the schema does not name, or a field named twice, makes the message invalid.

The message is parsed with the declared types. Only a message with a value that does not fit its type (Spark's
JSON parser then fills the corrupt-record field) is parsed again with every field as text, each field then cast
to its declared type; a value that does not cast is a wrong type. Reading every number as text costs Spark a JSON
generator per value (about four times the typed parse), so the text parse is kept for the rare messages that
need it. The value-level rules that batch preparation applies too (non-finite rates, negative counters, unknown
labels) are not here: they live in jobs.lib.prep and run after this.
"""

from __future__ import annotations

import json

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.avro.functions import from_avro, to_avro
from pyspark.sql.types import StringType, StructField, StructType

from schemas.flows import FEATURE_COLUMNS, WIRE_FORMATS
from schemas.records import FLOW_MESSAGE, flow_message_avro_schema

_CORRUPT = "_corrupt"
# JSON as RFC 8259 writes it: Spark's parser takes bare NaN and Infinity, and single quotes, by default.
_STRICT = {"allowNonNumericNumbers": "false", "allowSingleQuotes": "false"}
_TYPED = StructType([*FLOW_MESSAGE.fields, StructField(_CORRUPT, StringType())])
_AS_TEXT = StructType([StructField(f.name, StringType()) for f in FLOW_MESSAGE.fields])
KAFKA_COORDINATES = ["topic", "partition", "offset", "kafka_timestamp"]


_AVRO = flow_message_avro_schema()
_AVRO_SCHEMA = json.dumps(_AVRO)
# The fields that are not doubles, as a record of their own (re-encoded to count their bytes).
_AVRO_DOUBLES = [f["name"] for f in _AVRO["fields"] if f["type"][1] == "double"]
_AVRO_OTHER_FIELDS = [f for f in _AVRO["fields"] if f["type"][1] != "double"]
_AVRO_OTHERS = [f["name"] for f in _AVRO_OTHER_FIELDS]
_AVRO_OTHERS_SCHEMA = json.dumps({**_AVRO, "fields": _AVRO_OTHER_FIELDS})


def _first_failing(tests: list[Column], reasons: list[str]) -> Column:
    """The reason of the first of `tests` (non-null booleans) that holds, else null.

    One array expression instead of a CASE per test: the stream plans its parse plan again every micro-batch, and
    77 CASE expressions in one COALESCE (a missing-field check per feature) made a fifth of that planning."""
    position = F.array_position(F.array(*tests), True)
    return F.when(position > 0, F.element_at(F.array(*[F.lit(r) for r in reasons]), position.cast("int")))


def _count_filled(fields: list[Column]) -> Column:
    """How many of `fields` are not null, as one array expression (see _first_failing), not a sum of flags."""
    return len(fields) - F.size(F.array_remove(F.array(*[c.isNull() for c in fields]), False))


def raw_text(value: Column, wire_format: str = "json") -> Column:
    """The message as text for the quarantine table, lossless: bytes that are not UTF-8 text (and every Avro
    message, binary by nature) as base64."""
    # one line: Spark's base64 breaks its output every 76 characters (MIME) unless
    # spark.sql.chunkBase64String.enabled is false
    as_base64 = F.concat(F.lit("base64:"), F.regexp_replace(F.base64(value), "\r\n", ""))
    if wire_format == "avro":
        return as_base64
    text = value.cast("string")
    return F.when(F.is_valid_utf8(text), text).otherwise(as_base64)


def parse_messages(kafka: DataFrame, wire_format: str) -> DataFrame:
    """Kafka source rows -> FLOW_MESSAGE columns + Kafka coordinates + `message_error` (null when the message is a
    well-formed flow) + `value`, for either wire format."""
    if wire_format == "avro":
        return parse_avro_messages(kafka)
    if wire_format == "json":
        return parse_flow_messages(kafka)
    raise ValueError(f"kafka.flows_format must be one of {WIRE_FORMATS}, got {wire_format!r}")


def parse_avro_messages(kafka: DataFrame) -> DataFrame:
    """:func:`parse_messages` for Avro binary datums of schemas/flow_message.avsc."""
    value = F.col("value")
    # inline(array(struct)): decode once, not once per field read below (as in parse_flow_messages).
    parsed = kafka.select(F.inline(F.array(F.struct(
        value,
        from_avro(value, _AVRO_SCHEMA, {"mode": "PERMISSIVE"}).alias("_a"),
        F.col("topic"), F.col("partition"), F.col("offset"), F.col("timestamp").alias("kafka_timestamp"),
    ))))
    # A message is one datum exactly when it is as long as the record's own encoding: bytes after the record (a
    # second record) or an over-long varint fail this. A double takes 1 byte when null (its branch) and 9 when not,
    # so only the other fields are re-encoded to count theirs. Bytes the decoder cannot read get a record of nulls
    # (from_avro's PERMISSIVE mode), whose encoding is one null branch per field: a message of that length is a
    # datum only if it is exactly those bytes.
    present = _count_filled([F.col(f"_a.{name}") for name in _AVRO_DOUBLES])
    others = F.struct(*[F.col(f"_a.{name}") for name in _AVRO_OTHERS])
    length = len(_AVRO_DOUBLES) + 8 * present + F.octet_length(to_avro(others, _AVRO_OTHERS_SCHEMA))
    all_null = F.lit(bytes(len(FLOW_MESSAGE.fields)))
    size = F.octet_length(value)
    one_datum = (length == size) & ((size != len(FLOW_MESSAGE.fields)) | (value == all_null))
    checks: list[Column] = [
        F.when(value.isNull() | (size == 0), F.lit("empty_payload")),
        F.when(~one_datum, F.lit("invalid_avro")),
    ]
    checks += [F.when(~F.is_valid_utf8(F.col(f"_a.{f.name}")), F.lit(f"not_utf8: {f.name}"))
               for f in FLOW_MESSAGE.fields if isinstance(f.dataType, StringType)]
    checks.append(_first_failing([F.col(f"_a.{name}").isNull() for name in FEATURE_COLUMNS],
                                 [f"missing_field: {name}" for name in FEATURE_COLUMNS]))
    return parsed.select(*[F.col(f"_a.{f.name}").alias(f.name) for f in FLOW_MESSAGE.fields],
                         "topic", "partition", "offset", "kafka_timestamp",
                         F.coalesce(*checks).alias("message_error"), "value")


def _ends_with_object(value: Column, text: Column) -> Column:
    """False where something follows the message's object: Spark's JSON functions read the first value and ignore
    the rest, so two flows written into one record would lose the second without a trace.

    Cheap where the only closing brace is the last byte, as in every message without a nested object or a brace
    in a string (bytes, not characters: in UTF-8 no other character holds the byte of "}"): that brace closes the
    object, and nothing follows. Otherwise the text is read twice more, skipping every value: as the element of
    an array, ``[text]``, it must be the only element, and as a member value, ``{"_v": text}``, it must be
    followed by the member's end. Whatever follows the object (but whitespace) fails one of the two: ``]``
    fails the member, anything else the array."""
    brace = F.lit(b"}")
    last = F.octet_length(value)
    only_brace_last = (F.substring(value, -1, 1) == brace) & ~F.contains(F.substring(value, F.lit(1), last - 1), brace)
    # As lenient as the listing of the keys (control characters in strings), so that only what follows counts.
    lenient = {"allowUnquotedControlChars": "true"}
    as_element = F.from_json(F.concat(F.lit("["), text, F.lit("]")), "array<struct<_n: int>>", lenient)
    as_member = F.from_json(F.concat(F.lit('{"_v":'), text, F.lit("}")), f"struct<_n: int, {_CORRUPT}: string>",
                            {"columnNameOfCorruptRecord": _CORRUPT, **lenient})
    alone = F.coalesce(F.size(as_element) == 1, F.lit(False))  # the size of a failed parse (null) is null
    return only_brace_last | (alone & as_member[_CORRUPT].isNull())


def parse_flow_messages(kafka: DataFrame) -> DataFrame:
    """Kafka source rows -> FLOW_MESSAGE columns + Kafka coordinates + `message_error` (null when the message
    is a well-formed flow) + `value` (the message bytes, for :func:`raw_text` where a row is quarantined).

    Reasons follow jobs.lib.prep's "category: column" form."""
    text = F.col("value").cast("string")
    # inline(array(struct)) is an optimizer boundary: without it, Spark inlines the from_json expression
    # into every one of the ~170 checks below that read a field, parsing each message that many times.
    parsed = kafka.select(
        F.inline(F.array(F.struct(
            F.col("value"),
            text.alias("_text"),
            F.from_json(text, _TYPED, {"columnNameOfCorruptRecord": _CORRUPT, **_STRICT}).alias("_t"),
            F.col("topic"),
            F.col("partition"),
            F.col("offset"),
            F.col("timestamp").alias("kafka_timestamp"),
        )))
    )
    fast = F.col(f"_t.{_CORRUPT}").isNull()
    # Every key is a field and none is given twice, proved without listing the keys (a second parse of the message):
    # the typed parse read one object, whose members are separated by one comma each, so a message that splits at
    # its commas into no more pieces than it has filled fields has no other member. A comma in a string or in a
    # nested value, a field given as null, an unknown or a repeated key only add pieces: such a message, and one
    # that does not start with its object, has its keys listed and matched against the fields. Per 100,000
    # messages: split 0.5 s (Spark keeps empty pieces; one plain character splits without a regular expression),
    # counting by replace 0.65 s, the key listing 0.95 s.
    filled = _count_filled([F.col(f"_t.{f.name}") for f in FLOW_MESSAGE.fields])
    pieces = F.size(F.split(F.col("_text"), ","))
    known = F.coalesce(fast & (F.substring(F.col("value"), 1, 1) == F.lit(b"{")) & (pieces == filled),
                       F.lit(False))
    # In a projection of its own, whose code is generated (a generator's arguments are evaluated node by node). Then
    # the text parse only where the typed one failed on a value, and the keys only where the pieces leave a doubt.
    all_known = F.col("_known")
    parsed = parsed.select("*", known.alias("_known")).select(F.inline(F.array(F.struct(
        "*", F.when(~fast, F.from_json(F.col("_text"), _AS_TEXT)).alias("_m"),
        F.when(~all_known, F.json_object_keys(F.col("_text"))).alias("_keys")))))

    typed = {f.name: F.when(fast, F.col(f"_t.{f.name}")).otherwise(F.col(f"_m.{f.name}").try_cast(f.dataType))
             for f in FLOW_MESSAGE.fields}
    allowed = F.array(*[F.lit(f.name) for f in FLOW_MESSAGE.fields])
    unexpected = F.array_except(F.col("_keys"), allowed)
    # A flat coalesce of independent checks (first failing one wins): a nested CASE of ~170 levels is slow
    # to compile and to run.
    checks: list[Column] = [
        F.when(F.col("value").isNull() | (F.length("value") == 0), F.lit("empty_payload")),
        F.when(~F.is_valid_utf8(F.col("_text")), F.lit("not_utf8")),
        F.when((~all_known & F.col("_keys").isNull()) | ~_ends_with_object(F.col("value"), F.col("_text")),
               F.lit("invalid_json")),
        F.when(~all_known & (F.size(unexpected) > 0),
               F.concat(F.lit("unexpected_field: "), F.array_join(unexpected, ","))),
        # A name given twice: Spark keeps the last value, another reader may keep the first.
        F.when(~all_known & (F.size(F.array_distinct("_keys")) < F.size("_keys")),
               F.concat(F.lit("duplicate_field: "), F.element_at(F.filter(
                   "_keys", lambda k, i: F.array_position("_keys", k) != i + 1), 1))),
    ]
    missing = [f"missing_field: {name}" for name in FEATURE_COLUMNS]
    checks.append(F.when(fast, _first_failing([F.col(f"_t.{name}").isNull() for name in FEATURE_COLUMNS], missing))
                  .otherwise(_first_failing([F.col(f"_m.{name}").isNull() for name in FEATURE_COLUMNS], missing)))
    # Only the text parse can hold a value of the wrong type: one that is there as text and does not cast.
    mistyped = [f for f in FLOW_MESSAGE.fields if not isinstance(f.dataType, StringType)]
    checks.append(F.when(~fast, _first_failing(
        [F.col(f"_m.{f.name}").isNotNull() & F.col(f"_m.{f.name}").try_cast(f.dataType).isNull() for f in mistyped],
        [f"wrong_type: {f.name}" for f in mistyped])))
    checked = parsed.select(
        "*", *[expr.alias(name) for name, expr in typed.items()], F.coalesce(*checks).alias("message_error")
    )
    return checked.select(*typed, "topic", "partition", "offset", "kafka_timestamp", "message_error", "value")
