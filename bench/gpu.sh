#!/usr/bin/env bash
# The GPU-size rows of `make bench` (issue 22): a torch==2.5.1 pipeline with
# its CUDA 12 wheels (about 3 GB of wheels, 5.3 GB installed), staged by the
# real apache-beam through the plugin's own staging, built by prebuilder and
# by the anchor (`docker build` of the Dockerfile Beam writes) in the same
# run, with prebuilder's time split into its phases. A benchmark, not a
# test: it exits 0 when it cannot run for lack of disk (and says SKIPPED);
# non-zero only when something could not be measured.
#
#   bash bench/gpu.sh            # after `make fixtures` and `cargo build --release`
#
# Environment:
#   PREBUILDER_BIN            the binary (default target/release/prebuilder)
#   PREBUILDER_FIXTURE_CACHE  fixture cache (default /var/cache/prebuilder-fixtures)
#   BENCH_GPU_JSON            where the JSON goes (default target/bench-gpu.json)
#   BENCH_LOGS                per-run logs, stamped (default target/bench-logs)
#   BENCH_GPU_PINS            space-separated distribution names: stage only
#                             these of the set (and what they need), e.g.
#                             "nvidia-cublas-cu12 triton filelock" on a small disk
#   BENCH_GPU_NEED_GB         free space required before starting (default 40)
#
# What stays: the wheels, downloaded once into the fixture cache
# (bench/torch-2.5.1-cp311, one copy), the logs and the JSON. Images are
# tagged prebuilder-bench/gpu-{ours,anchor} and removed at the end with
# their untagged parents; containers are labelled prebuilder-bench or are
# setup containers of a prebuilder this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

