#!/usr/bin/env bash
# `make bench-engines`: prebuilder's cold build, unchanged relaunch and
# code-only change of the demo pipeline, on the main Docker engine and on a
# Podman service this script starts (its own root, runroot and socket; the
# fixture Beam image is copied into it). One run each: noisy figures, for
# comparing engines, not a test. Prints a table.
#
#   bash bench/engines.sh      # after `make fixtures`; PREBUILDER_BIN picks the binary
#
# What it creates goes on every exit path: the Podman service (started, and
# stopped by its pid, by integration/fixtures/engine.sh) and its storage, the
# images tagged prebuilder-bench/engines-* on the main engine (their untagged
# layers go with them), the temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache="${PREBUILDER_FIXTURE_CACHE:-/var/cache/prebuilder-fixtures}"
bin="${PREBUILDER_BIN:-target/debug/prebuilder}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
# shellcheck disable=SC1091
. "$cache/fixtures.env"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/en-bench.XXXXXX")
podman_dir=$(mktemp -d /tmp/en-podman.XXXXXX)
repo="prebuilder-bench/engines-$$"
cleanup() {
  bash integration/fixtures/engine.sh stop "$podman_dir" || true
  for t in $(DOCKER_HOST= docker images "$repo" --format '{{.Repository}}:{{.Tag}}' 2>/dev/null); do
    DOCKER_HOST= docker rmi "$t" >/dev/null 2>&1 || true
  done
  rm -rf "$tmp" "$podman_dir"
}
trap cleanup EXIT

# Podman, as the engine tests start it.
podman_host=$(bash integration/fixtures/engine.sh start "$podman_dir" --podman | sed -n 's/^ENGINE_HOST=//p')
echo "bench-engines: copying $FIXTURE_BEAM_IMAGE into Podman" >&2
DOCKER_HOST= docker save "$FIXTURE_BEAM_IMAGE" | DOCKER_HOST="$podman_host" docker load -q >/dev/null

# One build; prints "seconds cached".
build() { # host project
  DOCKER_HOST="$1" "$bin" build --base "$FIXTURE_BEAM_IMAGE" --network none --format json \
    --repository "$repo" --requirements-file "$tmp/requirements.txt" \
    --requirements-cache "$FIXTURE_DEMO_WHEELS" --setup-file "$2" 2>>"$tmp/build.log" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["seconds"], r["cached"])'
}

printf '%-8s %10s %10s %12s\n' engine cold relaunch code-change
for engine in docker podman; do
  case $engine in
    docker) host=unix:///var/run/docker.sock ;;
    podman) host=$podman_host ;;
  esac
  # Inputs no earlier run has seen: a miss on both layers.
  { echo "# bench-engines $$ $engine $(date +%s%N)"; cat demo/requirements.txt; } >"$tmp/requirements.txt"
  rm -rf "$tmp/pipeline" && cp -r demo/pipeline "$tmp/pipeline"
  cold=$(build "$host" "$tmp/pipeline/setup.py")
  again=$(build "$host" "$tmp/pipeline/setup.py")
  echo "# bench change $(date +%s%N)" >>"$tmp/pipeline/demo_pipeline/transforms.py"
  change=$(build "$host" "$tmp/pipeline/setup.py")
  printf '%-8s %9ss %9ss %11ss\n' "$engine" "${cold%% *}" "${again%% *}" "${change%% *}"
done
