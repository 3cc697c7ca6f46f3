#!/usr/bin/env bash
# Builds the prebuilder-beam wheel (the Python package plus the `prebuilder`
# binary, by maturin) into $CARGO_TARGET_DIR/wheels and prints its path.
#
#   python/build-wheel.sh [--sdist]
#
# maturin comes from PyPI into a venv under the fixture cache, once. The
# wheel reuses the cargo target dir and the dev profile, so it costs a zip of
# the debug binary, not a rebuild. --sdist also writes the source
# distribution and prints its path on a second line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cache="${PREBUILDER_FIXTURE_CACHE:-/var/cache/prebuilder-fixtures}"
MATURIN_VERSION=1.16.0
tools="$cache/python-tools"
maturin="$tools/maturin-venv/bin/maturin"
if [[ ! -x "$maturin" ]] || [[ "$("$maturin" --version)" != "maturin $MATURIN_VERSION" ]]; then
    echo "build-wheel: installing maturin $MATURIN_VERSION into $tools/maturin-venv (PyPI)" >&2
    rm -rf "$tools/maturin-venv"
    python3 -m venv "$tools/maturin-venv"
    "$tools/maturin-venv/bin/pip" install -q --disable-pip-version-check "maturin==$MATURIN_VERSION"
fi
target="${CARGO_TARGET_DIR:-$root/target}"
out="$target/wheels"
rm -f "$out"/prebuilder_beam-*
(cd "$here" && CARGO_TARGET_DIR="$target" "$maturin" build --quiet --locked --profile dev \
    -o "$out" >&2)
ls "$out"/prebuilder_beam-*.whl
if [[ "${1:-}" == "--sdist" ]]; then
    (cd "$here" && "$maturin" sdist -o "$out" >&2)
    ls "$out"/prebuilder_beam-*.tar.gz
fi
