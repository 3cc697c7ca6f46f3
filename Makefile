# Targets mirror CI one for one: .ci/run calls `make test`.
SHELL := /bin/bash
CARGO ?= cargo
FIXTURE_CACHE ?= $(or $(PREBUILDER_FIXTURE_CACHE),/var/cache/prebuilder-fixtures)
export PREBUILDER_FIXTURE_CACHE := $(FIXTURE_CACHE)

.PHONY: all build test lint unit fixtures integration python-test demo bench leftovers

all: build

build:
	$(CARGO) build --release --locked

## Every test: lint, unit and CLI tests (no engine), then fixtures, the
## integration tests against the real engine, and the Beam plugin's tests.
test: lint unit integration python-test

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	python3 scripts/check-cycles.py

unit:
	$(CARGO) test --locked --lib --bins --test cli

## Offline fixture images, wheels and a host venv with apache-beam, then the
## custom bases (no boot, broken variants), then the PyFlink base (apache-flink +
## JRE 17; ~5 min and ~420 MB of wheels cold); reused when present.
fixtures:
	bash integration/fixtures/tools.sh
	bash integration/fixtures/build.sh >/dev/null
	bash integration/fixtures/custom-bases.sh >/dev/null
	bash integration/fixtures/flink.sh >/dev/null

## One engine, one build at a time: the tests share the engine's CPU and cache.
integration: fixtures
	$(CARGO) test --locked --test integration -- --test-threads=1

## The Beam engine plugin (python/) with the real apache-beam, binary and engine;
## PREBUILDER_BIN picks the binary (default target/debug/prebuilder).
python-test: fixtures
	$(CARGO) build --locked --bin prebuilder
	CARGO=$(CARGO) bash python/run-tests.sh

## Prebuild the demo pipeline end to end and print the report.
demo: fixtures build
	bash demo/run.sh

## prebuilder vs Beam's local_docker (docker build) on a ~60 MB scikit-learn set:
## cold, unchanged relaunch, code-only change, image size, hashing, peak memory.
## Prints a table, writes target/bench.json; a missed target says MISSED (exit 0).
bench: fixtures build
	bash bench/run.sh

## Containers and images prebuilder or its tests left behind (there should be none).
leftovers:
	@docker ps -a --filter label=prebuilder --format '{{.ID}} {{.Names}} {{.Status}}'
	@docker images --filter 'reference=prebuilder-test/*' --format '{{.Repository}}:{{.Tag}} {{.ID}}'
