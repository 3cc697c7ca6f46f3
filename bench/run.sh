#!/usr/bin/env bash
# `make bench`: prebuilder against Beam's own `local_docker` engine (the
# anchor: `docker build` of the Dockerfile Beam writes into the staging
# context), on the same contexts, in the same run. A benchmark, not a test:
# it exits 0 when a target is missed and says MISSED; non-zero only when
# something could not be measured (a build failed, the engine is missing, …).
#
#   bash bench/run.sh            # after `make fixtures` and `cargo build --release`
#
# Environment:
#   PREBUILDER_BIN            the binary to measure (default target/release/prebuilder,
#                             under $CARGO_TARGET_DIR when that is set, as `make build` does)
#   PREBUILDER_FIXTURE_CACHE  fixture cache (default /var/cache/prebuilder-fixtures)
#   BENCH_JSON                where the JSON copy goes (default target/bench.json)
#   BENCH_LOGS                per-run logs, stamped (default target/bench-logs)
#   BENCH_REPEAT              runs of each scenario (default 3; the table shows
#                             medians, the JSON every run)
#
# Everything it creates on the engine is removed on every exit path, with its
# temp dir: images are tagged prebuilder-bench/{ours,mem,many,anchor,fresh2-*}
# (their untagged parents go with them; other names under prebuilder-bench/
# belong to other runs and are never touched), check containers are labelled prebuilder-bench, the anchor's
# intermediate containers go with --force-rm, prebuilder's setup containers
# carry the pid of a prebuilder this script started. It never prunes and never
# touches another image or container. What stays: the wheels it downloads
# once into the fixture cache (wheels/bench), the logs, the JSON, and the
# lock file ${TMPDIR:-/tmp}/prebuilder-bench.lock (one bench at a time).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