cache="${PREBUILDER_FIXTURE_CACHE:-/var/cache/prebuilder-fixtures}"
bin="${PREBUILDER_BIN:-${CARGO_TARGET_DIR:-target}/release/prebuilder}"
json_out="${BENCH_GPU_JSON:-target/bench-gpu.json}"
logs="${BENCH_LOGS:-target/bench-logs}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
case "$json_out" in /*) ;; *) json_out="$root/$json_out" ;; esac
case "$logs" in /*) ;; *) logs="$root/$logs" ;; esac
need_gb="${BENCH_GPU_NEED_GB:-40}"
torch_spec="torch==2.5.1"
wheels="$cache/bench/torch-2.5.1-cp311"
ours_repo=prebuilder-bench/gpu-ours
anchor_repo=prebuilder-bench/gpu-anchor
bench_label=prebuilder-bench

say() { printf 'bench-gpu: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
now() { printf '%s\n' "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
stamp() {
  local t0=$1 line t
  while IFS= read -r line || [ -n "$line" ]; do
    t=$(( ${EPOCHREALTIME/./} - ${t0/./} ))
    printf '%d.%06d %s\n' $((t / 1000000)) $((t % 1000000)) "$line"
  done
}

[ -f "$cache/fixtures.env" ] || die "no $cache/fixtures.env; run \`make fixtures\` first"
# shellcheck disable=SC1091
source "$cache/fixtures.env"
[ -x "$bin" ] || die "no prebuilder binary at $bin; build it (cargo build --release) or set PREBUILDER_BIN"
docker image inspect "$FIXTURE_BEAM_IMAGE" >/dev/null 2>&1 ||
  die "base image $FIXTURE_BEAM_IMAGE is not on the engine; run make fixtures"
for tool in jq python3 awk flock; do command -v "$tool" >/dev/null || die "$tool is needed"; done

mkdir -p "$logs" "$(dirname "$json_out")"
results=$(mktemp "${TMPDIR:-/tmp}/bench-gpu-results.XXXXXX")
echo '{}' >"$results"
put() {
  jq --argjson p "$1" --argjson v "$2" 'setpath($p; $v)' "$results" >"$results.new"
  mv "$results.new" "$results"
}
finish() {
  put '["machine"]' "$(jq -n --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
    --arg docker "$(docker version --format '{{.Server.Version}}') $(docker info --format '{{.Driver}}')" \
    --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    '{loadavg_at_end: $load, engine: $docker, commit: $commit}')"
  cp "$results" "$json_out"
  say "results: $json_out"
}

# Free space where the bytes go: the engine's data root (images, the setup
# container, the anchor's layers) and prebuilder's state root (its scratch).
free_gb() { df --output=avail -B1G "$1" 2>/dev/null | tail -n 1 | tr -d ' '; }
data_root=$(docker info --format '{{.DockerRootDir}}')
state_root="${PREBUILDER_STATE_DIR:-/var/lib/prebuilder}"
mkdir -p "$state_root"
for where in "$data_root" "$state_root"; do
  free=$(free_gb "$where")
  if [ "${free:-0}" -lt "$need_gb" ]; then
    say "SKIPPED: $where has ${free} GB free, a GPU-size run needs $need_gb GB (BENCH_GPU_NEED_GB)"
    put '["skipped"]' "$(jq -n --arg w "$where" --argjson f "${free:-0}" --argjson n "$need_gb" \
      '{reason: "not enough free disk", where: $w, free_gb: $f, need_gb: $n}')"
    finish
    exit 0
  fi
done

exec 9>"${TMPDIR:-/tmp}/prebuilder-bench-gpu.lock"
flock -n 9 || { say "another GPU bench holds the lock; waiting"; flock 9; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/prebuilder-bench-gpu.XXXXXX")
pids=()
cleanup() {
  local status=$? p
  trap - EXIT INT TERM
  set +e
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  {
    docker ps -aq --filter "label=$bench_label"
    for p in "${pids[@]}"; do
      docker ps -a --filter label=prebuilder=setup --format '{{.ID}} {{.Names}}' |
        awk -v p="$p" '$2 ~ ("-" p "$") { print $1 }'
    done
  } | sort -u | xargs -r docker rm -f >/dev/null 2>&1
  remove_images
  rm -rf "$tmp"
  finish
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Every image this run made: its tags, then the untagged parents it left
# (prebuilder's layer images carry the keys of this run's setup containers).
seen_ids="$tmp/image-ids"
touch "$seen_ids"
record_images() {
  docker images --no-trunc --format '{{.Repository}} {{.ID}}' |
    awk -v a="$ours_repo" -v b="$anchor_repo" '$1 == a || $1 == b { print $2 }' >>"$seen_ids" || true
}
remove_images() {
  local refs ids
  record_images
  refs=$(docker images --format '{{.Repository}}:{{.Tag}}' |
    awk -v a="$ours_repo" -v b="$anchor_repo" -F: '($1 == a || $1 == b) && $2 != "<none>"' || true)
  [ -z "$refs" ] || xargs docker rmi >/dev/null 2>&1 <<<"$refs" || true
  ids=$(sort -u "$seen_ids")
  [ -z "$ids" ] || docker image inspect --format '{{.Id}} {{len .RepoTags}}' $ids 2>/dev/null |
    awk '$2 == 0 { print $1 }' | xargs -r docker rmi >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------------------
# The wheel set, downloaded once (one copy on this machine, shared with
# bench/direct.sh through bench/torch-wheels.sh).
# shellcheck source=bench/torch-wheels.sh
source "$root/bench/torch-wheels.sh"
if ! torch_wheels_fresh "$wheels" "$torch_spec"; then
  say "downloading $torch_spec and its CUDA 12 dependencies into $wheels (about 3 GB)"
  t0=$(now)
  torch_wheels_download "$FIXTURE_BEAM_VENV_PYTHON" "$wheels" "$torch_spec" ||
    die "pip download of $torch_spec failed (PyPI reachable?)"
  put '["download_seconds"]' "$(elapsed "$t0" "$(now)")"
fi

# Every wheel pinned (Beam's Stager downloads each line with --no-deps), or
# the subset BENCH_GPU_PINS names.
req="$tmp/requirements.txt"
for w in "$wheels"/*.whl; do
  w=$(basename "$w")
  name=${w%%-*}
  rest=${w#*-}
  printf '%s==%s\n' "${name//_/-}" "${rest%%-*}"
done | sort >"$req"
if [ -n "${BENCH_GPU_PINS:-}" ]; then
  pattern=$(tr ' ' '\n' <<<"$BENCH_GPU_PINS" | grep . | sed 's/.*/^&==/' | paste -sd'|')
  grep -E "$pattern" "$req" >"$req.subset" || die "BENCH_GPU_PINS names none of the set: $BENCH_GPU_PINS"
  mv "$req.subset" "$req"
