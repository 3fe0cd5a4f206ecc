# FlowSentinel. `make` lists the targets. Variables use ?= so they can be overridden: make demo OUT=/tmp/x
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3.11
VENV ?= .venv
KAFKA_PORT ?= 9092
KAFKA_CONTROLLER_PORT ?= 9093
DATA ?= ../shared/data/cicids2017
# Every family the shared samples hold: the 79/85-column files and the grouped 78-column file.
DEMO_DATA ?= ../shared/data/cicids2017*/*.csv
OUT ?= out/demo
BENCH_OUT ?= out/bench
PYTEST_ARGS ?=

PY := $(VENV)/bin/python
STAMP_VENV := $(VENV)/.installed
STAMP_JARS := .jars/.resolved
MVN ?= mvn -q -B

# Spark's Python workers must run this venv's interpreter or they fail on missing modules.
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export FLOWSENTINEL_KAFKA__PORT := $(KAFKA_PORT)
export FLOWSENTINEL_KAFKA__CONTROLLER_PORT := $(KAFKA_CONTROLLER_PORT)
export FLOWSENTINEL_KAFKA__BOOTSTRAP_SERVERS := localhost:$(KAFKA_PORT)
export PYTHONUNBUFFERED := 1

.PHONY: help setup jars kafka-up kafka-down test test-all demo bench bench-prep lint typecheck clean package cluster-test sql reliability reliability-burst train compare bench-model bench-cuda

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP_VENV): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(STAMP_VENV) ## create .venv and install the project with its dev tools (idempotent)

$(STAMP_JARS): conf/maven/kafka-broker.pom.xml conf/maven/spark-connectors.pom.xml $(STAMP_VENV)
	@command -v mvn >/dev/null || { echo "error: Maven (mvn) not found; install it (apt-get install maven)"; exit 1; }
	rm -rf .jars/kafka .jars/spark
	$(MVN) -f conf/maven/kafka-broker.pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(abspath .jars/kafka)
	$(MVN) -f conf/maven/spark-connectors.pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(abspath .jars/spark)
	$(PY) -m jobs.lib.jvm prune .jars/spark
	touch $@

jars: $(STAMP_JARS) ## resolve the Kafka broker, Spark Kafka connector and Delta jars from Maven Central into .jars/ (once)

kafka-up: $(STAMP_JARS) ## start the local KRaft Kafka broker on localhost:$(KAFKA_PORT) and create the topics
	$(PY) -m jobs.lib.kafka_broker up

kafka-down: $(STAMP_VENV) ## stop the local Kafka broker started by kafka-up
	$(PY) -m jobs.lib.kafka_broker down

test: $(STAMP_VENV) $(STAMP_JARS) ## run the test suite (starts its own broker and Spark); long suites: test-all
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP_VENV) $(STAMP_JARS) ## every test, including the long ones marked slow (see tests/conftest.py)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP_VENV) $(STAMP_JARS) ## run the main job end to end on the embedded defaults and print what it found
	$(PY) -m jobs.demo --data '$(DEMO_DATA)' --out $(OUT)

BENCH_FLOWS ?= 1000000
BENCH_FORMAT ?= json

bench: $(STAMP_VENV) $(STAMP_JARS) ## streaming benchmark (+ raw model throughput; BENCH_FORMAT json|avro): $(BENCH_OUT)/stream.json, latency.png, model.json
	$(PY) -m bench.model --out $(BENCH_OUT)/model.json
	$(PY) -m bench.stream --out $(BENCH_OUT) --flows $(BENCH_FLOWS) --set kafka.flows_format=$(BENCH_FORMAT)

BENCH_PREP_ROWS ?= 2830743
BENCH_PREP_INPUT ?= out/bench-prep-input

bench-prep: $(STAMP_VENV) $(STAMP_JARS) ## batch preparation, Spark vs pandas on BENCH_PREP_ROWS replicated flows: $(BENCH_OUT)/prep.json
	$(PY) -m bench.prep --out $(BENCH_OUT) --rows $(BENCH_PREP_ROWS) --data $(DATA) --input-dir $(BENCH_PREP_INPUT)

lint: $(STAMP_VENV) ## ruff
	$(PY) -m ruff check jobs models schemas bench tests

typecheck: $(STAMP_VENV) ## mypy
	$(PY) -m mypy jobs models schemas bench

# ------------------------------------------------------------------ models (issue 4)
PREP_OUT ?= out/prepared
MODEL_OUT ?= models/default
COMPARE_OUT ?= out/compare
ARCH ?= cnn_lstm
THREADS ?= 2

# Both shared folders: the 79/85-column files and the 78-column one with family labels (every attack family).
TRAIN_DATA ?= ../shared/data/cicids2017*/*.csv
COMPARE_SEEDS ?= 3
COMPARE_FOLDS ?= 3
COMPARE_SETS ?=

