#!/usr/bin/env bash
# `make bench` (and `make bench-platform`): a two-platform prebuild
# (`--platform linux/amd64,linux/arm64 --push`, issue 20) built directly with no
# engine next to the engine building it under qemu emulation, in the same run, on
# the same inputs: the demo's requirements plus numpy==2.2.6 (a compiled wheel), each
# platform's wheels from `--requirements-cache PLATFORM=DIR`
# ($FIXTURE_PLATFORM_WHEELS/linux_{amd64,arm64}), the demo pipeline; the base is the
# amd64 fixture SDK image and its arm64 twin pushed as one index to a loopback
# registry. Rows, each timed end to end with its peak memory (/usr/bin/time):
#   - direct, no engine (DOCKER_HOST pointing nowhere), cold: each platform's base
#     indexed from its layers (read once from the registry), both layers of both
#     platforms made and pushed, the index put;
#   - direct, no engine, code-only change on a fresh state directory;
#   - engine, cold: each platform's setup containers under emulation (arm64 on qemu);
#   - engine, code-only change.
# Target (issue 20): the direct cold build under a quarter of the engine's.
# Prints a table; exits non-zero only when something could not be measured.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${PREBUILDER_FIXTURE_CACHE:-/var/cache/prebuilder-fixtures}"
# shellcheck disable=SC1091
source "$CACHE/fixtures.env"
# shellcheck disable=SC1091
source "$CACHE/arm64.env"
BIN="${PREBUILDER_BIN:-target/release/prebuilder}"
[ -x "$BIN" ] || { echo "bench-platform: $BIN is missing (cargo build --release)" >&2; exit 1; }

WORK="$(mktemp -d)"
REG_PID=""
TAGGED=()
cleanup() {
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null || true
    local r
    for r in "${TAGGED[@]+"${TAGGED[@]}"}"; do docker rmi "$r" >/dev/null 2>&1 || true; done
    # The results and the bases the engine pulled (by digest), removed by
    # reference, never by id: the bases share their ids with the fixture images.
    for repo in platform2-result platform2-base; do
        docker images --digests --format '{{.Repository}}:{{.Tag}} {{.Repository}}@{{.Digest}}' \
            "127.0.0.1:$PORT/prebuilder-bench/$repo" 2>/dev/null | tr ' ' '\n' |
            grep -v -e ':<none>$' -e '@<none>$' | xargs -r docker rmi >/dev/null 2>&1 || true
    done
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

# The two fixture bases, then one manifest list over them.
REPO="127.0.0.1:$PORT/prebuilder-bench/platform2-base"
ENTRIES=""
for pair in "$FIXTURE_BEAM_IMAGE amd64" "$FIXTURE_ARM64_IMAGE arm64"; do
    read -r image arch <<<"$pair"
    docker tag "$image" "$REPO:$arch"
    TAGGED+=("$REPO:$arch")
    docker push -q "$REPO:$arch" >/dev/null
    docker rmi "$REPO:$arch" >/dev/null
    head="$(curl -sfI -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "http://127.0.0.1:$PORT/v2/prebuilder-bench/platform2-base/manifests/$arch")"
    digest="$(printf '%s' "$head" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')"
    size="$(printf '%s' "$head" | tr -d '\r' | awk -F': ' 'tolower($1)=="content-length"{print $2}')"
    ENTRIES="$ENTRIES${ENTRIES:+,}{\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\",\"digest\":\"$digest\",\"size\":$size,\"platform\":{\"os\":\"linux\",\"architecture\":\"$arch\"}}"
done
curl -sf -X PUT -H 'Content-Type: application/vnd.docker.distribution.manifest.list.v2+json' \
    --data-binary "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.list.v2+json\",\"manifests\":[$ENTRIES]}" \
    "http://127.0.0.1:$PORT/v2/prebuilder-bench/platform2-base/manifests/2.77.0" >/dev/null
BASE_REF="$REPO:2.77.0"

cp -r demo/pipeline "$WORK/pipeline"
# A comment unique to this run: every key is new, so "cold" is cold for both builders.
{ echo "# bench-platform $$ $(date +%s%N)"; grep -v '^#' demo/requirements.txt; echo "$FIXTURE_PLATFORM_REQUIREMENT"; } >"$WORK/requirements.txt"

# run NAME STATE ENGINE [ARGS...]: one build, its seconds and peak RSS in $WORK/NAME.*
run() {
    local name=$1 state=$2 engine=$3
    shift 3
    local host=(env "PREBUILDER_STATE_DIR=$state")
    [ "$engine" = none ] && host+=("DOCKER_HOST=unix:///nonexistent/docker.sock")
    local t0 t1
    t0=$(date +%s.%N)
    "${host[@]}" /usr/bin/time -f '%M' -o "$WORK/$name.rss" "$BIN" build --format json \
        --base "$BASE_REF" --platform linux/amd64,linux/arm64 \
        --repository "127.0.0.1:$PORT/prebuilder-bench/platform2-result" --push \
        --requirements-file "$WORK/requirements.txt" \
        --requirements-cache "$FIXTURE_PLATFORM_WHEELS/linux_amd64" \
        --requirements-cache "linux/arm64=$FIXTURE_PLATFORM_WHEELS/linux_arm64" \
        --setup-file "$WORK/pipeline" "$@" >"$WORK/$name.json" 2>"$WORK/$name.log" || {
        echo "bench-platform: $name failed:" >&2; tail -20 "$WORK/$name.log" >&2; exit 1; }
    t1=$(date +%s.%N)
    python3 -c "print(round($t1 - $t0, 2))" >"$WORK/$name.s"
}
row() {
    local name=$1 label=$2
    python3 - "$WORK/$name.json" "$(cat "$WORK/$name.s")" "$(cat "$WORK/$name.rss")" "$label" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
layers = "; ".join(
    "%s %s" % (p["platform"].split("/")[1], ", ".join("%s %s" % (l["name"][:3], l["cache"]) for l in p["layers"]))
    for p in r["platforms"])
print("%-36s %8s s  %7.1f MB  %-7s %s" % (sys.argv[4], sys.argv[2], int(sys.argv[3]) / 1000, r.get("builder", "?"), layers))
EOF
}

S="$WORK/state"
run direct-cold "$S-1" none --builder direct --launch-python "$FIXTURE_BEAM_VENV_PYTHON"
echo "# code change" >>"$WORK/pipeline/demo_pipeline/main.py"
run direct-code "$S-2" none --builder direct --launch-python "$FIXTURE_BEAM_VENV_PYTHON"
run engine-cold "$S-3" docker --builder engine --network none
echo "# code change 2" >>"$WORK/pipeline/demo_pipeline/main.py"
run engine-code "$S-3" docker --builder engine --network none

echo "two platforms (linux/amd64 + linux/arm64 under qemu for the engine); load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-36s %10s  %10s  %-7s %s\n' scenario seconds "peak RSS" builder layers
row direct-cold "direct, no engine, cold + push"
row direct-code "direct, no engine, code-only"
row engine-cold "engine (qemu for arm64), cold + push"
row engine-code "engine (qemu for arm64), code-only"
python3 - "$(cat "$WORK/direct-cold.s")" "$(cat "$WORK/engine-cold.s")" <<'EOF'
import sys
direct, engine = float(sys.argv[1]), float(sys.argv[2])
share = direct / engine
print("direct cold / engine cold: %.1f%% (target < 25%%): %s" % (100 * share, "met" if share < 0.25 else "MISSED"))
EOF
