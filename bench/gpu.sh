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
#   BENCH_GPU_ROWS            `cold`: only the cold build and its anchor (about
#                             4 minutes), then the table; default every row
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
for tool in jq python3 awk flock curl docker-registry /usr/bin/time; do command -v "$tool" >/dev/null || die "$tool is needed"; done

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
  rm -f "$results"
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
  [ -z "${f2_dir:-}" ] || bash integration/fixtures/engine.sh stop "$f2_dir" >/dev/null 2>&1 || rm -rf "$f2_dir"
  [ -z "${reg_pid:-}" ] || { kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null; }
  rm -rf "$tmp"
  finish
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

remove_anchor() {
  docker images --format '{{.Repository}}:{{.Tag}}' |
    awk -v a="$anchor_repo" -F: '$1 == a && $2 != "<none>"' | xargs -r docker rmi >/dev/null 2>&1 || true
}

# Every image this run made: its tags, then the untagged parents it left
# (prebuilder's layer images carry the keys of this run's setup containers).
seen_ids="$tmp/image-ids"
touch "$seen_ids"
# The registry rows' repositories start with $reg/ (set once it runs).
reg=""
ours_or_anchor='$1 == a || $1 == b || (p != "" && index($1, p "/") == 1)'
record_images() {
  docker images --no-trunc --format '{{.Repository}} {{.ID}}' |
    awk -v a="$ours_repo" -v b="$anchor_repo" -v p="$reg" "$ours_or_anchor { print \$2 }" >>"$seen_ids" || true
}
remove_images() {
  local refs ids
  record_images
  refs=$(docker images --format '{{.Repository}} {{.Tag}}' |
    awk -v a="$ours_repo" -v b="$anchor_repo" -v p="$reg" "($ours_or_anchor) && \$2 != \"<none>\" { print \$1 \":\" \$2 }" || true)
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

# The Beam-style flags' requirements cache: the set's wheels (hard links),
# made now, minutes before the flags' first run: a file changed within the
# digest cache's granularity of its run is hashed again on the next (git's
# racy-file rule), and a link changes its ctime.
flags_wheels="$tmp/flags-wheels"
mkdir -p "$flags_wheels"
while read -r pin; do
  name=${pin%%==*}
  for f in "$wheels"/"${name//-/_}"-"${pin#*==}"-*.whl; do
    [ -f "$f" ] && { ln "$f" "$flags_wheels/" 2>/dev/null || cp "$f" "$flags_wheels/"; }
  done
done <"$req"

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
# Per layer: staged-file upload; the setup (pip, then the snapshot's walk
# and tar in the container); the record; the snapshot's transfer from the
# container, cut and hashed into the layer files as it arrives (one pass);
# the load (the archive streamed to the engine); and the push's phases.
names = {"uploading": "upload", "running_setup": "setup", "recording": "record",
         "writing_layer": "transfer_and_write_layer", "loading_layer": "load_layer"}
layers = {}
# Not phases: the setup's output, log lines, and the heavy layers made
# while the setup runs (counted below).
quiet = ("setup_output", "log", "early_layer", "early_layers_dropped")
for i, (t, ev, layer, e) in enumerate(marks):
    if ev in names and layer:
        nxt = next((m[0] for m in marks[i + 1:] if m[1] not in quiet), end)
        layers.setdefault(layer, {})[names[ev]] = round(nxt - t, 3)
    if ev == "early_layer" and layer:
        layers.setdefault(layer, {})["early_layers"] = e.get("index", 0)
    if ev == "early_layers_dropped" and layer:
        layers.setdefault(layer, {})["early_layers_dropped"] = e.get("count", 0)
    if ev == "running_setup" and layer:
        # pip's end: the setup's last line but its snapshot's (the parts it
        # writes while prebuilder loads them, after "recording").
        outs = [m for m in marks[i + 1:] if m[1] == "setup_output" and m[2] == layer
                and not m[3].get("line", "").startswith("prebuilder: snapshot")]
        if outs:
            layers[layer]["pip"] = round(outs[-1][0] - t, 3)
            nxt = next((m[0] for m in marks[i + 1:] if m[1] not in quiet), end)
            layers[layer]["snapshot_in_container"] = round(nxt - outs[-1][0], 3)
out["layers"] = layers
out["total"] = end
print(json.dumps(out))
PY
}