cache="${PREBUILDER_FIXTURE_CACHE:-/var/cache/prebuilder-fixtures}"
bin="${PREBUILDER_BIN:-${CARGO_TARGET_DIR:-target}/release/prebuilder}"
json_out="${BENCH_JSON:-target/bench.json}"
logs="${BENCH_LOGS:-target/bench-logs}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
case "$json_out" in /*) ;; *) json_out="$root/$json_out" ;; esac
case "$logs" in /*) ;; *) logs="$root/$logs" ;; esac

ours_repo=prebuilder-bench/ours
mem_repo=prebuilder-bench/mem
many_repo=prebuilder-bench/many
anchor_repo=prebuilder-bench/anchor
bench_label=prebuilder-bench
repeat="${BENCH_REPEAT:-3}"          # runs of each scenario (medians reported)
sklearn_spec="scikit-learn==1.7.2"   # its closure: scipy, joblib, threadpoolctl, cloudpickle (+ numpy)

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
now() { printf '%s\n' "$EPOCHREALTIME"; }
# elapsed T0 T1: seconds between two `now` values, 3 decimals.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# Prefix every line with seconds since $1 (bash builtins only: no fork per line).
stamp() {
  local t0=$1 line t
  while IFS= read -r line || [ -n "$line" ]; do
    t=$(( ${EPOCHREALTIME/./} - ${t0/./} ))
    printf '%d.%06d %s\n' $((t / 1000000)) $((t % 1000000)) "$line"
  done
}

[ -f "$cache/fixtures.env" ] || die "no $cache/fixtures.env; run \`make fixtures\` (bash integration/fixtures/build.sh) first"
# shellcheck disable=SC1091
source "$cache/fixtures.env"
[ -x "$bin" ] || die "no prebuilder binary at $bin; build it (cargo build --release) or set PREBUILDER_BIN"
beam_context="${FIXTURE_BEAM_CONTEXT:-}"
[ -f "$beam_context" ] || beam_context="$root/integration/fixtures/beam_context.py"
[ -x "$FIXTURE_BEAM_VENV_PYTHON" ] || die "no fixture venv python at $FIXTURE_BEAM_VENV_PYTHON; run make fixtures"
docker image inspect "$FIXTURE_BEAM_IMAGE" >/dev/null 2>&1 ||
  die "base image $FIXTURE_BEAM_IMAGE is not on the engine; run make fixtures"
case "$repeat" in ''|*[!0-9]*|0) die "BENCH_REPEAT must be a positive integer, not '$repeat'" ;; esac
for tool in jq python3 /usr/bin/time flock awk docker-registry; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done

# One bench at a time on this machine: the names below are fixed.
exec 9>"${TMPDIR:-/tmp}/prebuilder-bench.lock"
if ! flock -n 9; then
  say "another bench run holds ${TMPDIR:-/tmp}/prebuilder-bench.lock; waiting"
  flock 9
fi

started=$(now)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/prebuilder-bench.XXXXXX")
pids=()          # prebuilder processes this run started (their setup containers carry the pid)
results="$tmp/results.json"
echo '{}' >"$results"

# Images of this bench: every tag in its own repositories under
# prebuilder-bench/ (others on this machine use other names under that
# prefix: never theirs). Removing the tags removes the images and their
# untagged parents (never anyone else's: an image another tag or child still
# uses stays).
bench_repos='^prebuilder-bench/(ours|mem|many|anchor|fresh2-[a-z0-9-]+)$'
bench_images() {
  docker images --format '{{.Repository}} {{.Tag}}' |
    awk -v re="$bench_repos" '$1 ~ re && $2 != "<none>" { print $1 ":" $2 }' || true
}
# Every image id this run tagged under prebuilder-bench/ (a --no-cache rerun
# moves a tag and leaves the previous image untagged, yet still found by its key).
seen_ids="$tmp/image-ids"
touch "$seen_ids"
record_images() {
  docker images --no-trunc --format '{{.Repository}} {{.ID}}' |
    awk -v re="$bench_repos" '$1 ~ re { print $2 }' >>"$seen_ids" || true
}
# remove_bench_images [REPO]: all of this bench's images, or those of REPO.
remove_bench_images() {
  local refs ids
  refs=$(bench_images | { grep -F "${1:-prebuilder-bench/}${1:+:}" || true; })
  [ -z "$refs" ] || xargs docker rmi >/dev/null 2>&1 <<<"$refs" || true
  ids=$(sort -u "$seen_ids")
  [ -z "$ids" ] || docker image inspect --format '{{.Id}} {{len .RepoTags}}' $ids 2>/dev/null |
    awk '$2 == 0 { print $1 }' | xargs -r docker rmi >/dev/null 2>&1 || true
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  # Any prebuilder we started that is still running: stop it (it removes its
  # own container on Ctrl-C).
  local p i
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -TERM "$p" 2>/dev/null
  done
  # Containers this run created: our labelled ones, and setup containers whose
  # name carries the pid of a prebuilder we started.
  {
    docker ps -aq --filter "label=$bench_label"
    for p in "${pids[@]}"; do
      docker ps -a --filter label=prebuilder=setup --format '{{.ID}} {{.Names}}' |
        awk -v p="$p" '$2 ~ ("-" p "$") { print $1 }'
    done
  } | sort -u | xargs -r docker rm -f >/dev/null 2>&1
  # A setup container interrupted while committing: the engine finishes the
  # commit before it lets the container go; wait for that (up to a minute),
  # then the image it made is swept below.
  for i in $(seq 120); do
    docker ps -a --filter label=prebuilder=setup --format '{{.Names}}' |
      awk -v pids=" ${pids[*]} " -F- 'index(pids, " " $NF " ") { found = 1 } END { exit !found }' || break
    sleep 0.5
  done
  record_images
  remove_bench_images
  # An image committed by a setup container of ours but never tagged (an
  # interrupted run): its key starts with the 12 hex digits in that
  # container's name (its creating_container event; each log line is a stamp
  # and a JSON event), and it was created after this run started.
  local keys id key created
  keys=$(cat "$logs"/*-ours.log 2>/dev/null | cut -d' ' -f2- |
    jq -rR 'fromjson? | select(.event == "creating_container") | .name' 2>/dev/null |
    awk -F- -v pids=" ${pids[*]} " 'index(pids, " " $NF " ") { print $(NF-1) }' | sort -u)
  if [ -n "$keys" ]; then
    docker images -q --no-trunc --filter dangling=true --filter label=prebuilder.key | sort -u |
      while read -r id; do
        read -r key created < <(docker image inspect --format '{{index .Config.Labels "prebuilder.key"}} {{.Created}}' "$id")
        if grep -qx "${key:0:12}" <<<"$keys" && [ "$(date -d "$created" +%s)" -ge "${started%.*}" ]; then
          docker rmi "$id" >/dev/null 2>&1
        fi
      done
  fi
  f2_stop
  [ -z "${reg_pid:-}" ] || kill "$reg_pid" 2>/dev/null
  # The registry's repositories (127.0.0.1:PORT/prebuilder-bench/…: pushed,
  # fresh2-*) are not under prebuilder-bench/: untag them here.
  [ -z "${reg_port:-}" ] || docker images --format '{{.Repository}}:{{.Tag}}' |
    grep -F "127.0.0.1:$reg_port/prebuilder-bench/" | grep -v ':<none>$' | xargs -r docker rmi >/dev/null 2>&1
  rm -rf "$tmp"
  exit "$status"
}
# The second, empty engine of the fresh-runner rows (see "Fresh runners"
# below): a dockerd this script starts. f2_stop stops it by its pid (its
# containerd by the pid it recorded, if it had to be killed), unmounts what
# it left, removes its directory and its bridge. Safe to call at any time.
f2_dir="" f2_pid="" f2_bridge="" f2_host=""
f2_stop() {
  local i
  if [ -n "$f2_pid" ]; then
    kill -TERM "$f2_pid" 2>/dev/null || true
    for i in $(seq 150); do kill -0 "$f2_pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$f2_pid" 2>/dev/null; then
      kill -KILL "$f2_pid" 2>/dev/null || true
      [ ! -f "$f2_dir/exec/containerd/containerd.pid" ] ||
        kill -KILL "$(cat "$f2_dir/exec/containerd/containerd.pid")" 2>/dev/null || true
    fi
    wait "$f2_pid" 2>/dev/null || true
    f2_pid=""
  fi
  if [ -n "$f2_dir" ]; then
    { grep -o " $f2_dir/[^ ]*" /proc/mounts 2>/dev/null || true; } | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$f2_dir" || true
    f2_dir=""
  fi
  [ -z "$f2_bridge" ] || ip link del "$f2_bridge" 2>/dev/null || true
  f2_bridge="" f2_host=""
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# put PATH JSON-VALUE: record a result.
put() {
  jq --argjson p "$1" --argjson v "$2" 'setpath($p; $v)' "$results" >"$results.new"
  mv "$results.new" "$results"
}

mkdir -p "$logs" "$(dirname "$json_out")"
rm -f "$logs"/*.log

# ---------------------------------------------------------------------------
# Requirement set: scikit-learn and its closure, downloaded once into the
# fixture cache, plus the demo pipeline's own requirements (its setup.py
# requires them).
wheels="$FIXTURE_CACHE/wheels/bench"
stamp_text="$sklearn_spec numpy==<base> manylinux2014_x86_64 cp311 + demo wheels"
if [ ! -f "$wheels/.stamp" ] || [ "$(cat "$wheels/.stamp")" != "$stamp_text" ]; then
  base_numpy=$(docker run --rm --network none --label "$bench_label=check" --entrypoint python \
    "$FIXTURE_BEAM_IMAGE" -c 'import numpy; print(numpy.__version__)')
  say "downloading $sklearn_spec and its dependencies (numpy==$base_numpy, as in the base) into $wheels"
  dl="$FIXTURE_CACHE/wheels/.bench.$$"
  rm -rf "$dl"
  mkdir -p "$dl"
  env -u PIP_FIND_LINKS -u PIP_NO_INDEX "$FIXTURE_BEAM_VENV_PYTHON" -m pip download -q \
    --disable-pip-version-check --dest "$dl" \
    --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
    --only-binary=:all: "$sklearn_spec" "numpy==$base_numpy" ||
    { rm -rf "$dl"; die "pip download of $sklearn_spec failed (PyPI reachable?)"; }
  cp "$FIXTURE_DEMO_WHEELS"/*.whl "$dl/"
  echo "$stamp_text" >"$dl/.stamp"
  rm -rf "$wheels"
  mv "$dl" "$wheels"
fi

# Pin every wheel of the set (Beam's Stager downloads each line with --no-deps).
req="$tmp/requirements.txt"
for w in "$wheels"/*.whl; do
  w=$(basename "$w")
  name=${w%%-*}
  rest=${w#*-}
  printf '%s==%s\n' "${name//_/-}" "${rest%%-*}"
done | sort >"$req"
wheel_bytes=$(cat "$wheels"/*.whl | wc -c)
wheel_count=$(wc -l <"$req")
put '["requirements"]' "$(jq -n --rawfile r "$req" --argjson b "$wheel_bytes" --argjson n "$wheel_count" \
  '{pins: ($r | split("\n") | map(select(. != ""))), wheels: $n, bytes: $b}')"
say "requirement set: $wheel_count wheels, $((wheel_bytes / 1000000)) MB: $(tr '\n' ' ' <"$req")"

# The pipeline: a copy of demo/pipeline, so the code-only change edits the copy.
pipeline="$tmp/pipeline"
mkdir -p "$pipeline"
(cd demo/pipeline && tar --exclude='*.egg-info' --exclude=__pycache__ --exclude=build --exclude=dist -cf - .) |
  tar -C "$pipeline" -xf -

# gen_context NAME [SECTION]: a fresh staging context written by the real
# apache-beam; its figures go under SECTION.NAME.context (default runs).
gen_context() {
  local dir="$tmp/ctx-$1" t0 t1 section=${2:-runs}
  mkdir -p "$dir"
  t0=$(now)
  "$FIXTURE_BEAM_VENV_PYTHON" "$beam_context" --out "$dir" \
    --requirements_file "$req" --requirements_cache "$wheels" \
    --setup_file "$pipeline/setup.py" --sdk_container_image "$FIXTURE_BEAM_IMAGE" \
    2>"$logs/$1-context.log" ||
    { cat "$logs/$1-context.log" >&2; die "Beam could not stage the $1 context"; }
  t1=$(now)
  # Beam's FROM names the base; make sure it is the fixture's.
  sed -i "1s|^FROM .*|FROM $FIXTURE_BEAM_IMAGE|" "$dir/Dockerfile"
  local staged
  staged=$(jq length "$dir/artifacts_info.json")
  put "[\"$section\",\"$1\",\"context\"]" \
    "$(jq -n --argjson s "$(elapsed "$t0" "$t1")" --argjson n "$staged" \
      --argjson b "$(du -sb --exclude=Dockerfile "$dir" | cut -f1)" \
      --arg w "$(sha256sum "$dir/workflow.tar.gz" | cut -c1-16)" \
      '{seconds: $s, staged_files: $n, bytes: $b, workflow_sha256: $w}')"
  say "$1: Beam staged $staged files in $(elapsed "$t0" "$t1") s (workflow.tar.gz sha256 $(sha256sum "$dir/workflow.tar.gz" | cut -c1-12)…)"
  printf '%s\n' "$dir"
}

# ours NAME CONTEXT [FLAGS…]: time one prebuilder build, count the containers it created.
ours() {
  local name=$1 ctx=$2 t0 t1 pid status=0
  shift 2
  local out="$tmp/ours-$name.json" log="$logs/$name-ours.log"
  t0=$(now)
  "$bin" build --context "$ctx" --base "$FIXTURE_BEAM_IMAGE" --network none --format json \
    --progress json --repository "$ours_repo" "$@" >"$out" 2> >(stamp "$t0" >"$log") &
  pid=$!
  pids+=("$pid")
  wait "$pid" || status=$?
  t1=$(now)
  record_images
  [ "$status" -eq 0 ] || { sleep 0.2; tail -n 30 "$log" >&2; die "prebuilder build ($name) exited with status $status; log: $log"; }
  # Setup containers are named prebuilder-setup-<layer>-<key>-<pid>.
  local created
  created=$(docker events --since "$t0" --until "$(now)" --filter type=container --filter event=create \
    --format '{{.Actor.Attributes.name}}' | grep -c -- "^prebuilder-setup-.*-$pid\$" || true)
  put "[\"runs\",\"$name\",\"ours\"]" \
    "$(jq --argjson s "$(elapsed "$t0" "$t1")" --argjson c "$created" --arg log "$log" --arg f "$*" \
      '{seconds: $s, containers_created: $c, report_seconds: .seconds, cached, image, image_id,
        layers, log: $log, flags: ($f | split(" ") | map(select(. != "")))}' "$out")"
  say "$name: prebuilder $(elapsed "$t0" "$t1") s, $created container(s) created, layers: $(jq -r '[.layers[] | "\(.name) \(.cache)"] | join(", ")' "$out")"
}

# anchor NAME CONTEXT [FLAGS…]: what Beam's local_docker runs, on the same context.
anchor() {
  local name=$1 ctx=$2 t0 t1 status=0
  shift 2
  local log="$logs/$name-anchor.log"
  t0=$(now)
  # As Beam's local_docker runs it (`docker build . -t NAME`), offline, with
  # the legacy builder (buildx is not installed here).
  DOCKER_BUILDKIT=0 docker build --network none --force-rm \
    -t "$anchor_repo:$name" "$@" "$ctx" > >(stamp "$t0" >"$log") 2>&1 || status=$?
  t1=$(now)
  [ "$status" -eq 0 ] || { sleep 0.2; tail -n 30 "$log" >&2; die "docker build ($name) exited with status $status; log: $log"; }
  put "[\"runs\",\"$name\",\"anchor\"]" \
    "$(jq -n --argjson s "$(elapsed "$t0" "$t1")" --arg log "$log" \
      --arg id "$(docker image inspect --format '{{.Id}}' "$anchor_repo:$name")" \
      --arg image "$anchor_repo:$name" --arg f "$*" \
      '{seconds: $s, image: $image, image_id: $id, log: $log, flags: ($f | split(" ") | map(select(. != "")))}')"
  say "$name: anchor (docker build $*) $(elapsed "$t0" "$t1") s"
}

# ---------------------------------------------------------------------------
say "binary $bin; base $FIXTURE_BEAM_IMAGE; temp $tmp; logs $logs"
left=$(bench_images)
if [ -n "$left" ]; then
  say "removing what an earlier bench run left: $(tr '\n' ' ' <<<"$left")"
  remove_bench_images
fi

# Each scenario runs $repeat times; odd runs measure prebuilder first, even
# runs the anchor first, so a load change on this shared machine does not
# always favour the same side.
# in_turn I CMD1 -- CMD2: CMD1 then CMD2 on odd I, the other way round on even I.
in_turn() {
  local i=$1 a=() b=()
  shift
  while [ "$1" != -- ]; do a+=("$1"); shift; done
  shift
  b=("$@")
  if ((i % 2)); then "${a[@]}"; "${b[@]}"; else "${b[@]}"; "${a[@]}"; fi
}

# 1. Cold. Honest cold = a first launch: no image with these keys exists on the
# engine and prebuilder runs as a user would (no --no-cache), so its cache
# lookups are paid for and miss. This bench's images are removed before each
# cold run; if a report still shows a hit, an image with the same key exists
# under another name (not ours to remove): then that run is repeated with
# --no-cache, which the table says. The anchor runs with --no-cache. All cold
# runs share one context (what is cold is the engine, not the context).
ours_cold() {
  remove_bench_images "$ours_repo"
  ours "$1" "$2"
  if [ "$(jq -r --arg n "$1" '.runs[$n].ours | .cached or (.layers | any(.cache != "miss"))' "$results")" = true ]; then
    say "$1: a layer with this key already existed outside prebuilder-bench/; measuring again with --no-cache"
    ours "$1" "$2" --no-cache
  fi
}
ctx=$(gen_context cold-1)
for i in $(seq "$repeat"); do
  in_turn "$i" ours_cold "cold-$i" "$ctx" -- anchor "cold-$i" "$ctx" --no-cache
done

# 2. Unchanged relaunch: Beam stages the same inputs again (a new sdist with
# new bytes). The anchor uses its layer cache, as local_docker would.
for i in $(seq "$repeat"); do
  ctx=$(gen_context "relaunch-$i")
  in_turn "$i" ours "relaunch-$i" "$ctx" -- anchor "relaunch-$i" "$ctx"
done

# 3. Code-only change: one line of the pipeline's code, a different edit each time.
for i in $(seq "$repeat"); do
  sed -i "s/^    \"Apache Beam & Docker.*\",\$/    \"Apache Beam \& Docker, edit $i\",/" "$pipeline/demo_pipeline/main.py"
  grep -q "Docker, edit $i\"" "$pipeline/demo_pipeline/main.py" || die "the code-only edit $i did not apply"
  ctx=$(gen_context "code-$i")
  in_turn "$i" ours "code-$i" "$ctx" -- anchor "code-$i" "$ctx"
done

# Images: size, and what is left under the artifacts directory.
# artifacts IMAGE: "files bytes wheels" under /opt/apache/beam/artifacts.
artifacts() {
  docker run --rm --network none --label "$bench_label=check" --entrypoint /bin/sh "$1" -c \
    'cd /opt/apache/beam/artifacts && printf "%s %s %s\n" "$(ls -A | wc -l)" "$(du -sb . | cut -f1)" "$(ls | grep -c "\.whl$")"'
}
base_size=$(docker image inspect --format '{{.Size}}' "$FIXTURE_BEAM_IMAGE")
for who in ours anchor; do
  for sc in "cold-$repeat" "code-$repeat"; do
    ref=$(jq -r --arg sc "$sc" ".runs[\$sc].$who.image" "$results")
    read -r files bytes whls < <(artifacts "$ref")
    put "[\"images\",\"$who\",\"${sc%%-*}\"]" "$(jq -n --arg ref "$ref" \
      --argjson size "$(docker image inspect --format '{{.Size}}' "$ref")" \
      --argjson f "$files" --argjson b "$bytes" --argjson w "$whls" \
      '{image: $ref, size: $size, artifacts_files: $f, artifacts_bytes: $b, artifacts_wheels: $w}')"
  done
done
put '["images","base"]' "$(jq -n --arg ref "$FIXTURE_BEAM_IMAGE" --argjson s "$base_size" '{image: $ref, size: $s}')"

# ---------------------------------------------------------------------------
# Registry: push of a cold build to an empty registry, then a registry hit on
# an engine from which every local image of that build was removed (what a
# second CI machine sees). A real docker-registry on a free loopback port.
reg_dir="$tmp/registry"
mkdir -p "$reg_dir"
reg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$reg_dir/data" "$reg_port" >"$reg_dir/config.yml"
docker-registry serve "$reg_dir/config.yml" >"$logs/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $reg_port), 1)" 2>/dev/null && break
  sleep 0.1
done
reg_repo="127.0.0.1:$reg_port/prebuilder-bench/pushed"
# registry_run NAME: one timed prebuilder build --push of the last cold context.
registry_run() {
  local name=$1 out="$tmp/$1.json" log="$logs/$1-ours.log" t0 t1 status=0
  t0=$(now)
  "$bin" build --context "$ctx_cold" --base "$FIXTURE_BEAM_IMAGE" --network none --format json \
    --progress json --repository "$reg_repo" --push >"$out" 2> >(stamp "$t0" >"$log") &
  local pid=$!
  pids+=("$pid")
  wait "$pid" || status=$?
  t1=$(now)
  record_images
  [ "$status" -eq 0 ] || { sleep 0.2; tail -n 30 "$log" >&2; die "prebuilder build --push ($name) exited with status $status; log: $log"; }
  put "[\"registry\",\"$name\"]" "$(jq --argjson s "$(elapsed "$t0" "$t1")" --arg log "$log" \
    '{seconds: $s, cached, digest, image_id, layers: [.layers[] | {name, cache}], log: $log}' "$out")"
  say "$name: $(elapsed "$t0" "$t1") s, digest $(jq -r .digest "$out")"
}
ctx_cold="$tmp/ctx-cold-1"
registry_run push-cold
# Forget every local image of that build, as a fresh machine would: every
# image carrying one of its layer keys (the --no-cache cold runs left earlier
# builds of the same keys, untagged but still found by key), with all tags.
keys=$(docker images --no-trunc --format '{{.Repository}} {{.ID}}' | awk -v r="$reg_repo" '$1 == r { print $2 }' |
  sort -u | xargs -r docker image inspect --format '{{index .Config.Labels "prebuilder.key"}}' | sort -u)
for _ in 1 2; do
  for key in $keys; do
    docker images -q --no-trunc --filter "label=prebuilder.key=$key" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
  done
done
for key in $keys; do
  [ -z "$(docker images -q --filter "label=prebuilder.key=$key")" ] || die "could not remove the local images of layer $key"
done
# What the engine holds of that repository before and after the hit: a layer
# that could not go (another image stands on it) is not a download.
before=$(docker images -q --no-trunc "$reg_repo" | sort -u)
registry_run registry-hit
after=$(docker images -q --no-trunc "$reg_repo" | sort -u)
put '["registry","registry-hit","images_pulled"]' \
  "$(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | grep -c . || true)"
# ---------------------------------------------------------------------------
# Fresh runners (issue 11): two engines sharing the loopback registry above,
# the second one empty, as a new CI runner is: a dockerd this script starts
# (its own data-root, exec-root, socket, pidfile and bridge br-f2-<pid>;
# --iptables=false, never --bridge=none, which deletes the host's docker0).
# Its storage driver is the first of overlay2, fuse-overlayfs, vfs with
# which it starts and runs a container. "Empty engine" between scenarios:
# every image (and container) on that engine is removed (it is ours), then
# checked empty. The base is pushed to the registry first and named there,
# so the empty engine gets it (or, on a hit, does not) from there. One run
# of each scenario (each pulls the multi-GB base or result anew; the hit is
# repeated $repeat times).
f2_base="127.0.0.1:$reg_port/prebuilder-bench/fresh2-base:fixture"
f2_repo="127.0.0.1:$reg_port/prebuilder-bench/fresh2-runners"
f2_repo_cold="127.0.0.1:$reg_port/prebuilder-bench/fresh2-cold"
edocker() { DOCKER_HOST="$f2_host" docker "$@"; }

# f2_try DRIVER: start the second dockerd on DRIVER; status 0 when it answers,
# uses that driver and runs a container (a probe image of /usr/bin/true).
f2_try() {
  local driver=$1 i net
  f2_dir=$(mktemp -d /tmp/fresh2-engine.XXXXXX)
  f2_bridge="br-f2-$$"
  # A /24 no interface uses.
  for i in $(seq 0 249); do
    net="10.232.$(( ($$ + i) % 250 + 1 ))"
    ip -4 addr | grep -q " $net\." || break
  done
  ip link add "$f2_bridge" type bridge && ip addr add "$net.1/24" dev "$f2_bridge" &&
    ip link set "$f2_bridge" up || { say "cannot create bridge $f2_bridge"; return 1; }
  printf '{"storage-driver": "%s"}\n' "$driver" >"$f2_dir/daemon.json"
  dockerd --config-file "$f2_dir/daemon.json" --data-root "$f2_dir/data" --exec-root "$f2_dir/exec" \
    --pidfile "$f2_dir/dockerd.pid" -H "unix://$f2_dir/docker.sock" \
    --bridge "$f2_bridge" --iptables=false --ip-masq=false --log-level error \
    >"$logs/fresh2-dockerd-$driver.log" 2>&1 &
  f2_pid=$!
  f2_host="unix://$f2_dir/docker.sock"
  for i in $(seq 300); do
    edocker version >/dev/null 2>&1 && break
    kill -0 "$f2_pid" 2>/dev/null || { say "second dockerd on $driver exited: $(tail -n 3 "$logs/fresh2-dockerd-$driver.log" | tr '\n' ' ')"; return 1; }
    sleep 0.2
  done
  [ "$(edocker info --format '{{.Driver}}' 2>/dev/null)" = "$driver" ] ||
    { say "second dockerd did not start on $driver"; return 1; }
  # shellcheck disable=SC2046
  tar -chf - /usr/bin/true $(ldd /usr/bin/true | grep -o '/[^ ]*') 2>/dev/null |
    edocker import - prebuilder-bench/fresh2-probe:1 >/dev/null 2>&1 &&
    edocker run --rm --network none prebuilder-bench/fresh2-probe:1 /usr/bin/true >/dev/null 2>&1 ||
    { say "a container does not run on the second dockerd with $driver"; return 1; }
  edocker rmi prebuilder-bench/fresh2-probe:1 >/dev/null
}

# f2_wipe: the second engine empty again (every container and image on it).
f2_wipe() {
  local ids i
  edocker ps -aq | DOCKER_HOST=$f2_host xargs -r docker rm -f >/dev/null 2>&1 || true
  # Children first; a parent goes once its child has (three passes).
  for i in 1 2 3; do
    ids=$(edocker images -aq --no-trunc | sort -u)
    [ -n "$ids" ] || return 0
    DOCKER_HOST=$f2_host xargs docker rmi -f <<<"$ids" >/dev/null 2>&1 || true
  done
  [ -z "$(edocker images -aq)" ] || die "could not empty the second engine: $(edocker images -a | tr '\n' ' ')"
}

# reg_blob_bytes OFFSET: bytes of blobs the registry served (GET .../blobs/)
# since byte OFFSET of its log (its access log: one line per request).
reg_blob_bytes() {
  tail -c +$(($1 + 1)) "$logs/registry.log" |
    awk '/"GET \/v2\/[^ ]*\/blobs\/sha256:[0-9a-f]+ HTTP/ {
           for (i = 1; i < NF; i++) if ($i ~ /^HTTP\/[0-9.]+"$/) { if ($(i + 2) ~ /^[0-9]+$/) s += $(i + 2); break }
         } END { printf "%d\n", s }'
}
reg_blob_gets() {
  tail -c +$(($1 + 1)) "$logs/registry.log" | grep -c '"GET /v2/[^ ]*/blobs/sha256:' || true
}

