# Targets mirror CI one for one: .ci/run calls `make test`.
SHELL := /bin/bash
CARGO ?= cargo
FIXTURE_CACHE ?= $(or $(PREBUILDER_FIXTURE_CACHE),/var/cache/prebuilder-fixtures)
export PREBUILDER_FIXTURE_CACHE := $(FIXTURE_CACHE)

.PHONY: all build test lint unit demo-fixtures fixtures integration python-test wheel sdist-test demo bench bench-engines bench-direct bench-platform leftovers

all: build

build:
	$(CARGO) build --release --locked

## Every test: lint, unit and CLI tests (no engine), then fixtures, the
## integration tests against the real engine, and the Beam plugin's tests.
test: lint unit integration python-test

## The structure lints fail on an import loop between the files of a module
## folder or a non-test function over 80 lines (STRICT_LINT= only reports
## them); an import cycle between top-level modules always fails.
STRICT_LINT ?= 1
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	python3 scripts/test_lints.py
	python3 scripts/check-cycles.py $(if $(STRICT_LINT),--strict)
	python3 scripts/check-fn-length.py $(if $(STRICT_LINT),--strict)

unit:
	$(CARGO) test --locked --lib --bins --test cli

## Offline fixture images, wheels and a host venv with apache-beam, then the
## custom bases (no boot, broken variants), the PyFlink base (apache-flink +
## JRE 17; ~6 min and ~420 MB of wheels cold), the attestation tools and the
## direct-mode wheels, while the arm64 SDK base builds beside them
## (debootstrap --arch=arm64 under qemu: ~9.5 min cold here alone, mostly one
## emulated process, 1 s warm; installs qemu-user-static/binfmt-support and
## mounts binfmt_misc when missing; the others never touch apt), then Docker 26
## and 28 from Debian packages for the engine matrix (~100 MB, ~20 s cold,
## extracted under the cache, never installed); reused when present. A failure
## of any stops the arm64 build too.
fixtures: demo-fixtures
	@set -euo pipefail; \
	echo "bash integration/fixtures/arm64.sh >/dev/null &  (beside the ones below)"; \
	setsid bash integration/fixtures/arm64.sh >/dev/null & arm64=$$!; \
	trap 'kill -TERM -- -$$arm64 2>/dev/null || true' EXIT; trap 'exit 130' INT TERM; \
	for f in custom-bases flink attest-tools direct; do \
		echo "bash integration/fixtures/$$f.sh >/dev/null"; \
		bash "integration/fixtures/$$f.sh" >/dev/null; \
	done; \
	echo "wait for bash integration/fixtures/arm64.sh >/dev/null"; \
	wait $$arm64 || { echo "fixtures: integration/fixtures/arm64.sh failed" >&2; exit 1; }; \
	trap - EXIT
	bash integration/fixtures/engines.sh >/dev/null

## One engine, one build at a time: the tests share the engine's CPU and cache.
integration: fixtures
	$(CARGO) test --locked --test integration -- --test-threads=1

## The Beam engine plugin (python/) with the real apache-beam, binary and engine;
## PREBUILDER_BIN picks the binary (default target/debug/prebuilder). Then the
## wheel (package + binary, by maturin) in a fresh venv with apache-beam runs the
## end-to-end pipeline test with no PREBUILDER_BIN and no prebuilder on PATH,
## and the sdist builds a wheel from source, offline.
python-test: fixtures
	$(CARGO) build --locked --bin prebuilder
	CARGO=$(CARGO) bash python/run-tests.sh
	bash python/run-installed-tests.sh
	$(MAKE) sdist-test

## The prebuilder-beam wheel (maturin from PyPI, once; dev profile, reusing the
## target dir) into target/wheels.
wheel:
	bash python/build-wheel.sh

