"""Failures of the real binary on the real engine surface as PrebuilderError.

Each exception must carry the binary's own `error:`/`hint:` text and its exit
status, and its progress must have reached the user's log as it ran.
"""

import sys

import pytest

from apache_beam import version as beam_version

from prebuilder_beam import PrebuilderError

from support import RUN_ID, build_image, docker


def test_failing_setup_raises_with_pips_message(tmp_path, base_image, plugin_logs):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("prebuilder-test-no-such-package==1.0\n")
    with pytest.raises(PrebuilderError) as raised:
        # `skip`: Beam stages requirements.txt without downloading anything,
        # so the failure happens where it would on a worker: in the setup.
        build_image("--sdk_container_image", base_image,
                    "--requirements_file", requirements,
                    "--requirements_cache", "skip")
    error = raised.value
    message = str(error)
    assert error.status == 1
    assert message.startswith(
        "prebuilder exited with status 1 (the setup inside the container failed)")
    assert error.error.startswith("error: setup of layer \"dependencies\" failed")
    assert error.error in message
    assert "boot: failed to install requirements.txt" in message
    assert "\nhint: " in message
    # From the binary's error object: the hint on its own, after the error.
    assert error.hint and error.error.endswith("\nhint: " + error.hint)
    assert error.causes == []
    assert "--network none" in message  # the command, for reproducing it
    # Streamed while it ran: the setup's own output is in the log.
    assert "No matching distribution found for prebuilder-test-no-such-package" \
        in plugin_logs.text
    assert "dependencies: running /opt/apache/beam/boot" in plugin_logs.text


def test_absent_base_image_raises_with_hint(installed_requirement):
    absent = "prebuilder-test/%s-absent:1" % RUN_ID
    with pytest.raises(PrebuilderError) as raised:
        build_image("--sdk_container_image", absent, *installed_requirement)
    message = str(raised.value)
    assert raised.value.status == 2
    assert "exited with status 2 (bad input or usage" in message
    assert "error: base image %s is not on the engine" % absent in message
    # Not on the engine, so prebuilder pulled it (--pull missing), which fails offline.
    assert "and pulling it from docker.io failed" in message
    assert "\nhint: check the reference" in message


def test_default_base_is_beams_image_for_this_python_and_beam(installed_requirement):
    expected = "apache/beam_python%d.%d_sdk:%s" % (
        sys.version_info[0], sys.version_info[1], beam_version.__version__)
    if docker("image", "inspect", expected, check=False).returncode == 0:
        pytest.skip("%s is on this engine; the test needs it absent" % expected)
    with pytest.raises(PrebuilderError) as raised:
        build_image(*installed_requirement)
    command = raised.value.command
    assert command[command.index("--base") + 1] == expected
    assert "base image %s is not on the engine" % expected in str(raised.value)


def test_unavailable_engine_is_status_3_and_retryable(monkeypatch, tmp_path, base_image, installed_requirement):
    """A socket nobody listens on: connection refused, as when the engine is down."""
    import socket
    path = tmp_path / "engine.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.close()  # the file stays; connecting is refused
    monkeypatch.setenv("DOCKER_HOST", "unix://%s" % path)
    with pytest.raises(PrebuilderError) as raised:
        build_image("--sdk_container_image", base_image, *installed_requirement)
    error = raised.value
    assert error.status == 3
    assert error.retryable
    assert "exited with status 3 (the engine or a registry is unavailable" in str(error)
    assert "cannot reach the container engine at unix://%s" % path in error.error
    assert not PrebuilderError("x", status=2).retryable