# f2_ours NAME ENGINE CTX REPO [FLAGS…]: one timed `prebuilder build --push`
# on ENGINE (main or empty), base $f2_base. Records seconds, the report's
# layers, what the engine holds after, the blob bytes the registry served.
f2_ours() {
  local name=$1 where=$2 ctx=$3 repo=$4 t0 t1 pid status=0 off host=""
  shift 4
  local out="$tmp/f2-$name.json" log="$logs/fresh2-$name-ours.log"
  [ "$where" = main ] || host=$f2_host
  off=$(stat -c %s "$logs/registry.log")
  t0=$(now)
  DOCKER_HOST=${host:-${DOCKER_HOST:-}} "$bin" build --context "$ctx" --base "$f2_base" --network none \
    --format json --progress json --repository "$repo" --push "$@" >"$out" 2> >(stamp "$t0" >"$log") &
  pid=$!
  pids+=("$pid")
  wait "$pid" || status=$?
  t1=$(now)
  record_images
  [ "$status" -eq 0 ] || { sleep 0.2; tail -n 30 "$log" >&2; die "prebuilder build on the $where engine ($name) exited with status $status; log: $log"; }
  local images=null created
  created=$(DOCKER_HOST=${host:-${DOCKER_HOST:-}} docker events --since "$t0" --until "$(now)" \
    --filter type=container --filter event=create --format '{{.Actor.Attributes.name}}' |
    grep -c -- "^prebuilder-setup-.*-$pid\$" || true)
  [ "$where" = main ] || images=$(edocker images -aq | grep -c . || true)
  put "[\"fresh\",\"runs\",\"$name\"]" \
    "$(jq --argjson s "$(elapsed "$t0" "$t1")" --arg engine "$where" --arg log "$log" \
      --argjson c "$created" --argjson images "$images" \
      --argjson bytes "$(reg_blob_bytes "$off")" --argjson gets "$(reg_blob_gets "$off")" --arg f "$*" \
      '{seconds: $s, engine: $engine, report_seconds: .seconds, cached, image, image_id, digest,
        layers: [.layers[] | {name, cache, image_id}], containers_created: $c,
        images_on_engine_after: $images, blob_bytes_pulled: $bytes, blob_gets: $gets, log: $log,
        flags: ($f | split(" ") | map(select(. != "")))}' "$out")"
  say "fresh2 $name ($where engine): prebuilder $(elapsed "$t0" "$t1") s, layers: $(jq -r '[.layers[] | "\(.name) \(.cache)"] | join(", ")' "$out"), digest $(jq -r .digest "$out")"
}

