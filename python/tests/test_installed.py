"""The package as `pip install prebuilder-beam` leaves it (run-installed-tests.sh).

These run only from the fresh venv that python/run-installed-tests.sh makes:
the wheel installed there with apache-beam, no PREBUILDER_BIN, no PYTHONPATH,
no `prebuilder` on PATH. test_end_to_end.py then runs in the same session.
"""

import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

import prebuilder_beam
from prebuilder_beam import _binary

pytestmark = pytest.mark.skipif(
    os.environ.get("PREBUILDER_TEST_INSTALLED") != "1",
    reason="only from the fresh venv of python/run-installed-tests.sh")


def test_nothing_but_the_wheel_provides_the_binary():
    assert "PREBUILDER_BIN" not in os.environ
    assert shutil.which("prebuilder") is None, "a prebuilder on PATH would hide the test"
    venv = sys.prefix
    assert prebuilder_beam.__file__.startswith(venv), prebuilder_beam.__file__
    binary = _binary.find_binary()
    assert binary == os.path.join(sysconfig.get_path("scripts"), "prebuilder")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             check=True).stdout
    assert version.startswith("prebuilder "), version


def test_prebuilder_bin_still_overrides(monkeypatch, tmp_path):
    other = tmp_path / "prebuilder"
    os.symlink(_binary.find_binary(), other)
    monkeypatch.setenv("PREBUILDER_BIN", str(other))
    assert _binary.find_binary() == str(other)