# ours NAME CONTEXT_DIR [FLAGS…]: one timed prebuilder build (the plugin's
# command line: --context, --origins; with CONTEXT_DIR empty, FLAGS are the
# inputs, as Beam-style flags), phases under ours.NAME.
ours() {
  local name=$1 dir=$2 t0 t1 pid status=0
  shift 2
  local out="$tmp/ours-$name.json" log="$logs/gpu-$name-ours.log"
  local inputs=()
  [ -z "$dir" ] || inputs=(--context "$dir/context")
  [ -z "$dir" ] || [ ! -f "$dir/origins.json" ] || inputs+=(--origins "$dir/origins.json")
  local repo=${OURS_REPO:-$ours_repo}
  t0=$(now)
  /usr/bin/time -f '%M %e' -o "$tmp/rss-$name" \
    "$bin" build "${inputs[@]}" --base "$FIXTURE_BEAM_IMAGE" --network none \
    --format json --progress json --repository "$repo" "$@" >"$out" 2> >(stamp "$t0" >"$log") &
  pid=$!
  pids+=("$pid")
  # prebuilder is time's child: its pid names its setup containers.
  sleep 0.2
  pids+=($(pgrep -P "$pid" || true))
  wait "$pid" || status=$?
  t1=$(now)
  record_images
  [ "$status" -eq 0 ] || { sleep 0.2; tail -n 30 "$log" >&2; die "prebuilder build ($name) exited with status $status; log: $log"; }
  sleep 0.2
  # Seconds from time(1), prebuilder's own run: t1 comes after this
  # function's sleep, which a sub-second relaunch would otherwise include.
  local rss secs
  rss=$(tail -n 1 "$tmp/rss-$name" 2>/dev/null | awk '$1 ~ /^[0-9]+$/ { print $1 }')
  secs=$(tail -n 1 "$tmp/rss-$name" 2>/dev/null | awk '$2 ~ /^[0-9.]+$/ { print $2 }')
  rss=${rss:-0}
  secs=${secs:-$(elapsed "$t0" "$t1")}
  put "[\"ours\",\"$name\"]" "$(jq --argjson s "$secs" --argjson p "$(phases "$log" "$secs")" \
    --arg log "$log" --argjson rss "$rss" --argjson up "$(uploaded_bytes "$log")" \
    '{seconds: $s, phases: $p, peak_rss_kb: $rss, uploaded_bytes: $up, cached, image, digest, sdk_container_image,
      layers: [.layers[] | del(.record)], log: $log}' "$out")"
  say "$name: prebuilder $secs s; phases $(jq -c --arg n "$name" '.ours[$n].phases.layers' "$results")"
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
  # The engine is shared: an untagged intermediate image removed by someone
  # else's cleanup mid-build fails it ("unknown parent image ID"). Once more.
  if [ "$status" -ne 0 ] && grep -q 'unknown parent image ID' "$log"; then
    say "$name: anchor lost an intermediate image to another cleanup; running it again"
    status=0
    t0=$(now)
    DOCKER_BUILDKIT=0 docker build --network none --force-rm \
      -t "$anchor_repo:$name" "$@" "$dir/context" > >(stamp "$t0" >"$log") 2>&1 || status=$?
    t1=$(now)
  fi
  record_images
  [ "$status" -eq 0 ] || { sleep 0.2; tail -n 30 "$log" >&2; die "docker build ($name) exited with status $status; log: $log"; }
  put "[\"anchor\",\"$name\"]" "$(jq -n --argjson s "$(elapsed "$t0" "$t1")" --arg log "$log" \
    --arg image "$anchor_repo:$name" '{seconds: $s, image: $image, log: $log}')"
  say "$name: anchor (docker build $*) $(elapsed "$t0" "$t1") s"
}

# uploaded_bytes LOG: what prebuilder's push uploaded (its `uploaded (N MB)`
# push lines), in bytes.
uploaded_bytes() {
  jq -R 'capture("^[0-9.]+ (?<j>.*)$").j | fromjson? | select(.event == "push_status") | .status
         | capture("uploaded \\((?<mb>[0-9.]+) MB\\)").mb | tonumber * 1e6' "$1" 2>/dev/null |
    awk '{ s += $1 } END { printf "%.0f\n", s }'
}