# f2_timed NAME KIND CMD…: one timed command on the empty engine (the anchor's
# docker build, a docker pull), its output stamped into a log.
f2_timed() {
  local name=$1 kind=$2 t0 t1 status=0 off
  shift 2
  local log="$logs/fresh2-$name-$kind.log"
  off=$(stat -c %s "$logs/registry.log")
  t0=$(now)
  DOCKER_HOST=$f2_host "$@" > >(stamp "$t0" >"$log") 2>&1 || status=$?
  t1=$(now)
  [ "$status" -eq 0 ] || { sleep 0.2; tail -n 30 "$log" >&2; die "$* on the empty engine ($name) exited with status $status; log: $log"; }
  put "[\"fresh\",\"$kind\",\"$name\"]" \
    "$(jq -n --argjson s "$(elapsed "$t0" "$t1")" --arg log "$log" --arg cmd "$*" \
      --argjson bytes "$(reg_blob_bytes "$off")" \
      '{seconds: $s, command: $cmd, blob_bytes_pulled: $bytes, log: $log}')"
  say "fresh2 $name: $* on the empty engine $(elapsed "$t0" "$t1") s"
}

# The base in the registry, under a name only the registry has.
t0=$(now)
docker tag "$FIXTURE_BEAM_IMAGE" "$f2_base"
docker push -q "$f2_base" >"$logs/fresh2-base-push.log" 2>&1 || { cat "$logs/fresh2-base-push.log" >&2; die "could not push the base to $f2_base"; }
docker rmi "$f2_base" >/dev/null
put '["fresh","base_push_seconds"]' "$(elapsed "$t0" "$(now)")"
say "fresh2: base pushed to $f2_base in $(elapsed "$t0" "$(now)") s"

