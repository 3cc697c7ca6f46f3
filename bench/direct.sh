#!/usr/bin/env bash
# `make bench-direct`: direct mode (issue 19) next to the engine mode, on one
# requirement set, with a loopback registry. Rows, each timed end to end with its
# peak memory (/usr/bin/time):
#   - direct, no engine (DOCKER_HOST pointing nowhere), cold: base indexed from its
#     layers (downloaded once from the registry), both layers made and pushed;
#   - direct, no engine, code-only change on a fresh state directory: the base's and
#     the dependency layer's installed sets fetched from the registry, only the
#     application layer made and pushed (no base layer read);
#   - engine mode, cold (--network none, pushed) and code-only change, same inputs.
# Beam's `local_docker` anchor for the same demo set is `make bench`'s table.
#
# The set: the demo's requirements by default; any other with
#   BENCH_DIRECT_REQUIREMENTS=FILE BENCH_DIRECT_WHEELS=DIR bash bench/direct.sh
# (e.g. a >= 1 GB set: `pip download --platform manylinux2014_x86_64 --python-version
# 3.11 --only-binary=:all: --no-deps -d DIR torch==2.5.1 ...` with every wheel pinned
# in FILE). Prints a table; exits non-zero only when something could not be measured.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${PREBUILDER_FIXTURE_CACHE:-/var/cache/prebuilder-fixtures}"
# shellcheck disable=SC1091
source "$CACHE/fixtures.env"
BIN="${PREBUILDER_BIN:-target/release/prebuilder}"
REQ="${BENCH_DIRECT_REQUIREMENTS:-demo/requirements.txt}"
WHEELS="${BENCH_DIRECT_WHEELS:-$FIXTURE_DEMO_WHEELS}"
[ -x "$BIN" ] || { echo "bench-direct: $BIN is missing (cargo build --release)" >&2; exit 1; }

WORK="$(mktemp -d)"
REG_PID=""
cleanup() {
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null || true
    docker rmi -f "$BASE_REF" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$PORT
EOF
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 30); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.5; done
BASE_REF="127.0.0.1:$PORT/prebuilder-bench/direct-base:fixture"
docker tag "$FIXTURE_BEAM_IMAGE" "$BASE_REF"
docker push -q "$BASE_REF" >/dev/null
docker rmi "$BASE_REF" >/dev/null
cp -r demo/pipeline "$WORK/pipeline"
# A comment unique to this run: every key is new, so "cold" is cold for both builders.
{ echo "# bench-direct $$ $(date +%s%N)"; cat "$REQ"; } >"$WORK/requirements.txt"
REQ_ORIG="$REQ"
REQ="$WORK/requirements.txt"

# run NAME STATE ENGINE [ARGS...]: one build, its seconds and peak RSS in $WORK/NAME.*
run() {
    local name=$1 state=$2 engine=$3
    shift 3
    local host=(env "PREBUILDER_STATE_DIR=$state")
    [ "$engine" = none ] && host+=("DOCKER_HOST=unix:///nonexistent/docker.sock")
    local t0 t1
    t0=$(date +%s.%N)
    "${host[@]}" /usr/bin/time -f '%M' -o "$WORK/$name.rss" "$BIN" build --format json \
        --base "$BASE_REF" --repository "127.0.0.1:$PORT/prebuilder-bench/direct" --push \
        --requirements-file "$REQ" --requirements-cache "$WHEELS" \
        --setup-file "$WORK/pipeline" "$@" >"$WORK/$name.json" 2>"$WORK/$name.log" || {
        echo "bench-direct: $name failed:" >&2; tail -20 "$WORK/$name.log" >&2; exit 1; }
    t1=$(date +%s.%N)
    python3 -c "print(round($t1 - $t0, 2))" >"$WORK/$name.s"
}
row() {
    local name=$1 label=$2
    python3 - "$WORK/$name.json" "$(cat "$WORK/$name.s")" "$(cat "$WORK/$name.rss")" "$label" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
layers = ", ".join("%s %s" % (l["name"][:3], l["cache"]) for l in r["layers"])
print("%-34s %8s s  %7.1f MB  %-8s %s" % (sys.argv[4], sys.argv[2], int(sys.argv[3]) / 1000, r.get("builder", "?"), layers))
EOF
}

S="$WORK/state"
run direct-cold "$S-1" none --builder direct --launch-python "$FIXTURE_BEAM_VENV_PYTHON"
echo "# code change" >>"$WORK/pipeline/demo_pipeline/main.py"
run direct-code "$S-2" none --builder direct --launch-python "$FIXTURE_BEAM_VENV_PYTHON"
run engine-cold "$S-3" docker --builder engine --network none
echo "# code change 2" >>"$WORK/pipeline/demo_pipeline/main.py"
run engine-code "$S-3" docker --builder engine --network none

echo "set: $REQ_ORIG ($(du -sh "$WHEELS" | cut -f1) of wheels in $WHEELS); load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-34s %10s  %10s  %-8s %s\n' scenario seconds "peak RSS" builder layers
row direct-cold "direct, no engine, cold + push"
row direct-code "direct, no engine, code-only"
row engine-cold "engine, cold + push"
row engine-code "engine, code-only"
