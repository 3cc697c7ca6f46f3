#!/usr/bin/env bash
# Direct mode (issue 19) next to the engine mode and Beam's `local_docker`, on one
# requirement set, with a loopback registry (`make bench` runs it on the demo set and
# on the GPU-size set; `make bench-direct` on the demo set). Rows, each timed end to
# end with its peak memory (/usr/bin/time):
#   - direct, no engine (DOCKER_HOST pointing nowhere), cold: base indexed from its
#     layers (downloaded once from the registry), both layers made and pushed;
#   - direct, no engine, code-only change on a fresh state directory: the base's and
#     the dependency layer's installed sets fetched from the registry, only the
#     application layer made and pushed (no base layer read);
#   - engine mode, cold (--network none, pushed) and code-only change, same inputs;
#   - Beam's `local_docker`: `DOCKER_BUILDKIT=0 docker build` of the Dockerfile the
#     real apache-beam writes for the same inputs (integration/fixtures/beam_context.py),
#     cold (--no-cache) and, unless BENCH_DIRECT_ANCHOR_CODE=0, after the same code-only
#     change (Beam stages again). Its peak memory is the docker CLI's only (the build
#     runs in the daemon): shown as "-".
#
# The set (BENCH_DIRECT_SET):
#   demo   the demo's requirements and wheels (default);
#   torch  torch==2.5.1 for cp311 with its CUDA 12 dependencies, about 3 GB of wheels
#          (5.3 GB installed), every wheel pinned: the wheels bench/gpu.sh uses
#          ($CACHE/bench/torch-2.5.1-cp311), downloaded once from PyPI when missing
#          (bench/torch-wheels.sh); the pipeline is a package that imports torch.
#          Needs BENCH_DIRECT_NEED_GB (default 40) free where the engine and the state
#          root keep their bytes, else it says SKIPPED and exits 0. The anchor's
#          code-only row is off by default here (BENCH_DIRECT_ANCHOR_CODE=1 runs it):
#          Beam regenerates the sdist on every launch, so it reinstalls everything.
#          BENCH_DIRECT_PINS="nvidia-cublas-cu12 nvidia-cudnn-cu12 nvidia-nvjitlink-cu12"
#          stages only those wheels of the set (they must need nothing else: about
#          1.05 GB of wheels, 1.55 GiB installed), for a smaller disk or a busier machine.
#   any other set: BENCH_DIRECT_REQUIREMENTS=FILE BENCH_DIRECT_WHEELS=DIR (every wheel
#          pinned in FILE), with the demo pipeline.
# Prints a table, and writes it with every figure to target/bench-direct-SET.json
# (BENCH_DIRECT_JSON); logs in target/bench-logs/direct-SET-*.log. Exits non-zero
# only when something could not be measured.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE="${PREBUILDER_FIXTURE_CACHE:-/var/cache/prebuilder-fixtures}"
# shellcheck disable=SC1091
source "$CACHE/fixtures.env"
# shellcheck source=bench/torch-wheels.sh
source bench/torch-wheels.sh
BIN="${PREBUILDER_BIN:-target/release/prebuilder}"
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
SET="${BENCH_DIRECT_SET:-demo}"
LOGS="${BENCH_LOGS:-$ROOT/target/bench-logs}"
JSON_OUT="${BENCH_DIRECT_JSON:-$ROOT/target/bench-direct-$SET.json}"
[ -x "$BIN" ] || { echo "bench-direct: $BIN is missing (cargo build --release)" >&2; exit 1; }
mkdir -p "$LOGS" "$(dirname "$JSON_OUT")"
say() { printf 'bench-direct(%s): %s\n' "$SET" "$*" >&2; }

PIPELINE_SRC=demo/pipeline
ANCHOR_CODE="${BENCH_DIRECT_ANCHOR_CODE:-1}"
case "$SET" in
    demo)
        REQ="${BENCH_DIRECT_REQUIREMENTS:-demo/requirements.txt}"
        WHEELS="${BENCH_DIRECT_WHEELS:-$FIXTURE_DEMO_WHEELS}"
        ;;
    torch)
        ANCHOR_CODE="${BENCH_DIRECT_ANCHOR_CODE:-0}"
        need_gb="${BENCH_DIRECT_NEED_GB:-40}"
        state_root="${PREBUILDER_STATE_DIR:-/var/lib/prebuilder}"
        mkdir -p "$state_root"
        for where in "$(docker info --format '{{.DockerRootDir}}')" "$state_root" "${TMPDIR:-/tmp}"; do
            free=$(df --output=avail -B1G "$where" | tail -n 1 | tr -d ' ')
            if [ "${free:-0}" -lt "$need_gb" ]; then
                say "SKIPPED: $where has $free GB free, the torch set needs $need_gb GB (BENCH_DIRECT_NEED_GB)"
                exit 0
            fi
        done
        WHEELS="$CACHE/bench/torch-2.5.1-cp311"
        if ! torch_wheels_fresh "$WHEELS" "torch==2.5.1"; then
            say "downloading torch==2.5.1 and its CUDA 12 dependencies into $WHEELS (about 3 GB)"
            torch_wheels_download "$FIXTURE_BEAM_VENV_PYTHON" "$WHEELS" "torch==2.5.1" ||
                { say "pip download of torch==2.5.1 failed (PyPI reachable?)"; exit 1; }
        fi
        REQ=""
        ;;
    *) say "BENCH_DIRECT_SET is demo or torch, not $SET"; exit 2 ;;