driver=""
for d in overlay2 fuse-overlayfs vfs; do
  if f2_try "$d"; then driver=$d; break; fi
  f2_stop
done
[ -n "$driver" ] || die "no storage driver works for a second dockerd (logs: $logs/fresh2-dockerd-*.log)"
[ -z "$(edocker images -aq)" ] || die "the second engine is not empty"
put '["fresh","engine"]' "$(jq -n --arg d "$driver" --arg main "$(docker info --format '{{.Driver}}')" \
  '{driver: $d, main_driver: $main, empty_between: "every image of the second engine removed, then checked empty"}')"
say "fresh2: second engine at $f2_host, storage driver $driver"

# The first runner (the main engine) builds and pushes: the result and its
# dependency layer (layer-<key>) are then in the registry.
f2_ctx_a=$(gen_context fresh2-a fresh_contexts)
f2_ours cold-main main "$f2_ctx_a" "$f2_repo"

# Registry hit on the empty engine: the same inputs, staged again by Beam.
for i in $(seq "$repeat"); do
  ctx=$(gen_context "fresh2-hit-$i" fresh_contexts)
  f2_ours "hit-$i" empty "$ctx" "$f2_repo"
done
put '["fresh","hit_engine_after"]' "$(jq -n --argjson n "$(edocker images -aq | grep -c . || true)" \
  --arg df "$(edocker system df --format '{{.Type}} {{.Size}}' | awk '$1 == "Images" { print $2 }')" \
  '{images: $n, images_size: $df}')"