## The sdist builds from source with no network: `pip wheel` of it with maturin,
## cargo offline. The target dir is shared, so dependencies are reused and the
## crate compiles from the unpacked sdist (~10-60 s; a cold build is ~7 min).
sdist-test:
	set -euo pipefail; \
	sdist=$$(bash python/build-wheel.sh --sdist | tail -n 1); \
	out=$$(mktemp -d); trap 'rm -rf "$$out"' EXIT; \
	tools=$(FIXTURE_CACHE)/python-tools/maturin-venv/bin; \
	PATH="$$tools:$$PATH" CARGO_NET_OFFLINE=true MATURIN_PEP517_ARGS="--profile dev" \
	CARGO_TARGET_DIR=$${CARGO_TARGET_DIR:-$(CURDIR)/target} \
	"$$tools/pip" wheel -q --no-deps --no-build-isolation --no-index -w "$$out" "$$sdist"; \
	"$$tools/python" -c 'import sys, zipfile; names = zipfile.ZipFile(sys.argv[1]).namelist(); sys.exit(not any(n.endswith(".data/scripts/prebuilder") for n in names))' "$$out"/prebuilder_beam-*.whl; \
	echo "sdist-test: $$(basename "$$sdist") built $$(basename "$$out"/prebuilder_beam-*.whl) offline, binary included"

## Prebuild the demo pipeline end to end and print the report.
## What the demo needs: the tools, the Debian and Beam-like fixture bases and
## the demo's wheels (not the arm64 base, built under emulation, ~25 min cold).
demo-fixtures:
	bash integration/fixtures/tools.sh
	bash integration/fixtures/build.sh >/dev/null

demo: demo-fixtures build
	bash demo/run.sh

## prebuilder vs Beam's local_docker (docker build) on a ~60 MB scikit-learn set:
## cold, unchanged relaunch, code-only change, image size, hashing, peak memory.
## Prints a table, writes target/bench.json; a missed target says MISSED (exit 0).
## Then the GPU-size rows (torch 2.5.1 + CUDA 12 wheels, downloaded once;
## skipped, and said, without 40 GB free): target/bench-gpu.json.
## Then every engine of the matrix: cold, relaunch, code-only and push (bench/engines.sh).
## Then direct mode (no engine) next to the engine mode and local_docker, seconds and
## peak memory, on the demo set and on the GPU-size set (the same torch wheels; skipped,
## and said, without 40 GB free): target/bench-direct-{demo,torch}.json.
## Then two platforms, direct vs the engine under emulation (bench/platform.sh).
bench: fixtures build
	bash bench/run.sh
	bash bench/gpu.sh
	PREBUILDER_BIN=$${PREBUILDER_BIN:-target/release/prebuilder} bash bench/engines.sh
	bash bench/direct.sh
	BENCH_DIRECT_SET=torch bash bench/direct.sh
	bash bench/platform.sh

## Cold build, unchanged relaunch, code-only change and push on every engine
## of the matrix: Docker 20.10, Docker 28 and 26 with the containerd store,
## Docker 28 classic, Podman (BENCH_ENGINES picks a subset); one run each, a
## table on stdout.
## Direct mode (no engine) next to the engine mode and Beam's local_docker: cold and
## code-only, seconds and peak memory, on the demo set (BENCH_DIRECT_SET=torch: the
## GPU-size set; or BENCH_DIRECT_REQUIREMENTS/BENCH_DIRECT_WHEELS).
bench-direct: fixtures build
	bash bench/direct.sh

## Two platforms (linux/amd64,linux/arm64): direct with no engine next to the engine
## under qemu emulation, cold and code-only, on the same inputs (bench/platform.sh).
bench-platform: fixtures build
	bash bench/platform.sh

bench-engines: fixtures build
	PREBUILDER_BIN=$${PREBUILDER_BIN:-target/release/prebuilder} bash bench/engines.sh

## Containers and images prebuilder or its tests left behind (there should be none).
leftovers:
	@docker ps -a --filter label=prebuilder --format '{{.ID}} {{.Names}} {{.Status}}'
	@docker images --filter 'reference=prebuilder-test/*' --format '{{.Repository}}:{{.Tag}} {{.ID}}'
