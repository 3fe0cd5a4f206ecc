"""The stream job refuses to start on a broken setup with an exit code and a message that names the problem.

Each case calls jobs.stream_detect.main in this process: argument, config, model and pre-flight errors return
before a SparkSession exists; the checkpoint case reuses the session fixture (main's getOrCreate finds it).
"""

from __future__ import annotations

import json
import pickle
import re
import time
from pathlib import Path

import pytest

from jobs.lib.kafka_broker import free_port
from jobs.stream_detect import main
from models.artifact import MANIFEST, WEIGHTS, sha256_file
from tests.helpers import random_artifact


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return random_artifact(tmp_path / "model", seq_len=2)


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def base_args(tmp_path: Path, model: Path | str, bootstrap: str = "localhost:1") -> list[str]:
    return ["--out", str(tmp_path / "out"), "--model", str(model), "--set", f"kafka.bootstrap_servers={bootstrap}"]


def test_unknown_config_key(tmp_path, model, capsys):
    code, err = run_main(capsys, *base_args(tmp_path, model), "--set", "stream.max_offset_per_trigger=10")
    assert code == 2
    assert "error: unknown config key 'stream.max_offset_per_trigger' (from --set)" in err


def test_ill_typed_config_key(tmp_path, model, capsys):
    code, err = run_main(capsys, *base_args(tmp_path, model), "--set", "stream.max_offsets_per_trigger=lots")
    assert code == 2
    assert "error: config key stream.max_offsets_per_trigger: expected int, got 'lots'" in err


def test_codegen_cache_entries_below_one_fails_at_start(tmp_path, model, capsys):
    code, err = run_main(capsys, *base_args(tmp_path, model), "--set", "stream.codegen_cache_entries=0")
    assert code == 2
    assert "error: config key stream.codegen_cache_entries: must be >= 1, got 0" in err


def test_stream_session_conf_sizes_the_codegen_cache(tmp_path):
    from jobs.lib.config import load_config
    from jobs.stream_detect import session_conf

    assert session_conf(load_config([], None)) == {"spark.sql.codegen.cache.maxEntries": "1000"}
    assert session_conf(load_config(["stream.codegen_cache_entries=250"], None)) == {
        "spark.sql.codegen.cache.maxEntries": "250"}


def test_ill_typed_key_in_config_file(tmp_path, model, capsys):
    conf = tmp_path / "bad.toml"
    conf.write_text('[stream]\npublish_alerts = "yes please"\n')
    code, err = run_main(capsys, *base_args(tmp_path, model), "--config", str(conf))
    assert code == 2
    assert "error: config key stream.publish_alerts: expected bool, got 'yes please'" in err