# The same inputs built on the empty engine (into another repository, so
# nothing is found): prebuilder's own cold build on an empty engine (it pulls
# the base), and the same image id and pushed digest as the main engine's.
f2_ours cold-empty empty "$f2_ctx_a" "$f2_repo_cold"

# A code-only change. The anchor first: docker build of Beam's Dockerfile on
# the empty engine (FROM the base in the registry, which it pulls).
sed -i "s/^    \"Apache Beam & Docker.*\",\$/    \"Apache Beam \& Docker, fresh2 edit 1\",/" "$pipeline/demo_pipeline/main.py"
grep -q "Docker, fresh2 edit 1\"" "$pipeline/demo_pipeline/main.py" || die "the fresh2 code-only edit did not apply"
f2_ctx_b=$(gen_context fresh2-code fresh_contexts)
sed -i "1s|^FROM .*|FROM $f2_base|" "$f2_ctx_b/Dockerfile"
f2_wipe
f2_timed code anchor env DOCKER_BUILDKIT=0 docker build --network none --force-rm --no-cache \
  -t prebuilder-bench/fresh2-anchor:code "$f2_ctx_b"
# prebuilder on the empty engine: the dependency layer comes from the registry.
f2_wipe
f2_ours code-empty empty "$f2_ctx_b" "$f2_repo"
# The floor: prebuilder's local code-only rebuild on that engine (its
# dependency layer now local), plus a docker pull of the previous result
# onto the empty engine.
sed -i "s/^    \"Apache Beam & Docker.*\",\$/    \"Apache Beam \& Docker, fresh2 edit 2\",/" "$pipeline/demo_pipeline/main.py"
grep -q "Docker, fresh2 edit 2\"" "$pipeline/demo_pipeline/main.py" || die "the second fresh2 code-only edit did not apply"
f2_ctx_c=$(gen_context fresh2-code-local fresh_contexts)
f2_ours code-local empty "$f2_ctx_c" "$f2_repo"
f2_wipe
f2_timed pull-previous pull docker pull -q "$(jq -r '.fresh.runs["cold-main"].image' "$results")"
f2_wipe
f2_stop