esac

WORK="$(mktemp -d)"
REG_PID=""
PORT=""
cleanup() {
    set +e
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
    remove_images
    [ -n "${BASE_REF:-}" ] && docker rmi -f "$BASE_REF" >/dev/null 2>&1
    rm -rf "$WORK"
}
# The images this run made on the engine: the engine rows' (in the loopback
# registry's name, which only this run uses) and the anchor's.
remove_images() {
    [ -n "$PORT" ] || return 0
    docker images --format '{{.Repository}} {{.Tag}}' |
        awk -v r="127.0.0.1:$PORT/prebuilder-bench/direct" -v a="prebuilder-bench/direct-anchor-$$" \
            '($1 == r || $1 == a) && $2 != "<none>" { print $1 ":" $2 }' |
        xargs -r docker rmi >/dev/null 2>&1 || true
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

PIPELINE="$WORK/pipeline"
if [ "$SET" = torch ]; then
    # As bench/gpu.sh's: a module that imports torch, no other requirement.
    mkdir -p "$PIPELINE/gpu_pipeline"
    cat >"$PIPELINE/setup.py" <<'PY'
import setuptools
setuptools.setup(name="prebuilder-gpu-bench", version="0.1.0", packages=["gpu_pipeline"])
PY
    cat >"$PIPELINE/gpu_pipeline/__init__.py" <<'PY'
EDIT = 0


def square(x):
    import torch
    return float(torch.tensor(x) ** 2)
PY
    torch_wheels_pins "$WHEELS" >"$WORK/pins.txt"
    if [ -n "${BENCH_DIRECT_PINS:-}" ]; then
        pattern=$(tr ' ' '\n' <<<"$BENCH_DIRECT_PINS" | grep . | sed 's/.*/^&==/' | paste -sd'|')
        grep -E "$pattern" "$WORK/pins.txt" >"$WORK/pins.subset" ||
            { say "BENCH_DIRECT_PINS names none of the set: $BENCH_DIRECT_PINS"; exit 1; }
        mv "$WORK/pins.subset" "$WORK/pins.txt"
    fi
    REQ="$WORK/pins.txt"
    CODE_FILE="$PIPELINE/gpu_pipeline/__init__.py"
else
    cp -r "$PIPELINE_SRC" "$PIPELINE"
    CODE_FILE="$PIPELINE/demo_pipeline/main.py"
fi
# A comment unique to this run: every key is new, so "cold" is cold for both builders.
{ echo "# bench-direct $$ $(date +%s%N)"; cat "$REQ"; } >"$WORK/requirements.txt"
REQ_ORIG="$REQ"
REQ="$WORK/requirements.txt"
set_bytes=0
while read -r pin; do
    case "$pin" in '#'* | '') continue ;; esac
    name=${pin%%==*}
    f=$(ls "$WHEELS"/"${name//-/_}"-"${pin#*==}"-*.whl "$WHEELS"/"$name"-"${pin#*==}"-*.whl 2>/dev/null | head -n 1 || true)
    [ -n "$f" ] && set_bytes=$((set_bytes + $(stat -c %s "$f")))
done <"$REQ"

# run NAME STATE ENGINE [ARGS...]: one build, its seconds and peak RSS in $WORK/NAME.*
run() {
    local name=$1 state=$2 engine=$3
    shift 3
    local host=(env "PREBUILDER_STATE_DIR=$state")
    [ "$engine" = none ] && host+=("DOCKER_HOST=unix:///nonexistent/docker.sock")
    local t0 t1
    say "$name"
    t0=$(date +%s.%N)
    "${host[@]}" /usr/bin/time -f '%M' -o "$WORK/$name.rss" "$BIN" build --format json \
        --base "$BASE_REF" --repository "127.0.0.1:$PORT/prebuilder-bench/direct" --push \
        --requirements-file "$REQ" --requirements-cache "$WHEELS" \
        --setup-file "$PIPELINE" "$@" >"$WORK/$name.json" 2>"$LOGS/direct-$SET-$name.log" || {
        say "$name failed:"; tail -20 "$LOGS/direct-$SET-$name.log" >&2; exit 1; }
    t1=$(date +%s.%N)
    python3 -c "print(round($t1 - $t0, 2))" >"$WORK/$name.s"
}

