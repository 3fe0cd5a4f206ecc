"""The one place a SparkSession is built.

Under spark-submit the cluster manager, master and jars come from the submit command; this helper then only
adds the Delta extension and the settings from conf/. For local runs and tests it also sets the master, the
resolved jars (paths, never a download) and the Python interpreter of this venv for the workers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from pyspark.sql import SparkSession

from jobs.lib.config import Config, conf_dir
from jobs.lib.jvm import spark_jars

# Apache Avro allocates a string's bytes at the length the message states before reading them: an Avro record
# claiming a 2 GB string took the JVM down (OutOfMemoryError, in the test suite). Above these limits, read once
# when Avro's classes load, the decoder throws instead, and from_avro reads the record as invalid. A flow's strings
# are short, and Kafka's default record limit is 1 MB. (The flow schema has no bytes or array fields, whose limits
# are separate properties.)
AVRO_STRING_LIMIT = "org.apache.avro.limits.string.maxLength"
AVRO_LIMITS = f"-D{AVRO_STRING_LIMIT}=1048576"


def launched_by_spark_submit() -> bool:
    # spark-submit starts the Python driver with a gateway to its already running JVM.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def _submitted_app_name() -> str:
    """spark.app.name as spark-submit set it (its JVM's system properties; the gateway must be up to read them)."""
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()
    return SparkConf().get("spark.app.name", "") or ""


def build_session(cfg: Config, app_name: str | None = None, master: str | None = None,
                  extra_conf: Mapping[str, str] | None = None) -> SparkSession:
    builder = SparkSession.builder
    # spark-submit's --name wins; its default (the primary file, launch.py) gets the job's own name.
    if not launched_by_spark_submit() or _submitted_app_name().endswith(".py"):
        builder = builder.appName(app_name or cfg.spark.app_name)
    if not launched_by_spark_submit():
        master = master or cfg.spark.master
        if master.startswith("local"):
            # A local run talks to itself only; binding to loopback avoids a hostname lookup warning.
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        # -Xss: Spark strips comments from generated code with java.util.regex, which recurses per character;
        # the stream job's validation expressions generate enough code to overflow the default 1 MB thread
        # stack of the query thread (StackOverflowError in java.util.regex). Threads get -Xss; main does not.
        log4j = f"-Dlog4j2.configurationFile=file:{conf_dir() / 'log4j2.properties'} -Xss32m {AVRO_LIMITS}"
        builder = (
            builder.master(master)
            .config("spark.jars", ",".join(str(p) for p in spark_jars()))
            .config("spark.driver.memory", cfg.spark.driver_memory)
            .config("spark.driver.extraJavaOptions", log4j)
            .config("spark.executor.extraJavaOptions", log4j)
        )
    builder = (
        builder.config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.spark.arrow_batch_size))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    for key, value in {**cfg.spark.conf, **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.spark.log_level)
    return spark
