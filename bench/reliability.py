"""Fault injection and hostile input against the real broker and the real stream job; nothing lost, nothing twice.

    python -m bench.reliability --out DIR [--records 100000] [--crashes 3] [--broker-restarts 1] [--seed 7]
    python -m bench.reliability --out DIR --mode backpressure --records 1000000

`chaos` (the default): a LocalBroker on free ports, the stream job as a subprocess (`python -m
jobs.stream_detect`, small trigger, bounded maxOffsetsPerTrigger); the records (synthetic flows plus malformed
messages of every kind in MALFORMED_KINDS, and duplicated messages) are produced while the job runs; the job
is SIGKILLed `--crashes` times at random moments and restarted from its checkpoint, the broker is stopped and
started again with the same data folder and ports. Then, once the checkpoint has committed every produced
offset, each produced (partition, offset) must be in exactly one row of flows_scored or quarantine, and every
malformed message (only those) in quarantine. `backpressure`: the records are queued first, then the job
drains them; the report gives the batch sizes and the peak RSS of the driver JVM and the Python processes.

Writes DIR/reliability.json (or DIR/backpressure.json). The Delta tables are read from their transaction logs
with pyarrow, so no second JVM competes with the job for memory.

One module of about 600 lines on purpose: the fault injector, the hostile messages and the final audit must agree on
every record they produce, so they live together.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from jobs.lib.config import Config, add_config_args, load_config
from jobs.lib.jvm import REPO_ROOT
from jobs.lib.kafka_broker import LocalBroker, ensure_topics, free_port
from jobs.lib.synthetic import synthetic_flows
from jobs.replay_flows import encode, make_producer, message_key

# kind -> the start of the quarantine reason it must get (message-level reasons from jobs.lib.messages,
# value-level ones from jobs.lib.prep).
MALFORMED_KINDS: dict[str, str] = {
    "invalid_json": "invalid_json",
    "json_array": "invalid_json",
    "two_flows": "invalid_json",  # two messages written into one record: quarantined whole, not one flow lost
    "wrong_type": "wrong_type: total_fwd_packets",
    "missing_field": "missing_field: flow_duration",
    "extra_field": "unexpected_field: favourite_colour",
    "field_twice": "duplicate_field: label",
    "nan_counter": "nonfinite",
    "infinity_counter": "nonfinite",
    "negative_counter": "negative",
    "empty_payload": "empty_payload",
    "null_payload": "empty_payload",
    "not_utf8": "not_utf8",
    # identifiers that are not: well-formed JSON of the right types, values no flow can have
    "port_out_of_range": "invalid_identifier: dst_port",
    "sql_in_address": "invalid_identifier: src_ip",
    "protocol_out_of_range": "invalid_identifier: protocol",
}
BIG_KIND = "one_megabyte"  # a 1 MB message (an oversized extra field); sent once per run
BIG_REASON = "unexpected_field: padding"
DUPLICATE_EVERY = 997  # every so many valid flows, the same message is sent again (a second, valid record)


@dataclass
class Message:
    kind: str  # "valid", "duplicate" or a malformed kind
    key: bytes
    value: bytes | None


def malformed(kind: str, template: dict[str, Any]) -> bytes | None:
    """The payload of one hostile message, built from a valid flow."""
    if kind == "invalid_json":
        return encode(template)[:-7]  # cut mid-value
    if kind == "json_array":
        return b"[1, 2, 3]"
    if kind == "two_flows":
        return encode(template) + encode(template)
    if kind == "field_twice":  # a label, then another: which one would a reader believe?
        return encode(template)[:-1] + b', "label": "BENIGN"}'
    if kind == "empty_payload":
        return b""
    if kind == "null_payload":
        return None  # a Kafka tombstone
    if kind == "not_utf8":
        return b"\xff\xfe" + encode(template)[2:]
    record = dict(template)
    if kind == "wrong_type":
        record["total_fwd_packets"] = "many"
    elif kind == "missing_field":
        del record["flow_duration"]
    elif kind == "extra_field":
        record["favourite_colour"] = "blue"
    elif kind == "nan_counter":
        record["total_fwd_packets"] = "NaN"
    elif kind == "infinity_counter":
        record["total_bwd_packets"] = "Infinity"
    elif kind == "negative_counter":
        record["total_length_fwd_packets"] = "-1"
    elif kind == "port_out_of_range":
        record["dst_port"] = 70000
    elif kind == "sql_in_address":
        record["src_ip"] = "1.2.3.4'; DROP TABLE alerts;--"
    elif kind == "protocol_out_of_range":
        record["protocol"] = 300
    elif kind == BIG_KIND:
        record["padding"] = "x" * (1024 * 1024)
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return json.dumps(record, separators=(",", ":")).encode("utf-8")


def messages(n: int, seed: int, key_field: str, big: bool = True) -> Iterator[Message]:
    """`n` messages: synthetic flows with, every so often, one malformed message of the next kind (each kind at
    least 3 times); one 1 MB message; every DUPLICATE_EVERY-th valid flow sent twice. Deterministic for a seed."""
    kinds = list(MALFORMED_KINDS)
    malformed_every = max(20, min(500, n // (3 * len(kinds))))
    flows = synthetic_flows(n, seed=seed, hosts=200)
    big_at = n // 2 if big else -1
    sent = k = 0
    for record in flows:
        if sent >= n:
            return
        if sent == big_at:
            yield Message(BIG_KIND, b"junk-big", malformed(BIG_KIND, record))
        elif sent % malformed_every == malformed_every - 1:
            kind = kinds[k % len(kinds)]
            k += 1
            yield Message(kind, f"junk-{k % 7}".encode(), malformed(kind, record))
        else:
            key, value = message_key(record, key_field), encode(record)
            yield Message("valid", key, value)
            if sent % DUPLICATE_EVERY == DUPLICATE_EVERY - 1 and sent + 1 < n:
                sent += 1
                yield Message("duplicate", key, value)
        sent += 1


class Producer:
    """Sends messages and remembers the (partition, offset) the broker gave each; pauses while `lock` is held
    elsewhere (a broker restart), so no send is retried into a duplicate offset nobody knows about."""

    def __init__(self, bootstrap: str, cfg: Config, topic: str, lock: threading.Lock) -> None:
        self.producer = make_producer(bootstrap, cfg)
        self.topic = topic
        self.lock = lock
        self.sent: dict[tuple[int, int], str] = {}
        self.errors: list[BaseException] = []

    def send(self, batch: list[Message]) -> None:
        with self.lock:
            for msg in batch:
                future = self.producer.send(self.topic, key=msg.key, value=msg.value)
                future.add_callback(lambda md, kind=msg.kind: self.sent.__setitem__((md.partition, md.offset), kind))
                future.add_errback(self.errors.append)
            self.producer.flush()
        if self.errors:
            raise RuntimeError(f"send failed: {self.errors[0]}")

    def close(self) -> None:
        self.producer.close()


# ------------------------------------------------------------------------------------------ reading results

def delta_files(table: Path) -> list[Path]:
    """The data files of a Delta table's latest snapshot, by replaying its JSON commit log (no checkpoints are
    cleaned up within a run, so the JSON log is complete)."""
    live: dict[str, None] = {}
    log = table / "_delta_log"
    for commit in sorted(log.glob("*.json"), key=lambda p: int(p.stem)):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                live[unquote(action["add"]["path"])] = None
            elif "remove" in action:
                live.pop(unquote(action["remove"]["path"]), None)
    return [table / p for p in live]


def read_columns(table: Path, columns: list[str]) -> dict[str, list[Any]]:
    import pyarrow.parquet as pq

    files = delta_files(table)
    out: dict[str, list[Any]] = {c: [] for c in columns}
    for f in files:
        part = pq.read_table(f, columns=columns)
        for c in columns:
            out[c].extend(part.column(c).to_pylist())
    return out


def committed_offsets(checkpoint: Path) -> tuple[int, dict[int, int]]:
    """(latest committed batch id, {partition: next offset}) from the checkpoint; (-1, {}) before the first."""
    commits = [int(p.name) for p in (checkpoint / "commits").glob("[0-9]*") if p.name.isdigit()]
    if not commits:
        return -1, {}
    batch = max(commits)
    lines = [ln for ln in (checkpoint / "offsets" / str(batch)).read_text().splitlines() if ln.strip()]
    source = json.loads(lines[2])
    return batch, {int(p): int(o) for offsets in source.values() for p, o in offsets.items()}


def all_processed(checkpoint: Path, ends: dict[int, int]) -> bool:
    committed = committed_offsets(checkpoint)[1]
    return all(committed.get(p, 0) >= end for p, end in ends.items())


def batch_sizes(checkpoint: Path) -> list[int]:
    """Records per micro-batch, from consecutive entries of the offset log."""
    sizes, previous = [], None
    for batch in sorted(int(p.name) for p in (checkpoint / "offsets").glob("[0-9]*") if p.name.isdigit()):
        lines = [ln for ln in (checkpoint / "offsets" / str(batch)).read_text().splitlines() if ln.strip()]
        ends = {int(p): int(o) for offsets in json.loads(lines[2]).values() for p, o in offsets.items()}
        if previous is not None:
            sizes.append(sum(ends[p] - previous.get(p, 0) for p in ends))
        previous = ends
    return sizes


# ------------------------------------------------------------------------------------------- the stream job

@dataclass
class Job:
    """The stream job as a subprocess in its own process group (driver, its JVM and the Python workers)."""

    cmd: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    peak_rss: dict[str, int] = field(default_factory=lambda: {"total": 0, "jvm": 0, "python": 0})
    _sampler: threading.Thread | None = None

    def start(self) -> None:
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
               "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self._sampler = threading.Thread(target=self._sample, args=(self.proc,), daemon=True)
        self._sampler.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _sample(self, proc: subprocess.Popen[bytes]) -> None:
        import psutil

        while proc.poll() is None:
            try:
                root = psutil.Process(proc.pid)
                tree = [root, *root.children(recursive=True)]
                jvm = python = 0
                for p in tree:
                    try:
                        rss = p.memory_info().rss
                        if "java" in p.name():
                            jvm += rss
                        else:
                            python += rss
                    except psutil.Error:
                        pass
                for name, value in (("jvm", jvm), ("python", python), ("total", jvm + python)):
                    self.peak_rss[name] = max(self.peak_rss[name], value)
            except psutil.Error:
                pass
            time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown hook, no last commit, like a lost machine."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout_s: float = 120) -> int | None:
        """SIGTERM the driver (the job stops its query), then SIGKILL what is left of the group."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout_s)
        code = self.proc.poll()
        with contextlib.suppress(ProcessLookupError):  # stray workers of the group, if any
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return code