# anchor NAME [FLAGS...]: Beam stages the inputs (its own code, offline), then
# `docker build` of the Dockerfile it wrote, as `local_docker` runs it.
anchor() {
    local name=$1 ctx="$WORK/ctx-$1" t0 t1
    shift
    mkdir -p "$ctx"
    say "anchor $name: Beam stages the context"
    "$FIXTURE_BEAM_VENV_PYTHON" integration/fixtures/beam_context.py --out "$ctx" \
        --requirements_file "$REQ" --requirements_cache "$WHEELS" \
        --setup_file "$PIPELINE/setup.py" --sdk_container_image "$FIXTURE_BEAM_IMAGE" \
        2>"$LOGS/direct-$SET-$name-context.log" ||
        { say "Beam could not stage $name"; tail -20 "$LOGS/direct-$SET-$name-context.log" >&2; exit 1; }
    sed -i "1s|^FROM .*|FROM $FIXTURE_BEAM_IMAGE|" "$ctx/Dockerfile"
    say "anchor $name: docker build"
    t0=$(date +%s.%N)
    DOCKER_BUILDKIT=0 docker build --network none --force-rm \
        -t "prebuilder-bench/direct-anchor-$$:$name" "$@" "$ctx" >"$LOGS/direct-$SET-$name.log" 2>&1 || {
        say "anchor $name failed:"; tail -20 "$LOGS/direct-$SET-$name.log" >&2; exit 1; }
    t1=$(date +%s.%N)
    python3 -c "print(round($t1 - $t0, 2))" >"$WORK/$name.s"
    echo '{"builder": "local_docker", "layers": []}' >"$WORK/$name.json"
    echo - >"$WORK/$name.rss"
    rm -rf "$ctx"
}

S="$WORK/state"
run direct-cold "$S-1" none --builder direct --launch-python "$FIXTURE_BEAM_VENV_PYTHON"
echo "# code change" >>"$CODE_FILE"
run direct-code "$S-2" none --builder direct --launch-python "$FIXTURE_BEAM_VENV_PYTHON"
run engine-cold "$S-3" docker --builder engine --network none
echo "# code change 2" >>"$CODE_FILE"
run engine-code "$S-3" docker --builder engine --network none
# The engine rows' images go before the anchor's bytes arrive.
remove_images
anchor anchor-cold --no-cache
if [ "$ANCHOR_CODE" = 1 ]; then
    echo "# code change 3" >>"$CODE_FILE"
    anchor anchor-code
fi
remove_images

rows=(direct-cold "direct, no engine, cold + push"
      direct-code "direct, no engine, code-only"
      engine-cold "engine, cold + push"
      engine-code "engine, code-only"
      anchor-cold "local_docker (docker build), cold")
[ "$ANCHOR_CODE" = 1 ] && rows+=(anchor-code "local_docker, code-only")
python3 - "$WORK" "$JSON_OUT" "$SET" "$REQ_ORIG" "$WHEELS" "$set_bytes" "$(cut -d' ' -f1-3 /proc/loadavg)" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "${rows[@]}" <<'EOF'
import json, os, sys
work, out, name, req, wheels, set_bytes, load, commit = sys.argv[1:9]
rows = sys.argv[9:]
table = []
for key, label in zip(rows[::2], rows[1::2]):
    r = json.load(open(os.path.join(work, key + ".json")))
    rss = open(os.path.join(work, key + ".rss")).read().strip()
    parts = [len(l.get("parts") or []) for l in r.get("layers", [])]
    table.append({
        "scenario": label,
        "seconds": float(open(os.path.join(work, key + ".s")).read()),
        "peak_rss_mb": None if rss == "-" else round(int(rss) / 1000, 1),
        "builder": r.get("builder", "?"),
        "layers": ", ".join(
            "%s %s%s" % (l["name"][:3], l["cache"], " (%d parts)" % p if p else "")
            for l, p in zip(r.get("layers", []), parts)),
    })
print("set: %s: %s (%.1f MB of wheels in %s); load %s; commit %s"
      % (name, req, int(set_bytes) / 1e6, wheels, load, commit))
print("%-36s %10s  %10s  %-12s %s" % ("scenario", "seconds", "peak RSS", "builder", "layers"))
for t in table:
    rss = "-" if t["peak_rss_mb"] is None else "%.1f MB" % t["peak_rss_mb"]
    print("%-36s %8.2f s  %10s  %-12s %s" % (t["scenario"], t["seconds"], rss, t["builder"], t["layers"]))
json.dump({"set": name, "requirements": req, "wheels": wheels, "wheel_bytes": int(set_bytes),
           "loadavg_at_end": load, "commit": commit, "rows": table}, open(out, "w"), indent=1)
EOF
say "results: $JSON_OUT"