size_over_base() {
  local base
  base=$(docker image inspect --format '{{.Size}}' "$FIXTURE_BEAM_IMAGE")
  echo $(( $(docker image inspect --format '{{.Size}}' "$1") - base ))
}

# The table: each of issue 22's targets, met or MISSED (exit status 0);
# a row not run this time reads "-".
table() {
put '["machine","loadavg_before_table"]' "\"$(cut -d' ' -f1-3 /proc/loadavg)\""
python3 - "$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ours, anchor = r.get("ours", {}), r.get("anchor", {})
reg, pull, stage = r.get("registry", {}), r.get("pull", {}), r.get("stage", {})
def sec(d, k):
    return d.get(k, {}).get("seconds")
def row(name, o, a, target, met):
    ratio = f"{o / a:.2f}" if o is not None and a else "-"
    fmt = lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else "-"
    verdict = "-" if met is None else ("met" if met else "MISSED")
    print(f"{name:34} {fmt(o):>10} {fmt(a):>10} {ratio:>6}  {target:28} {verdict}")
print(f"{'scenario':34} {'ours s':>10} {'anchor s':>10} {'ratio':>6}  {'target':28} met?")
o, a = sec(ours, "cold"), sec(anchor, "cold")
row("cold build", o, a, "<= 0.8x docker build", None if o is None or not a else o <= 0.8 * a)
o, a = sec(ours, "code"), sec(anchor, "code")
row("code-only change", o, a, "(reference)", None)
o = sec(ours, "relaunch")
copy = stage.get("relaunch", {}).get("copy_seconds")
row("unchanged, plugin path", o, None, f"< 0.3 s or < Beam's copy {copy or 0:.1f} s",
    None if o is None else (o < 0.3 or (copy is not None and o < copy)))
o = sec(ours, "flags-relaunch")
row("unchanged, Beam-style flags", o, None, "< 0.3 s", None if o is None else o < 0.3)
def share(d, k, key, limit, what):
    v = d.get(k, {})
    if not v:
        print(f"{what:34} {'not run':>10}")
        return
    s = v.get(key)
    mb = lambda b: f"{(b or 0) / 1e6:.0f} MB"
    moved = v.get("uploaded_bytes", v.get("blob_bytes_pulled"))
    verdict = "-" if limit is None or s is None else ("met" if s < limit else "MISSED")
    pct = "-" if s is None else f"{100 * s:.1f}%"
    print(f"{what:34} {mb(moved):>10} of {mb(v.get('image_compressed_bytes')):>9} {pct:>7}  "
          f"{'< %d%%' % (100 * limit) if limit else '(reference)':28} {verdict}"
          + (f"  {v['seconds']:.1f} s" if "seconds" in v else ""))
share(reg, "push-first", "uploaded_share", None, "push, first pipeline")
share(reg, "push-second", "uploaded_share", 0.05, "push, second pipeline (other repo)")
share(reg, "push-bump", "uploaded_share", 0.05, "push, small requirement bumped")
share(pull, "first", "pulled_share", None, "empty engine pulls the first")
share(pull, "second", "pulled_share", 0.10, "then pulls the second")
for k in ("push-first", "push-second", "push-bump"):
    if k in ours:
        print(f"  {k}: {ours[k]['seconds']:.1f} s in all (build hit or miss, then push)")
im = r.get("images", {})
if im.get("ours") and im.get("anchor"):
    print(f"image size over the base: ours {im['ours'] / 1e9:.2f} GB, anchor {im['anchor'] / 1e9:.2f} GB")
cold = ours.get("cold", {})
print(f"peak RSS of the cold build: {cold.get('peak_rss_kb', 0) / 1000:.1f} MB")
for layer, ph in cold.get("phases", {}).get("layers", {}).items():
    print(f"  cold {layer}: " + ", ".join(f"{k} {v:.1f} s" for k, v in ph.items()))
print(f"load average now: {r.get('machine', {}).get('loadavg_before_table')}")
PY
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
if [ "${BENCH_GPU_ROWS:-}" = cold ]; then
  anchor cold "$tmp/cold" --no-cache
  put '["images","anchor"]' "$(size_over_base "$anchor_repo:cold")"
  remove_anchor
  table
  exit 0
fi
# Relaunch, unchanged inputs (prebuilder's staging reads nothing: the
# originals' digests are remembered).
ours relaunch "$tmp/relaunch"
rm -rf "$tmp/relaunch"
# Unchanged relaunch from Beam-style flags (prebuilder stages the inputs
# itself): the first run builds its own application layer (its sdist is
# not Beam's), the second is the relaunch (digests remembered by inode).
flags=(--requirements-file "$req" --requirements-cache "$flags_wheels" --setup-file "$pipeline/setup.py")
ours flags-first "" "${flags[@]}"
ours flags-relaunch "" "${flags[@]}"
# Code-only change: one line of the pipeline's code, staged again by Beam.
sed -i 's/^EDIT = .*/EDIT = 1/' "$pipeline/gpu_pipeline/__init__.py"
stage code
ours code "$tmp/code"
anchor cold "$tmp/cold" --no-cache
put '["images","anchor"]' "$(size_over_base "$anchor_repo:cold")"
# The anchor's code-only change: Beam's Dockerfile copies the context
# first, so every step after its `mkdir` runs again whatever the cache
# holds; the cold result is removed first (disk: it is 8+ GB).
remove_anchor
anchor code "$tmp/code"
remove_anchor
rm -rf "$tmp/code"

# ---------------------------------------------------------------------------
# Registry rows: a real docker-registry on a free loopback port. The first
# pipeline pushed to one repository; a second pipeline (the same set and
# one more small requirement) to another: what it uploads; the same with
# that requirement bumped: what the bump uploads; then an empty engine (a
# second dockerd) pulls the first, then the second: what the second adds.
reg_dir="$tmp/registry"
mkdir -p "$reg_dir"
reg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$reg_dir/data" "$reg_port" >"$reg_dir/config.yml"
docker-registry serve "$reg_dir/config.yml" >"$logs/gpu-registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $reg_port), 1)" 2>/dev/null && break
  sleep 0.1
done
reg="127.0.0.1:$reg_port/prebuilder-bench"
# blob_store_bytes: bytes of every blob the registry stores (what uploads added).
blob_store_bytes() { du -sb "$reg_dir/data/docker/registry/v2/blobs" 2>/dev/null | cut -f1 || echo 0; }
# compressed_bytes REF: the compressed size of an image in the registry
# (its manifest's layers and config).
compressed_bytes() {
  local repo=${1%@*} digest=${1#*@}
  curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
    "http://127.0.0.1:$reg_port/v2/${repo#*/}/manifests/$digest" | jq '[.layers[]?.size] | add + 0'
}
# pushed NAME CONTEXT_DIR REPO: a timed build --push (prebuilder's own
# push), its upload against the image's compressed size under registry.NAME.
pushed() {
  local name=$1 dir=$2 repo=$3 before after ref
  before=$(blob_store_bytes)
  OURS_REPO=$repo ours "$name" "$dir" --push
  after=$(blob_store_bytes)
  ref=$(jq -r --arg n "$name" '.ours[$n].sdk_container_image' "$results")
  put "[\"registry\",\"$name\"]" "$(jq -n --arg ref "$ref" --argjson added $((after - before)) \
    --argjson image "$(compressed_bytes "$ref")" --argjson up "$(jq --arg n "$name" '.ours[$n].uploaded_bytes' "$results")" \
    '{ref: $ref, registry_bytes_added: $added, uploaded_bytes: $up, image_compressed_bytes: $image,
      uploaded_share: (if $image > 0 then $up / $image else null end)}')"
  say "$name: uploaded $(jq -r --arg n "$name" '.registry[$n] | "\(.uploaded_bytes / 1e6 | floor) MB of \(.image_compressed_bytes / 1e6 | floor) MB (registry +\(.registry_bytes_added / 1e6 | floor) MB)"' "$results")"
}
pushed push-first "$tmp/cold" "$reg/gpu-first"
rm -rf "$tmp/cold"

# The second pipeline: one more small requirement (a pure-Python wheel),
# and that requirement bumped. Its wheels beside the set's (hard links).
small_name=tabulate small_new=0.9.0 small_old=0.8.10
extra="$cache/bench/small-wheels"
if [ ! -f "$extra/.stamp" ]; then
  mkdir -p "$extra"
  for v in "$small_old" "$small_new"; do
    env -u PIP_FIND_LINKS -u PIP_NO_INDEX "$FIXTURE_BEAM_VENV_PYTHON" -m pip download -q \
      --disable-pip-version-check --dest "$extra" --no-deps --only-binary=:all: \
      "$small_name==$v" || die "pip download of $small_name==$v failed"
  done
  touch "$extra/.stamp"
fi
second() {
  local name=$1 version=$2 w="$tmp/$1-wheels"
  mkdir -p "$w"
  for f in "$wheels"/*.whl "$extra/$small_name-$version-"*.whl; do ln "$f" "$w/" 2>/dev/null || cp "$f" "$w/"; done
  { cat "$req"; echo "$small_name==$version"; } >"$tmp/$name-requirements.txt"
  mkdir -p "$tmp/$name"
  PYTHONPATH="$root/python" "$FIXTURE_BEAM_VENV_PYTHON" bench/plugin_staging.py --out "$tmp/$name" \
    --requirements_file "$tmp/$name-requirements.txt" --requirements_cache "$w" --setup_file "$pipeline/setup.py" \
    --sdk_container_image "$FIXTURE_BEAM_IMAGE" >"$tmp/$name/staging.json" 2>"$logs/gpu-$name-staging.log" ||
    { tail -n 20 "$logs/gpu-$name-staging.log" >&2; die "Beam could not stage $name"; }
  rm -rf "$w"
}
second second "$small_new"
pushed push-second "$tmp/second" "$reg/gpu-second"
rm -rf "$tmp/second"
second bump "$small_old"
pushed push-bump "$tmp/bump" "$reg/gpu-second"
rm -rf "$tmp/bump"

# An empty engine (a new worker) pulls the first pipeline, then the second:
# the registry's access log says which blob bytes it served.
f2_dir=$(mktemp -d /tmp/gpu-stream-engine.XXXXXX)
f2_host=""
for driver in overlay2 fuse-overlayfs; do
  f2_host=$(bash integration/fixtures/engine.sh start "$f2_dir" --storage "$driver" \
    --log "$logs/gpu-dockerd-$driver.log" 2>/dev/null | sed -n 's/^ENGINE_HOST=//p') && [ -n "$f2_host" ] &&
    [ "$(DOCKER_HOST=$f2_host docker info --format '{{.Driver}}' 2>/dev/null)" = "$driver" ] && break
  bash integration/fixtures/engine.sh stop "$f2_dir" >/dev/null 2>&1 || true
  f2_dir=$(mktemp -d /tmp/gpu-stream-engine.XXXXXX)
  f2_host=""
done
[ -n "$f2_host" ] || die "no second dockerd started (overlay2, fuse-overlayfs); logs in $logs"
put '["pull","driver"]' "\"$driver\""
reg_blob_bytes() {
  tail -c +$(($1 + 1)) "$logs/gpu-registry.log" |
    awk '/"GET \/v2\/[^ ]*\/blobs\/sha256:[0-9a-f]+ HTTP/ {
           for (i = 1; i < NF; i++) if ($i ~ /^HTTP\/[0-9.]+"$/) { if ($(i + 2) ~ /^[0-9]+$/) s += $(i + 2); break }
         } END { printf "%.0f\n", s }'
}
pull() {
  local name=$1 ref=$2 off t0 t1
  off=$(stat -c %s "$logs/gpu-registry.log")
  t0=$(now)
  DOCKER_HOST=$f2_host docker pull -q "$ref" >"$logs/gpu-pull-$name.log" 2>&1 ||
    { cat "$logs/gpu-pull-$name.log" >&2; die "the empty engine could not pull $ref"; }
  t1=$(now)
  sleep 0.5
  put "[\"pull\",\"$name\"]" "$(jq -n --arg ref "$ref" --argjson s "$(elapsed "$t0" "$t1")" \
    --argjson bytes "$(reg_blob_bytes "$off")" --argjson image "$(compressed_bytes "$ref")" \
    '{ref: $ref, seconds: $s, blob_bytes_pulled: $bytes, image_compressed_bytes: $image,
      pulled_share: (if $image > 0 then $bytes / $image else null end)}')"
  say "pull $name: $(elapsed "$t0" "$t1") s, $(($(reg_blob_bytes "$off") / 1000000)) MB"
}
pull first "$(jq -r '.registry["push-first"].ref' "$results")"
pull second "$(jq -r '.registry["push-second"].ref' "$results")"

table
