#!/usr/bin/env bash
# What a Beam user gets from `pip install prebuilder-beam`, tested: the wheel
# (python/build-wheel.sh: package + binary) is installed with the fixture
# apache-beam into a FRESH venv, and the end-to-end pipeline test runs from
# that venv with no PREBUILDER_BIN, no PYTHONPATH and no `prebuilder` on PATH:
# the plugin must find the binary the wheel installed next to the interpreter.
#
#   python/run-installed-tests.sh [pytest args...]
#
# Offline but for one download: pytest's wheels, fetched from PyPI into the
# fixture cache the first time (the fixture venv's pip does it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache="${PREBUILDER_FIXTURE_CACHE:-/var/cache/prebuilder-fixtures}"
if [[ ! -f "$cache/fixtures.env" ]]; then
    echo "python-installed-test: $cache/fixtures.env is missing; run \`make fixtures\`" >&2
    exit 2
fi
# shellcheck disable=SC1091
source "$cache/fixtures.env"

test_wheels="$cache/python-tools/test-wheels"
if [[ ! -f "$test_wheels/.complete" ]]; then
    echo "python-installed-test: downloading pytest into $test_wheels (PyPI)" >&2
    mkdir -p "$test_wheels"
    "$FIXTURE_BEAM_VENV_PYTHON" -m pip download -q --disable-pip-version-check \
        -d "$test_wheels" pytest
    touch "$test_wheels/.complete"
fi

wheel=$(bash "$here/build-wheel.sh" | head -n 1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$FIXTURE_BEAM_VENV_PYTHON" -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check --no-index \
    --find-links "$FIXTURE_BEAM_WHEELS" --find-links "$test_wheels" \
    "apache-beam==$FIXTURE_BEAM_VERSION" pytest "$wheel"
echo "python-installed-test: $(basename "$wheel") in a fresh venv ($work/venv)" >&2

# The console script, not `python -m pytest`: that would put the checkout's
# python/ (and its prebuilder_beam) first on sys.path.
cd "$here"
status=0
env -u PREBUILDER_BIN -u PYTHONPATH -u VIRTUAL_ENV \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PREBUILDER_FIXTURE_CACHE="$cache" PREBUILDER_TEST_INSTALLED=1 \
    "$work/venv/bin/pytest" -p no:cacheprovider \
    tests/test_installed.py tests/test_end_to_end.py "$@" || status=$?
if [[ $status -eq 5 ]]; then
    echo "python-installed-test: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$status"
