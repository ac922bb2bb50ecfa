# Shopstream: the two commands of the README are `make demo` and `make test`; both install what
# they need first (a virtualenv from requirements.lock, Java and Maven if missing, the JVM jars
# from jobs/pom.xml into ~/.cache/shopstream).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Every Python package the virtualenv gets, with its hashes: pyproject.toml's pins (the base
# dependencies, the orchestration and dev extras, the build backend) and all they pull in. It sits
# beside pyproject.toml, which it is compiled from (`make lock`).
LOCK   := requirements.lock
PYTEST_ARGS ?=
DEMO_ARGS ?=
LOCK_ARGS ?=

.PHONY: demo test lint lock ui kafka-up kafka-down jars prereqs browser tools bench bench-charts clean help
GO_TOOLS := etcd kube-apiserver helm spark-operator minio skaffold

help:
	@echo "make demo        run the pipeline on the embedded default (local Kafka, local Spark, Iceberg on ./.demo)"
	@echo "                one line per step; DEMO_ARGS=--verbose prints every log line (DEMO_ARGS=--help: the options)"
	@echo "make ui          the Dagster UI on the demo's data (http://127.0.0.1:3000; Ctrl-C stops it)"
	@echo "make test        the static checks (make lint), then the whole test suite (PYTEST_ARGS='-m \"not k8s\"' to select)"
	@echo "make lint        ruff (lint and format check) and mypy, as configured in pyproject.toml"
	@echo "make lock        compile requirements.lock from pyproject.toml's pins (LOCK_ARGS=--upgrade: newest allowed)"
	@echo "make tools       build the Go test tools (etcd, kube-apiserver, helm, Spark operator, MinIO, skaffold; needs Go 1.25+)"
	@echo "make kafka-up    start the local Kafka broker in the background (state in ./.demo/kafka)"
	@echo "make kafka-down  stop it"
	@echo "make bench       run the benchmarks in bench/ and draw their charts (results in bench/results/)"
	@echo "make bench-charts redraw the charts from the results already in bench/results/"
	@echo "make clean       remove ./.demo and the virtualenv (caches in ~/.cache are kept)"

# Java 17+ and Maven come from the OS; install them when missing (root) or say what is needed.
prereqs:
	@command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Java 17 and Maven with apt-get ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless maven >/dev/null; \
	  else echo "error: Java 17+ and Maven are required (apt-get install openjdk-17-jdk-headless maven)"; exit 1; fi; }

# The UI tests open Dagster in headless Chromium, from the OS like Java.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Chromium with apt-get ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "error: the UI tests need Chromium (apt-get install chromium)"; exit 1; fi; }

# The lock's packages with their hashes checked, then the project itself without dependencies,
# built by the locked setuptools (no build isolation, so nothing unhashed is fetched).
$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q pip==25.3
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

# uv's universal resolution: one lock for Python 3.11 (the floor of requires-python) to 3.13 on
# every platform, with the hashes of every file of each release, and one version of each package for
# all of them (--fork-strategy fewest; by default uv adds a newer numpy for 3.12+ alone, and
# tests/test_lock.py wants one line per package). Pins already in the lock are kept
# unless pyproject.toml moves them (LOCK_ARGS=--upgrade takes the newest allowed);
# tests/test_lock.py fails while the two disagree.
lock: $(STAMP)
	$(PY) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
	  | $(VENV)/bin/uv pip compile -q pyproject.toml - --extra orchestration --extra dev --universal --fork-strategy fewest \
	      --python-version 3.11 --generate-hashes --custom-compile-command 'make lock' -o $(LOCK) $(LOCK_ARGS)

# The static checks, configured in pyproject.toml; all three run, and any failure fails the target.
lint: $(STAMP)
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/ruff format --check . || status=1; \
	$(VENV)/bin/mypy || status=1; \
	exit $$status

jars: $(STAMP) prereqs
	@$(PY) -m shopstream.runtime >/dev/null

demo: jars
	$(PY) -m dagster_repo.dev.demo $(DEMO_ARGS)

ui: jars
	$(PY) -m dagster_repo.dev.ui

# The Go-built test tools (pinned in tests/tools/<tool>/go.mod), cached in ~/.cache/shopstream/tools:
# etcd, kube-apiserver, helm, the Kubeflow Spark operator (binary `operator`), MinIO (`minio`, `mc`)
# and skaffold.
tools:
	@for tool in $(GO_TOOLS); do tests/tools/build.sh $$tool >/dev/null || exit 1; done

test: lint jars tools browser
	$(PY) -m pytest $(PYTEST_ARGS)

kafka-up: jars
	$(PY) -m shopstream.events.broker up

kafka-down: $(STAMP)
	$(PY) -m shopstream.events.broker down

# The charts go beside the JSON and into bench/charts/, the committed copy bench/README.md shows.
CHARTS := $(PY) bench/charts.py --out bench/results --out bench/charts

bench: jars
	$(PY) bench/streaming_bench.py
	$(PY) bench/batch_bench.py
	$(PY) bench/compaction_bench.py
	$(CHARTS)

bench-charts: $(STAMP)
	$(CHARTS)

clean:
	-@test -x $(PY) && $(PY) -m shopstream.events.broker down >/dev/null 2>&1
	rm -rf .demo $(VENV)
