"""Helpers for the plugin's tests: the docker CLI, ports, log capture, and a
Beam launch with --prebuild_sdk_container_engine=prebuilder."""

import contextlib
import logging
import os
import re
import shlex
import socket
import subprocess
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "plugin-%d" % os.getpid()
TEST_REPOSITORY = "prebuilder-test/" + RUN_ID
TEST_LABEL = "prebuilder-test=" + RUN_ID

# The plugin logs `running prebuilder (pid N): ...` before each build; setup
# containers are named `prebuilder-setup-<layer>-<key>-<pid>`.
_PID_LINE = re.compile(r"running prebuilder \(pid (\d+)\)")


def docker(*args, check=True, timeout=300):
    """Runs the docker CLI and returns the CompletedProcess (text)."""
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError("docker %s failed (%d): %s" % (
            shlex.join(args), result.returncode, result.stderr.strip()))
    return result


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout, alive=lambda: True, what="service"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", port), timeout=1):
            return
        if not alive():
            raise AssertionError("%s exited before listening on %d" % (what, port))
        time.sleep(0.2)
    raise AssertionError("%s did not listen on %d within %d s" % (what, port, timeout))


class LogCapture(logging.Handler):
    """Collects the plugin's log lines (the binary's progress among them)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    @property
    def text(self):
        return "\n".join(self.lines)


@contextlib.contextmanager
def captured_plugin_logs():
    capture = LogCapture()
    logger = logging.getLogger("prebuilder_beam")
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(capture)
    try:
        yield capture
    finally:
        logger.removeHandler(capture)
        logger.setLevel(previous)


class PidRecorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.pids = set()

    def emit(self, record):
        match = _PID_LINE.search(record.getMessage())
        if match:
            self.pids.add(match.group(1))


def pipeline_options(*args):
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(
        ["--prebuild_sdk_container_engine=prebuilder", *[str(a) for a in args]])


def build_image(*args):
    """What a Beam launch does with --prebuild_sdk_container_engine."""
    import prebuilder_beam  # noqa: F401  (registers the engine)
    from apache_beam.runners.portability.sdk_container_builder import (
        SdkContainerImageBuilder)

    return SdkContainerImageBuilder.build_container_image(pipeline_options(*args))


class Registry:
    """A `docker-registry serve` of this run, on 127.0.0.1 (plain HTTP)."""

    def __init__(self, root, auth):
        self.port = free_port()
        self.address = "127.0.0.1:%d" % self.port
        config = ["version: 0.1", "log:", "  level: warn", "storage:",
                  "  filesystem:", "    rootdirectory: %s" % (root / "data"),
                  "http:", "  addr: %s" % self.address]
        if auth:
            # A user the tests never log in as: every push is refused.
            htpasswd = root / "htpasswd"
            subprocess.run(["htpasswd", "-Bbc", str(htpasswd), "nobody", "secret"],
                           check=True, capture_output=True)
            config += ["auth:", "  htpasswd:", "    realm: prebuilder-test",
                       "    path: %s" % htpasswd]
        (root / "config.yml").write_text("\n".join(config) + "\n")
        self._log = open(root / "registry.log", "w")
        self._process = subprocess.Popen(
            ["docker-registry", "serve", str(root / "config.yml")],
            stdout=self._log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, 30, alive=lambda: self._process.poll() is None,
                      what="docker-registry")

    def stop(self):
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()