kill "$reg_pid" 2>/dev/null || true

# ---------------------------------------------------------------------------
# Hashing throughput on a 1 GiB artifact (random bytes, so nothing compresses
# or dedups; just written, so it is read from the page cache: this times the
# hashing, not the disk).
big="$tmp/artifact-1GiB.bin"
say "writing 1 GiB of random bytes to $big"
head -c $((1 << 30)) /dev/urandom >"$big"
runs='[]'
for i in 1 2 3; do
  r=$("$bin" digest "$big" --format json)
  runs=$(jq --argjson r "$r" '. + [$r[0] | {size, seconds, mb_per_s: (.size / 1e6 / .seconds)}]' <<<"$runs")
done
put '["hashing"]' "$(jq '{runs: ., size: .[0].size, mb_per_s: (map(.mb_per_s) | sort | .[1])}' <<<"$runs")"
say "hashing: $(jq -r 'map(.mb_per_s | floor | tostring) | join(", ")' <<<"$runs") MB/s (median reported)"

# Peak memory while streaming 1 GiB: a real build whose application layer
# stages the 1 GiB file (hashed, then streamed as tar into the setup
# container); the dependency layer installs one requirement the base already
# has. --no-cache: both layers are built.
tiny="$tmp/tiny-requirements.txt"
grep '^numpy==' "$req" >"$tiny"
memlog="$logs/memory-ours.log"
t0=$(now)
status=0
/usr/bin/time -v -o "$tmp/time-v.txt" "$bin" build --base "$FIXTURE_BEAM_IMAGE" --network none \
  --no-cache --format json --progress json --repository "$mem_repo" \
  --requirements-file "$tiny" --files-to-stage "$big" >"$tmp/mem.json" 2> >(stamp "$t0" >"$memlog") &
