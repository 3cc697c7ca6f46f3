#!/usr/bin/env bash
# `make bench-engines`: prebuilder's cold build, unchanged relaunch, code-only
# change and push of the demo pipeline on every engine of the matrix (issue
# 23): the main Docker engine (20.10), Docker 28 and 26 with the containerd
# image store and Docker 28 with the classic store (Debian packages that
# integration/fixtures/engines.sh extracted), and a Podman service. Each
# second engine is started by integration/fixtures/engine.sh (its own root,
# socket and bridge) and gets the fixture Beam image copied in. The push goes
# to a loopback docker-registry this script starts. One run each: noisy
# figures, for comparing engines, not a test. Prints a table.
#
#   bash bench/engines.sh      # after `make fixtures`; PREBUILDER_BIN picks the binary
#   BENCH_ENGINES="docker docker-28-containerd" bash bench/engines.sh   # a subset
#
# What it creates goes on every exit path: the engines (stopped by their pid
# by engine.sh) and their storage, the registry, the images tagged
# prebuilder-bench/engines-* on the main engine, the temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache="${PREBUILDER_FIXTURE_CACHE:-/var/cache/prebuilder-fixtures}"
bin="${PREBUILDER_BIN:-target/debug/prebuilder}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
# shellcheck disable=SC1091
. "$cache/fixtures.env"
# shellcheck disable=SC1091
. "$cache/engines.env"
engines=${BENCH_ENGINES:-docker docker-28-containerd docker-26-containerd docker-28-classic podman}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/en-bench.XXXXXX")
repo="prebuilder-bench/engines-$$"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
registry_pid=""
dirs=()
cleanup() {
  local d
  for d in "${dirs[@]}"; do bash integration/fixtures/engine.sh stop "$d" || true; done
  [ -z "$registry_pid" ] || kill "$registry_pid" 2>/dev/null || true
  for t in $(DOCKER_HOST= docker images "$repo" --format '{{.Repository}}:{{.Tag}}' 2>/dev/null); do
    DOCKER_HOST= docker rmi "$t" >/dev/null 2>&1 || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$tmp/registry" "$port" >"$tmp/registry.yml"
docker-registry serve "$tmp/registry.yml" >/dev/null 2>&1 &
registry_pid=$!

# start KIND: a second engine of that kind, the fixture Beam image copied in; its host.
start() {
  local dir opts=()
  dir=$(mktemp -d /tmp/en-XXXXXX)
  rmdir "$dir"
  dirs+=("$dir")
  case $1 in
    docker-28-containerd) opts=(--binaries "$FIXTURE_DOCKER28_ROOT" --containerd-store --storage overlayfs) ;;
    docker-26-containerd) opts=(--binaries "$FIXTURE_DOCKER26_ROOT" --containerd-store --storage overlayfs) ;;
    docker-28-classic) opts=(--binaries "$FIXTURE_DOCKER28_ROOT" --storage overlay2) ;;
    podman) opts=(--podman --insecure-registry "127.0.0.1:$port") ;;
  esac
  host=$(bash integration/fixtures/engine.sh start "$dir" "${opts[@]}" | sed -n 's/^ENGINE_HOST=//p')
  echo "bench-engines: copying $FIXTURE_BEAM_IMAGE into $1" >&2
  DOCKER_HOST= docker save "$FIXTURE_BEAM_IMAGE" | DOCKER_HOST="$host" docker load -q >/dev/null
}

# One build; prints "seconds cached".
build() { # host repository [flags…]
  local host=$1 repository=$2
  shift 2
  DOCKER_HOST="$host" PREBUILDER_STATE_DIR="$tmp/state" "$bin" build --base "$FIXTURE_BEAM_IMAGE" \
    --network none --format json --repository "$repository" --requirements-file "$tmp/requirements.txt" \
    --requirements-cache "$FIXTURE_DEMO_WHEELS" --setup-file "$tmp/pipeline/setup.py" "$@" 2>>"$tmp/build.log" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["seconds"], r["cached"])'
}

printf '%-22s %9s %9s %12s %9s\n' engine cold relaunch code-change push
for engine in $engines; do
  host=unix:///var/run/docker.sock
  [ "$engine" = docker ] || start "$engine"
  # Inputs no earlier run has seen: a miss on both layers.
  { echo "# bench-engines $$ $engine $(date +%s%N)"; cat demo/requirements.txt; } >"$tmp/requirements.txt"
  rm -rf "$tmp/pipeline" && cp -r demo/pipeline "$tmp/pipeline"
  cold=$(build "$host" "$repo")
  again=$(build "$host" "$repo")
  echo "# bench change $(date +%s%N)" >>"$tmp/pipeline/demo_pipeline/transforms.py"
  change=$(build "$host" "$repo")
  # The push of what the code change built (a hit, then the push itself).
  push=$(build "$host" "127.0.0.1:$port/$repo-$engine" --push)
  printf '%-22s %8ss %8ss %11ss %8ss\n' "$engine" "${cold%% *}" "${again%% *}" "${change%% *}" "${push%% *}"
  if [ "$engine" != docker ]; then
    bash integration/fixtures/engine.sh stop "${dirs[-1]}" || true
  fi
done