def test_missing_model(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    code, err = run_main(capsys, *base_args(tmp_path, missing))
    assert code == 2
    assert f"error: model folder {missing} is missing" in err
    assert not (tmp_path / "out").exists()  # nothing was started or written


def test_corrupt_model_manifest(tmp_path, model, capsys):
    (model / MANIFEST).write_text('{"format": "flowsentinel-model", "feat')  # truncated
    code, err = run_main(capsys, *base_args(tmp_path, model))
    assert code == 2
    assert re.search(rf"error: {re.escape(str(model / MANIFEST))} is not valid JSON \(tampered or truncated\)", err)


def test_corrupt_weights(tmp_path, model, capsys):
    weights = model / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    code, err = run_main(capsys, *base_args(tmp_path, model))
    assert code == 2
    assert f"error: {weights} was modified after saving (tampered)" in err


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # the crafted file, on purpose
def test_tampered_weights_with_pickle_payload_never_run(tmp_path, model, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[Path]]:
            return (Path.touch, (marker,))

    (model / WEIGHTS).write_bytes(pickle.dumps({"w": Payload()}))
    # A careful tamperer updates the recorded sha256 too, so the job reaches the unpickling step.
    manifest = json.loads((model / MANIFEST).read_text())
    manifest["files"][WEIGHTS] = sha256_file(model / WEIGHTS)
    (model / MANIFEST).write_text(json.dumps(manifest))
    code, err = run_main(capsys, *base_args(tmp_path, model))
    assert code == 2
    assert f"error: {model / WEIGHTS} is not a plain tensor file; refused to load it (tampered?)" in err
    assert not marker.exists()


def test_schema_mismatched_model(tmp_path, model, capsys):
    manifest = json.loads((model / MANIFEST).read_text())
    manifest["features"][0] = "packets_from_mars"
    (model / MANIFEST).write_text(json.dumps(manifest))
    code, err = run_main(capsys, *base_args(tmp_path, model))
    assert code == 2
    assert f"error: {model}: feature 'packets_from_mars' is not a CICFlowMeter feature" in err


def test_output_path_not_writable(tmp_path, model, capsys):
    # The tests run as root, where permission bits do not stop a write: a regular file in the path does.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "out"
    code, err = run_main(capsys, "--out", str(out), "--model", str(model),
                         "--set", "kafka.bootstrap_servers=localhost:1")
    assert code == 2
    assert f"error: output folder {out} is not writable: Not a directory" in err


def test_broker_unreachable_bounded_retries(tmp_path, model, capsys):
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    code, err = run_main(capsys, *base_args(tmp_path, model, f"localhost:{port}"))
    seconds = time.monotonic() - t0
    assert code == 2
    assert (f"error: Kafka broker localhost:{port} unreachable after 3 attempts "
            f"(KafkaTimeoutError: Unable to bootstrap from localhost:{port})") in err
    assert seconds < 40, f"retries are bounded: took {seconds:.0f}s"


def test_checkpoint_from_incompatible_query(tmp_path, model, capsys, spark, cfg, kafka_broker):
    """A checkpoint that another (real) query wrote under OUT/checkpoints/stream_detect is refused at start;
    without the check Spark fails later with an assertion inside the query thread."""
    from jobs.lib.kafka_broker import ensure_topics

    topic = "startup-incompatible"
    ensure_topics(kafka_broker.bootstrap, cfg, [topic])
    out = tmp_path / "out"
    checkpoint = out / "checkpoints" / "stream_detect"

    def source():
        return (spark.readStream.format("kafka").option("kafka.bootstrap.servers", kafka_broker.bootstrap)
                .option("subscribe", topic).option("startingOffsets", "earliest").load())

    other = (source().union(source()).writeStream.format("noop")
             .option("checkpointLocation", str(checkpoint)).trigger(availableNow=True).start())
    other.awaitTermination(120)
    assert (checkpoint / "offsets" / "0").exists()

    code, err = run_main(capsys, "--out", str(out), "--model", str(model), "--available-now",
                         "--set", f"kafka.bootstrap_servers={kafka_broker.bootstrap}",
                         "--set", f"kafka.flows_topic={topic}", "--set", "stream.publish_alerts=false")
    assert code == 2
    assert (f"error: checkpoint {checkpoint} belongs to another query: {checkpoint / 'offsets' / '0'} records "
            f"2 sources, this job reads 1 (topic '{topic}')") in err


def test_checkpoint_of_another_topic(tmp_path, model, capsys, kafka_broker):
    """Spark would resume a checkpoint of another topic silently (offsets of one topic applied to another)."""
    checkpoint = tmp_path / "ckpt"
    (checkpoint / "offsets").mkdir(parents=True)
    # The offset log entry as Spark writes it: version, metadata, one line per source.
    (checkpoint / "offsets" / "0").write_text('v1\n{"batchWatermarkMs":0,"batchTimestampMs":1}\n'
                                              '{"other-flows":{"0":10,"1":7}}')
    code, err = run_main(capsys, *base_args(tmp_path, model, kafka_broker.bootstrap),
                         "--set", f"stream.checkpoint_dir={checkpoint}")
    assert code == 2
    assert (f"error: checkpoint {checkpoint} belongs to another query: it reads topic(s) ['other-flows'], "
            f"this job reads 'flows'") in err


def test_query_failure_is_reported_not_raised(tmp_path, model, capsys, spark, cfg, kafka_broker, monkeypatch):
    """A query that fails after start (here: its checkpoint check is bypassed) is restarted from its checkpoint
    stream.query_restarts times, then ends main with code 1 and the cause, not with a traceback from
    awaitTermination."""
    import jobs.stream_detect as stream_detect

    topic = "startup-failing-query"
    ensure_topics_for(kafka_broker, cfg, topic)
    out = tmp_path / "out"
    checkpoint = out / "checkpoints" / "stream_detect"
    (checkpoint / "offsets").mkdir(parents=True)
    (checkpoint / "offsets" / "0").write_text('v1\n{"batchWatermarkMs":0,"batchTimestampMs":1}\n'
                                              f'{{"{topic}":{{"0":0,"1":0}}}}\n{{"{topic}":{{"0":0,"1":0}}}}')
    monkeypatch.setattr(stream_detect, "check_checkpoint", lambda *_: None)
    code, err = run_main(capsys, "--out", str(out), "--model", str(model), "--available-now",
                         "--set", f"kafka.bootstrap_servers={kafka_broker.bootstrap}",
                         "--set", f"kafka.flows_topic={topic}", "--set", "stream.publish_alerts=false",
                         "--set", "stream.query_restarts=1", "--set", "stream.restart_backoff_s=0")
    cause = ("assertion failed: There are [2] sources in the checkpoint offsets and now there are [1] sources "
             "requested by the query. Cannot continue.")
    assert code == 1
    assert [line for line in err.splitlines() if line.startswith(("warning:", "error:"))] == [
        f"warning: streaming query failed ({cause}); restarting from the checkpoint in 0.0 s (1/1)",
        f"error: streaming query failed 2 times; last: {cause}"]


def ensure_topics_for(broker, cfg, topic: str) -> None:
    from jobs.lib.kafka_broker import ensure_topics

    ensure_topics(broker.bootstrap, cfg, [topic])


def test_checkpoint_of_another_model_is_refused(tmp_path, model, capsys, kafka_broker):
    """The first start records the model beside the checkpoint's state; a later start with another model (here
    T=3 where the state holds T=2 histories) is refused, naming what changed, before any batch."""
    from jobs.stream_detect import MODEL_IDENTITY, check_model_identity
    from models.artifact import load_model

    checkpoint = tmp_path / "ckpt"
    first = load_model(model, device="cpu")
    check_model_identity(str(checkpoint), first)  # a fresh checkpoint: the identity is written
    stored = json.loads((checkpoint / MODEL_IDENTITY).read_text())
    assert stored == {"model_version": first.model_version, "seq_len": 2, "features": first.features}
    (checkpoint / "commits").mkdir()
    (checkpoint / "commits" / "0").write_text('v1\n{"nextBatchWatermarkMs":0}')  # a batch was committed
    check_model_identity(str(checkpoint), first)  # the same model resumes

    other = random_artifact(tmp_path / "other", seq_len=3, seed=1)
    code, err = run_main(capsys, *base_args(tmp_path, other, kafka_broker.bootstrap),
                         "--set", f"stream.checkpoint_dir={checkpoint}")
    assert code == 2
    version = load_model(other, device="cpu").model_version
    assert (f"error: checkpoint {checkpoint} was written with another model (model_version "
            f"'{first.model_version}' -> '{version}', seq_len 2 -> 3); use the model it was written with, or "
            "another stream.checkpoint_dir (and --starting-offsets) for this one") in err
    assert json.loads((checkpoint / MODEL_IDENTITY).read_text()) == stored  # kept as it was


def test_cuda_without_a_gpu_is_refused_at_start(tmp_path, model, capsys, kafka_broker, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = run_main(capsys, *base_args(tmp_path, model, kafka_broker.bootstrap), "--set", "model.device=cuda")
    assert code == 2
    assert "error: model.device = 'cuda' but no CUDA GPU is visible; use model.device = auto or cpu" in err
