#!/usr/bin/env bash
# Runs the Beam plugin's tests (python/tests) with the real apache-beam of the
# fixture venv, the real prebuilder binary and the shared Docker Engine.
#
#   python/run-tests.sh [pytest args...]
#
# PREBUILDER_BIN names the binary to test (default: target/debug/prebuilder of
# this repository, or of $CARGO_TARGET_DIR, built when missing). The package is
# put on PYTHONPATH rather than installed, so the shared fixture venv is never
# modified; one test installs the wheel (python/build-wheel.sh) into a temp
# dir instead, and python/run-installed-tests.sh runs the end-to-end test
# from a fresh venv holding only the wheel and apache-beam.
# No network is used. pytest collecting no tests (status 5) is a failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cache="${PREBUILDER_FIXTURE_CACHE:-/var/cache/prebuilder-fixtures}"

if [[ ! -f "$cache/fixtures.env" ]]; then
    bash "$root/integration/fixtures/build.sh" >/dev/null
fi
# shellcheck disable=SC1091
source "$cache/fixtures.env"

if [[ -z "${PREBUILDER_BIN:-}" ]]; then
    PREBUILDER_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/prebuilder"
    if [[ ! -x "$PREBUILDER_BIN" ]]; then
        echo "python-test: building $PREBUILDER_BIN" >&2
        (cd "$root" && "${CARGO:-cargo}" build --locked --bin prebuilder)
    fi
fi
if [[ ! -x "$PREBUILDER_BIN" ]]; then
    echo "python-test: PREBUILDER_BIN=$PREBUILDER_BIN is not an executable file" >&2
    exit 2
fi
PREBUILDER_BIN=$(realpath "$PREBUILDER_BIN")
# The wheel a user installs (package + binary), for the test that installs it.
PREBUILDER_WHEEL=${PREBUILDER_WHEEL:-$(bash "$here/build-wheel.sh" | head -n 1)}
export PREBUILDER_BIN PREBUILDER_WHEEL PREBUILDER_FIXTURE_CACHE="$cache"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
echo "python-test: $("$FIXTURE_BEAM_VENV_PYTHON" --version), binary $PREBUILDER_BIN" >&2

cd "$here"
status=0
"$FIXTURE_BEAM_VENV_PYTHON" -m pytest -p no:cacheprovider "$@" || status=$?
if [[ $status -eq 5 ]]; then
    echo "python-test: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$status"