def job_command(out: Path, model: Path, bootstrap: str, max_offsets: int, trigger: str) -> list[str]:
    return [sys.executable, "-m", "jobs.stream_detect", "--out", str(out), "--model", str(model),
            "--set", f"kafka.bootstrap_servers={bootstrap}",
            "--set", "spark.master=local[2]",
            "--set", "spark.shuffle_partitions=2",
            "--set", "spark.driver_memory=1g",
            "--set", f"stream.max_offsets_per_trigger={max_offsets}",
            "--set", f"stream.trigger_interval={trigger}"]


def resolve_model(requested: str | None, cfg: Config, work: Path) -> tuple[Path, str]:
    path = Path(requested or cfg.model.dir)
    if not path.is_absolute():
        path = REPO_ROOT / path
    if (path / "manifest.json").exists():
        return path, str(path)
    # The suite tests plumbing, not detection quality: a valid artifact with random weights will do.
    from tests.helpers import random_artifact

    return random_artifact(work / "model", seq_len=4), "random weights (no trained model found)"


# --------------------------------------------------------------------------------------------------- runs

@dataclass
class Settings:
    out: Path
    records: int
    crashes: int
    broker_restarts: int
    seed: int
    max_offsets: int
    trigger: str
    produce_chunk: int
    timeout_s: float
    model: str | None
    big: bool = True


