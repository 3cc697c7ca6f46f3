#!/usr/bin/env bash
# `make demo`: prebuild the demo pipeline on the offline fixture base image and
# show that the image holds the pipeline's package and its requirements.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${PREBUILDER_FIXTURE_CACHE:-/var/cache/prebuilder-fixtures}"
# shellcheck disable=SC1091
source "$cache/fixtures.env"
bin=target/release/prebuilder
report=target/demo-report.json

echo "== prebuilder build (base: $FIXTURE_BEAM_IMAGE; no network during setup)" >&2
"$bin" build --base "$FIXTURE_BEAM_IMAGE" --network none --repository prebuilder-demo \
    --requirements-file demo/requirements.txt --requirements-cache "$FIXTURE_DEMO_WHEELS" \
    --setup-file demo/pipeline --report "$report"

image=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"])' "$report")
echo >&2
echo "== inside $image, with no network:" >&2
docker run --rm --network none --entrypoint python "$image" -c \
    'import demo_pipeline, slugify, tabulate; print("demo_pipeline, slugify and tabulate import; slugify says:", slugify.slugify("Prebuilt, once!"))'
echo >&2
echo "== run it again: nothing is rebuilt" >&2
"$bin" -q build --base "$FIXTURE_BEAM_IMAGE" --network none --repository prebuilder-demo \
    --requirements-file demo/requirements.txt --requirements-cache "$FIXTURE_DEMO_WHEELS" \
    --setup-file demo/pipeline