fi
set_bytes=0
while read -r pin; do
  name=${pin%%==*}
  f=$(ls "$wheels"/"${name//-/_}"-"${pin#*==}"-*.whl 2>/dev/null | head -n 1)
  [ -n "$f" ] && set_bytes=$((set_bytes + $(stat -c %s "$f")))
done <"$req"
put '["requirements"]' "$(jq -n --rawfile r "$req" --argjson b "$set_bytes" \
  '{pins: ($r | split("\n") | map(select(. != ""))), wheel_bytes: $b}')"
say "set: $(wc -l <"$req") wheels, $((set_bytes / 1000000)) MB"

# The pipeline's own package: a module that imports torch (no other requirement).
pipeline="$tmp/pipeline"
mkdir -p "$pipeline/gpu_pipeline"
cat >"$pipeline/setup.py" <<'PY'
import setuptools
setuptools.setup(name="prebuilder-gpu-bench", version="0.1.0", packages=["gpu_pipeline"])
PY
cat >"$pipeline/gpu_pipeline/__init__.py" <<'PY'
EDIT = 0


def square(x):
    import torch
    return float(torch.tensor(x) ** 2)
PY

# stage NAME: the plugin's staging (Beam's own code) into $tmp/NAME; Beam's
# time and its copy time under stage.NAME.
stage() {
  local name=$1 out="$tmp/$1"
  mkdir -p "$out"
  PYTHONPATH="$root/python" "$FIXTURE_BEAM_VENV_PYTHON" bench/plugin_staging.py --out "$out" \
    --requirements_file "$req" --requirements_cache "$wheels" --setup_file "$pipeline/setup.py" \
    --sdk_container_image "$FIXTURE_BEAM_IMAGE" >"$out/staging.json" 2>"$logs/gpu-$name-staging.log" ||
    { tail -n 20 "$logs/gpu-$name-staging.log" >&2; die "Beam could not stage $name"; }
  sed -i "1s|^FROM .*|FROM $FIXTURE_BEAM_IMAGE|" "$out/context/Dockerfile"
  put "[\"stage\",\"$name\"]" "$(cat "$out/staging.json")"
  say "$name: Beam staged $(jq -r '"\(.files) files, \(.bytes / 1e6 | floor) MB in \(.stage_seconds | . * 10 | floor / 10) s, copying \(.copy_seconds | . * 10 | floor / 10) s"' "$out/staging.json")"
}

# phases LOG SECONDS: seconds between prebuilder's progress events (the
# stamped `--progress json` lines), per layer; SECONDS is the whole run.
phases() {
  python3 - "$1" "$2" <<'PY'
import json, sys
marks = []
for line in open(sys.argv[1]):
    t, _, rest = line.partition(" ")
    try:
        e = json.loads(rest)
    except ValueError:
        continue
    marks.append((float(t), e.get("event"), e.get("layer"), e))
end = float(sys.argv[2])
out = {"staging_and_lookup": marks[0][0] if marks else 0.0}
names = {"uploading": "upload", "running_setup": "setup", "recording": "record_and_snapshot_download",
         "writing_layer": "write_layer", "loading_layer": "load_layer"}
layers = {}
for i, (t, ev, layer, e) in enumerate(marks):
    if ev in names and layer:
        nxt = next((m[0] for m in marks[i + 1:] if m[1] not in ("setup_output", "log")), end)
        layers.setdefault(layer, {})[names[ev]] = round(nxt - t, 3)
    if ev == "running_setup" and layer:
        outs = [m for m in marks[i + 1:] if m[1] == "setup_output" and m[2] == layer]
        if outs:
            layers[layer]["pip"] = round(outs[-1][0] - t, 3)
            nxt = next((m[0] for m in marks[i + 1:] if m[1] not in ("setup_output", "log")), end)
            layers[layer]["snapshot_in_container"] = round(nxt - outs[-1][0], 3)
out["layers"] = layers
out["total"] = end
print(json.dumps(out))
PY
}