def wait_progress(job: Job, checkpoint: Path, after_batch: int, timeout_s: float) -> int:
    """Wait until the job commits a batch later than `after_batch`; returns it (or -1 if the job died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch, _ = committed_offsets(checkpoint)
        if batch > after_batch:
            return batch
        if not job.alive():
            return -1
        time.sleep(0.5)
    raise TimeoutError(f"no new micro-batch after batch {after_batch} in {timeout_s:.0f}s; see {job.log}")


def run_chaos(s: Settings, cfg: Config) -> dict[str, Any]:
    rng = random.Random(s.seed)
    work = s.out / "work"
    broker = LocalBroker(free_port(), free_port(), work / "kafka", heap="384m")
    job_out = work / "stream"
    checkpoint = job_out / "checkpoints" / "stream_detect"
    events: list[str] = []
    t0 = time.monotonic()

    def note(event: str) -> None:  # the timeline goes to the report and, as it happens, to stdout
        events.append(f"{time.monotonic() - t0:.0f}s {event}")
        print(events[-1], flush=True)

    job: Job | None = None
    producer: Producer | None = None
    stop_producing = threading.Event()
    try:
        broker.start()
        ensure_topics(broker.bootstrap, cfg)
        model, model_note = resolve_model(s.model, cfg, work)
        lock = threading.Lock()
        producer = Producer(broker.bootstrap, cfg, cfg.kafka.flows_topic, lock)
        stream = messages(s.records, s.seed, cfg.prep.sequence_key, s.big)
        chunks = iter(lambda: [m for _, m in zip(range(s.produce_chunk), stream, strict=False)], [])
        # A first share is queued before the job starts; the rest arrives while it runs and is killed.
        first = max(1, int(s.records * 0.3) // s.produce_chunk)
        for _, chunk in zip(range(first), chunks, strict=False):
            producer.send(chunk)

        feeder_errors: list[BaseException] = []

        def produce_rest() -> None:
            try:
                for chunk in chunks:
                    if stop_producing.is_set():
                        return
                    producer.send(chunk)
                    time.sleep(0.05)  # a steady stream, not one burst
            except BaseException as exc:  # reported by the main thread after join
                feeder_errors.append(exc)

        feeder = threading.Thread(target=produce_rest, daemon=True)
        job = Job(job_command(job_out, model, broker.bootstrap, s.max_offsets, s.trigger), work / "job.log")
        job.start()
        feeder.start()
        crashes = restarts = unexpected_exits = mid_batch = 0
        batch = wait_progress(job, checkpoint, -1, s.timeout_s)
        plan = ["crash"] * s.crashes + ["broker"] * s.broker_restarts
        # The broker restart comes after the first crash so the restarted job meets it too.
        plan = plan[:1] + rng.sample(plan[1:], len(plan) - 1) if plan else plan
        for step in plan:
            time.sleep(rng.uniform(0.5, 6.0))  # a random moment, usually inside a micro-batch
            if step == "crash":
                in_flight = committed_offsets(checkpoint)[0] < max(
                    (int(p.name) for p in (checkpoint / "offsets").glob("[0-9]*") if p.name.isdigit()),
                    default=-1)
                job.kill()
                crashes += 1
                mid_batch += int(in_flight)
                moment = "mid-batch" if in_flight else "between batches"
                note(f"SIGKILL job ({moment})")
                job.start()
            else:
                with lock:  # the producer waits: the broker is gone
                    broker.stop()
                    note("broker stopped")
                    time.sleep(rng.uniform(3.0, 8.0))
                    broker.start()
                restarts += 1
                note(f"broker started again; job alive: {job.alive()}")
            batch = wait_progress(job, checkpoint, batch, s.timeout_s)
            if batch == -1:  # the job ended by itself (not our kill): report it and restart from the checkpoint
                unexpected_exits += 1
                code = job.proc.poll() if job.proc else None
                note(f"job exited by itself (code {code}); restarted")
                job.start()
                batch = wait_progress(job, checkpoint, committed_offsets(checkpoint)[0], s.timeout_s)
        feeder.join()
        producer.producer.flush()
        if producer.errors or feeder_errors:
            raise RuntimeError(f"producer failed: {(producer.errors or feeder_errors)[0]}")
        ends: dict[int, int] = {}
        for p, o in producer.sent:
            ends[p] = max(ends.get(p, 0), o + 1)
        deadline = time.monotonic() + s.timeout_s * 4
        while not all_processed(checkpoint, ends):
            if not job.alive():
                unexpected_exits += 1
                note("job exited by itself while draining; restarted")
                job.start()
            if time.monotonic() > deadline:
                raise TimeoutError(f"offsets not all processed: committed {committed_offsets(checkpoint)[1]}, "
                                   f"produced {ends}; see {job.log}")
            time.sleep(1.0)
        seconds = time.monotonic() - t0
        job.stop()
        result = verify(job_out / "tables", producer.sent, ends)
        result.update({
            "records": len(producer.sent),
            "crashes_injected": crashes,
            "crashes_mid_batch": mid_batch,
            "broker_restarts": restarts,
            "job_exits_by_itself": unexpected_exits,
            # the job's own restarts of a failed query (stream.query_restarts), from its log: allowed once per
            # broker restart and per SIGKILL (Spark 4.1.1's SPARK-55271 fails the first progress report after a
            # restart that re-runs an uncommitted batch), never for input
            "query_restarts": job.log.read_text(errors="replace").count("restarting from the checkpoint"),
            "seconds": round(seconds, 1),
            "micro_batches": committed_offsets(checkpoint)[0] + 1,
            "max_offsets_per_trigger": s.max_offsets,
            "max_batch_records": max(batch_sizes(checkpoint), default=0),
            "peak_rss_mb": {k: round(v / 2**20) for k, v in job.peak_rss.items()},
            "model": model_note,
            "events": events,
        })
        return result
    finally:
        stop_producing.set()
        if job is not None:
            job.stop(timeout_s=30)
        if producer is not None:
            producer.close()
        broker.stop()


def verify(tables: Path, sent: dict[tuple[int, int], str], ends: dict[int, int]) -> dict[str, Any]:
    """Every produced (partition, offset) exactly once in flows_scored or quarantine, each where it belongs."""
    scored = read_columns(tables / "flows_scored", ["partition", "offset"])
    quarantined = read_columns(tables / "quarantine", ["partition", "offset", "reason"])
    seen = Counter(zip(scored["partition"], scored["offset"], strict=True))
    seen.update(zip(quarantined["partition"], quarantined["offset"], strict=True))
    all_offsets = {(p, o) for p, end in ends.items() for o in range(end)}
    lost = sorted(all_offsets - set(seen))
    duplicated = sorted(k for k, c in seen.items() if c > 1)
    unknown = sorted(set(seen) - all_offsets)
    expected_reason = {**MALFORMED_KINDS, BIG_KIND: BIG_REASON}
    misplaced: list[str] = []
    reasons: Counter[str] = Counter()
    q_kinds: Counter[str] = Counter()
    for p, o, reason in zip(quarantined["partition"], quarantined["offset"], quarantined["reason"], strict=True):
        kind = sent.get((p, o), "?")
        q_kinds[kind] += 1
        reasons[reason.split(":")[0] if reason else "null"] += 1
        if kind not in expected_reason or not (reason or "").startswith(expected_reason[kind]):
            misplaced.append(f"quarantine {p}:{o} kind={kind} reason={reason}")
    for p, o in zip(scored["partition"], scored["offset"], strict=True):
        if sent.get((p, o)) not in ("valid", "duplicate"):
            misplaced.append(f"flows_scored {p}:{o} kind={sent.get((p, o))}")
    kinds = Counter(sent.values())
    return {
        "malformed_sent": sum(c for k, c in kinds.items() if k not in ("valid", "duplicate")),
        "duplicates_sent": kinds["duplicate"],
        "quarantined": len(quarantined["offset"]),
        "scored": len(scored["offset"]),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "unknown_offsets": len(unknown),
        "misplaced": len(misplaced),
        "sent_by_kind": dict(sorted(kinds.items())),
        "quarantine_reasons": dict(sorted(reasons.items())),
        "examples": {"lost": lost[:5], "duplicated": duplicated[:5], "misplaced": misplaced[:5]},
    }


def run_backpressure(s: Settings, cfg: Config) -> dict[str, Any]:
    """Queue all records first, then let the job drain them in micro-batches bounded by maxOffsetsPerTrigger."""
    work = s.out / "work-backpressure"
    broker = LocalBroker(free_port(), free_port(), work / "kafka", heap="512m")
    job_out = work / "stream"
    checkpoint = job_out / "checkpoints" / "stream_detect"
    job: Job | None = None
    try:
        broker.start()
        ensure_topics(broker.bootstrap, cfg)
        model, model_note = resolve_model(s.model, cfg, work)
        producer = Producer(broker.bootstrap, cfg, cfg.kafka.flows_topic, threading.Lock())
        t_produce = time.monotonic()
        flows = synthetic_flows(s.records, seed=s.seed, hosts=500)
        while batch := [Message("valid", message_key(r, cfg.prep.sequence_key), encode(r))
                        for _, r in zip(range(20_000), flows, strict=False)]:
            producer.send(batch)
        producer.close()
        produce_s = time.monotonic() - t_produce
        ends: dict[int, int] = {}
        for p, o in producer.sent:
            ends[p] = max(ends.get(p, 0), o + 1)
        job = Job(job_command(job_out, model, broker.bootstrap, s.max_offsets, s.trigger), work / "job.log")
        t0 = time.monotonic()
        job.start()
        deadline = t0 + s.timeout_s
        while not all_processed(checkpoint, ends):
            if not job.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the job did not drain the queue (alive={job.alive()}); see {job.log}")
            time.sleep(1.0)
        seconds = time.monotonic() - t0
        job.stop()
        sizes = batch_sizes(checkpoint)
        scored = len(read_columns(job_out / "tables" / "flows_scored", ["offset"])["offset"])
        return {"records": len(producer.sent), "produce_seconds": round(produce_s, 1),
                "drain_seconds": round(seconds, 1), "flows_per_s": round(len(producer.sent) / seconds),
                "scored": scored, "micro_batches": len(sizes) + 1, "max_offsets_per_trigger": s.max_offsets,
                "max_batch_records": max(sizes, default=0),
                "peak_rss_mb": {k: round(v / 2**20) for k, v in job.peak_rss.items()}, "model": model_note}
    finally:
        if job is not None:
            job.stop(timeout_s=30)
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for reliability.json and the run's work files")
    parser.add_argument("--mode", choices=["chaos", "backpressure"], default="chaos")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--crashes", type=int, default=3)
    parser.add_argument("--broker-restarts", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-offsets", type=int, default=5000, help="stream.max_offsets_per_trigger")
    parser.add_argument("--trigger", default="500 milliseconds", help="stream.trigger_interval")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for any one step")
    parser.add_argument("--without-big", action="store_true",
                        help="leave out the 1 MB message (to isolate the other faults; see docs/benchmarks.md)")
    parser.add_argument("--model", help="model folder (default: conf model.dir; random weights when absent)")
    add_config_args(parser)
    args = parser.parse_args(argv)
    cfg = load_config(args.sets, args.config)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings(out, args.records, args.crashes, args.broker_restarts, args.seed, args.max_offsets,
                        args.trigger, max(100, min(2000, args.records // 50)), args.timeout, args.model,
                        not args.without_big)
    if args.mode == "chaos":
        result = run_chaos(settings, cfg)
        name = "reliability.json"
        ok = (result["records"] == args.records and result["lost"] == 0 and result["duplicated"] == 0
              and result["misplaced"] == 0
              and result["quarantined"] == result["malformed_sent"] and result["job_exits_by_itself"] == 0
              and result["query_restarts"] <= result["broker_restarts"] + result["crashes_injected"])
    else:
        result = run_backpressure(settings, cfg)
        name = "backpressure.json"
        ok = result["scored"] == result["records"] and result["max_batch_records"] <= args.max_offsets
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"{'OK' if ok else 'FAILED'}: wrote {out / name}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