pid=$!
pids+=("$pid")
# /usr/bin/time's child is prebuilder, which names its containers with its own
# pid and is the one to stop on Ctrl-C.
for _ in $(seq 50); do
  child=$(pgrep -P "$pid" || true)
  [ -z "$child" ] || { pids+=("$child"); break; }
  sleep 0.1
done
wait "$pid" || status=$?
t1=$(now)
record_images
[ "$status" -eq 0 ] || { sleep 0.2; tail -n 30 "$memlog" >&2; die "the 1 GiB build exited with status $status; log: $memlog"; }
rss_kib=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$tmp/time-v.txt")
put '["memory"]' "$(jq --argjson k "$rss_kib" --argjson s "$(elapsed "$t0" "$t1")" --arg log "$memlog" \
  --argjson staged "$(stat -c %s "$big")" \
  '{peak_rss_kib: $k, peak_rss_mb: ($k * 1024 / 1e6), staged_bytes: $staged, seconds: $s,
    layers, log: $log}' "$tmp/mem.json")"
say "1 GiB build: $(elapsed "$t0" "$t1") s, peak RSS $((rss_kib / 1024)) MiB"
rm -f "$big"

# ---------------------------------------------------------------------------
# Many staged files (issue 12: 50,000 files took 495 s, 148 s of upload and
# ~300 s of deleting them inside the container): a context of 50,000 small
# files plus the one requirement above (the base has it), --no-cache. The
# stamped log splits the time into stage+hash, upload, setup and layer.
many="$tmp/ctx-many"
many_n=50000
python3 - "$many" "$many_n" "$tiny" <<'PY'
import base64, hashlib, json, os, sys
out, n, req = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.makedirs(out)
def varint(x):
    b = bytearray()
    while True:
        c, x = x & 0x7F, x >> 7
        b.append(c | 0x80 if x else c)
        if not x:
            return bytes(b)
def entry(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
    p = b"".join(bytes([(k << 3) | 2]) + varint(len(v)) + v
                 for k, v in ((1, name.encode()), (2, hashlib.sha256(data).hexdigest().encode())))
    return json.dumps({"typeUrn": "beam:artifact:type:file:v1",
                       "typePayload": base64.b64encode(p).decode()})
entries = [entry("requirements.txt", open(req, "rb").read())]
entries += [entry("file%05d.txt" % i, b"staged file %d\n" % i) for i in range(n)]
with open(os.path.join(out, "artifacts_info.json"), "w") as f:
    json.dump(entries, f)
PY
manylog="$logs/many-ours.log"
t0=$(now)
status=0
"$bin" build --context "$many" --base "$FIXTURE_BEAM_IMAGE" --network none --no-cache \
  --format json --progress json --repository "$many_repo" >"$tmp/many.json" 2> >(stamp "$t0" >"$manylog") &
pid=$!
pids+=("$pid")
wait "$pid" || status=$?
t1=$(now)
record_images
[ "$status" -eq 0 ] || { sleep 0.2; tail -n 30 "$manylog" >&2; die "the $many_n-file build exited with status $status; log: $manylog"; }
labels_bytes=$(docker image inspect --format '{{json .Config.Labels}}' "$(jq -r .image "$tmp/many.json")" | wc -c)
put '["many_files"]' "$(jq --argjson n "$many_n" --argjson s "$(elapsed "$t0" "$t1")" --arg log "$manylog" \
  --argjson lb "$labels_bytes" '{files: $n, seconds: $s, labels_bytes: $lb, layers, log: $log}' "$tmp/many.json")"
say "$many_n files: $(elapsed "$t0" "$t1") s, labels $labels_bytes bytes"
rm -rf "$many"

# ---------------------------------------------------------------------------
put '["machine"]' "$(jq -n --arg cpu "$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)" \
  --argjson n "$(nproc)" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --arg docker "$(docker version --format '{{.Server.Version}}') $(docker info --format '{{.Driver}}')" \
  --arg bin "$bin" --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  '{cpu: $cpu, cores: $n, loadavg_at_end: $load, engine: $docker, binary: $bin, commit: $commit}')"
python3 bench/report.py "$results" "$json_out"