# ours NAME CONTEXT_DIR [FLAGS…]: one timed prebuilder build (the plugin's
# command line: --context, --origins), phases under ours.NAME.
ours() {
  local name=$1 dir=$2 t0 t1 pid status=0
  shift 2
  local out="$tmp/ours-$name.json" log="$logs/gpu-$name-ours.log"
  local origins=()
  [ ! -f "$dir/origins.json" ] || origins=(--origins "$dir/origins.json")
  t0=$(now)
  "$bin" build --context "$dir/context" "${origins[@]}" --base "$FIXTURE_BEAM_IMAGE" --network none \
    --format json --progress json --repository "$ours_repo" "$@" >"$out" 2> >(stamp "$t0" >"$log") &
  pid=$!
  pids+=("$pid")
  wait "$pid" || status=$?
  t1=$(now)
  record_images
  [ "$status" -eq 0 ] || { sleep 0.2; tail -n 30 "$log" >&2; die "prebuilder build ($name) exited with status $status; log: $log"; }
  sleep 0.2
  put "[\"ours\",\"$name\"]" "$(jq --argjson s "$(elapsed "$t0" "$t1")" --argjson p "$(phases "$log" "$(elapsed "$t0" "$t1")")" \
    --arg log "$log" '{seconds: $s, phases: $p, cached, image, layers, log: $log}' "$out")"
  say "$name: prebuilder $(elapsed "$t0" "$t1") s; phases $(jq -c --arg n "$name" '.ours[$n].phases.layers' "$results")"
}

# anchor NAME CONTEXT_DIR [FLAGS…]: what Beam's local_docker runs.
anchor() {
  local name=$1 dir=$2 t0 t1 status=0
  shift 2
  local log="$logs/gpu-$name-anchor.log"
  t0=$(now)
  DOCKER_BUILDKIT=0 docker build --network none --force-rm \
    -t "$anchor_repo:$name" "$@" "$dir/context" > >(stamp "$t0" >"$log") 2>&1 || status=$?
  t1=$(now)
  record_images
  [ "$status" -eq 0 ] || { sleep 0.2; tail -n 30 "$log" >&2; die "docker build ($name) exited with status $status; log: $log"; }
  put "[\"anchor\",\"$name\"]" "$(jq -n --argjson s "$(elapsed "$t0" "$t1")" --arg log "$log" \
    --arg image "$anchor_repo:$name" '{seconds: $s, image: $image, log: $log}')"
  say "$name: anchor (docker build $*) $(elapsed "$t0" "$t1") s"
}

size_over_base() {
  local base
  base=$(docker image inspect --format '{{.Size}}' "$FIXTURE_BEAM_IMAGE")
  echo $(( $(docker image inspect --format '{{.Size}}' "$1") - base ))
}

# ---------------------------------------------------------------------------
say "binary $bin; base $FIXTURE_BEAM_IMAGE; temp $tmp; logs $logs"
stage cold
# The relaunch's context: Beam stages again (new copies, new sdist bytes).
stage relaunch

# Cold: nothing of this set on the engine; the anchor with --no-cache.
remove_images
ours cold "$tmp/cold"
put '["images","ours"]' "$(size_over_base "$(jq -r .ours.cold.image "$results")")"
# Relaunch, unchanged inputs (prebuilder's staging reads nothing: the
# originals' digests are remembered).
ours relaunch "$tmp/relaunch"
remove_images
anchor cold "$tmp/cold" --no-cache
put '["images","anchor"]' "$(size_over_base "$anchor_repo:cold")"
remove_images