train: $(STAMP_VENV) $(STAMP_JARS) ## prepare $(TRAIN_DATA) into $(PREP_OUT), train the default model into $(MODEL_OUT) (ARCH=cnn_lstm|bilstm)
	$(PY) -m jobs.prepare_training_data --input '$(TRAIN_DATA)' --output $(PREP_OUT)
	$(PY) -m jobs.train --data $(PREP_OUT) --out $(MODEL_OUT) --arch $(ARCH)

compare: $(STAMP_VENV) $(STAMP_JARS) ## CNN+LSTM vs Bi-LSTM vs forest, COMPARE_SEEDS x COMPARE_FOLDS cross-validated on $(TRAIN_DATA) -> models/COMPARISON.md
	$(PY) -m bench.compare_models --data '$(TRAIN_DATA)' --out $(COMPARE_OUT) --report models/COMPARISON.md \
		--seeds $(COMPARE_SEEDS) --folds $(COMPARE_FOLDS) $(COMPARE_SETS)

bench-cuda: $(STAMP_VENV) ## CUDA vs CPU on the same batches: scoring UDF, raw forward, AMP training -> $(BENCH_OUT)/cuda.json (needs a GPU)
	$(PY) -m bench.cuda --model $(MODEL_OUT) --threads $(THREADS) --out $(BENCH_OUT)/cuda.json

bench-model: $(STAMP_VENV) ## raw model throughput only (torch forward, batch 4096, THREADS threads) -> $(BENCH_OUT)/model.json
	$(PY) -m bench.model --model $(MODEL_OUT) --threads $(THREADS) --batch 4096 --out $(BENCH_OUT)/model.json

# ------------------------------------------------------------------ cluster, SQL, operations (issue 7)
MODEL ?= models/default
DIST ?= dist
Q ?=
QUERY ?=

package: $(STAMP_VENV) $(STAMP_JARS) ## build $(DIST)/: project wheel (+ .zip for --py-files), conf, jars, model archive (MODEL=dir)
	$(PY) -m jobs.package --dist $(DIST) --model $(MODEL)

cluster-test: package ## start a local Spark standalone cluster, spark-submit the stream job from $(DIST)/, check the tables
	FLOWSENTINEL_DIST=$(abspath $(DIST)) $(PY) -m pytest -m cluster tests/test_cluster.py $(PYTEST_ARGS)

# Q and QUERY reach jobs.sql verbatim: make does not expand them ($(value), and they are not exported, which would
# expand them) and the shell does not parse them (a quoted "$$VAR"), so backticks and $(...) stay query text.
unexport Q QUERY
sql: export FLOWSENTINEL_SQL_TEXT := $(value Q)
sql: export FLOWSENTINEL_SQL_NAME := $(value QUERY)
sql: $(STAMP_VENV) $(STAMP_JARS) ## Spark SQL over $(OUT)/tables: make sql Q="SELECT ..." or make sql QUERY=top_hosts
	@if [ -n "$$FLOWSENTINEL_SQL_NAME" ]; then $(PY) -m jobs.sql --tables $(OUT)/tables --query "$$FLOWSENTINEL_SQL_NAME"; \
	elif [ -n "$$FLOWSENTINEL_SQL_TEXT" ]; then $(PY) -m jobs.sql --tables $(OUT)/tables -- "$$FLOWSENTINEL_SQL_TEXT"; \
	else $(PY) -m jobs.sql --list; fi

# ------------------------------------------------------------------ reliability (issue 6)
RELIABILITY_RECORDS ?= 100000
BURST_RECORDS ?= 1000000

reliability: $(STAMP_VENV) $(STAMP_JARS) ## SIGKILLs, a broker restart, hostile input: $(BENCH_OUT)/reliability.json
	$(PY) -m bench.reliability --out $(BENCH_OUT) --records $(RELIABILITY_RECORDS)

reliability-burst: $(STAMP_VENV) $(STAMP_JARS) ## back-pressure: 1M queued records, peak RSS: $(BENCH_OUT)/backpressure.json
	$(PY) -m bench.reliability --out $(BENCH_OUT) --mode backpressure --records $(BURST_RECORDS) --max-offsets 50000 --timeout 3600

clean: ## remove generated outputs (keeps .venv and .jars)
	rm -rf out dist .run spark-warehouse metastore_db derby.log .pytest_cache
