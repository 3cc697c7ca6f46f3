"""End to end: a real pipeline runs its DoFns in the image the plugin built.

The demo pipeline (demo/pipeline) is launched as a user would with
--prebuild_sdk_container_engine=prebuilder: Beam's Stager stages
demo/requirements.txt from the offline wheel cache and the project's sdist,
and the plugin has the binary bake them into the fixture Beam image. Beam's
worker pool then runs inside that image and the pipeline is submitted with the
EXTERNAL environment. Its DoFn imports `slugify` (and its last step
`tabulate`), which the launching venv does not have, and it writes its output
inside the container: the output proves the DoFns ran in the prebuilt image.
A second launch with unchanged inputs (and Beam's freshly regenerated sdist),
made the way a runner makes it (DockerEnvironment.from_options), must build
nothing and give the pipeline the same image.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

from apache_beam.options.pipeline_options import PortableOptions
from apache_beam.transforms.environments import DockerEnvironment

from prebuilder_beam import _binary

from support import (REPO_ROOT, RUN_ID, TEST_LABEL, TEST_REPOSITORY,
                     build_image, captured_plugin_logs, docker, free_port,
                     pipeline_options, wait_for_port)

# What demo_pipeline.main writes for its four titles.
EXPECTED_TABLE = """\
title                                             slug
------------------------------------------------  -----------------------------------------------
Apache Beam & Docker                              apache-beam-docker
Hello, Wörld!                                     hello-world
Prebuilt SDK containers: no more pip at start-up  prebuilt-sdk-containers-no-more-pip-at-start-up
Ünïcödé → ASCII                                   unicode-ascii
"""


class Launch:
    def __init__(self, reference, report, log):
        self.reference = reference
        self.report = report
        self.log = log


@pytest.fixture(scope="module")
def demo_launches(fixtures_env, demo_setup_file):
    """Two launches of the demo with the same inputs, built once per run."""
    args = ["--sdk_container_image", fixtures_env["FIXTURE_BEAM_IMAGE"],
            "--requirements_file", REPO_ROOT / "demo" / "requirements.txt",
            "--requirements_cache", fixtures_env["FIXTURE_DEMO_WHEELS"],
            "--setup_file", demo_setup_file]
    launches = []
    real_run_build = _binary.run_build
    reports = []

    def recording_run_build(command, environ=None):
        reports.append(real_run_build(command, environ))
        return reports[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_binary, "run_build", recording_run_build)
        # The shared engine may already hold a layer with the same key (the
        # dependencies layer of `make demo`, say): --no-cache makes the first
        # launch build both layers whatever ran before.
        plain = os.environ[_binary.ARGS_ENV]
        mp.setenv(_binary.ARGS_ENV, plain + " --no-cache")
        with captured_plugin_logs() as log:
            reference = build_image(*args)
        launches.append(Launch(reference, reports[-1], log.text))

        # The relaunch takes the path of a real launch: a runner building the
        # pipeline's Docker environment, which calls the engine.
        mp.setenv(_binary.ARGS_ENV, plain)
        with captured_plugin_logs() as log:
            environment = DockerEnvironment.from_options(
                pipeline_options(*args).view_as(PortableOptions))
        launches.append(Launch(environment.container_image, reports[-1], log.text))
    return launches


@pytest.fixture(scope="module")
def worker_pool(demo_launches):
    """Beam's worker pool, started inside the prebuilt image (host network)."""
    port = free_port()
    name = "prebuilder-test-%s-workers" % RUN_ID
    docker("run", "-d", "--name", name, "--label", TEST_LABEL, "--network", "host",
           "--entrypoint", "python", demo_launches[0].reference,
           "-m", "apache_beam.runners.worker.worker_pool_main",
           "--service_port=%d" % port)
    try:
        wait_for_port(
            port, 60, what="the worker pool in %s" % demo_launches[0].reference,
            alive=lambda: docker("inspect", "-f", "{{.State.Running}}", name)
            .stdout.strip() == "true")
        yield name, port
    finally:
        print("== worker pool logs (%s)" % name)
        logs = docker("logs", "--tail", "60", name, check=False)
        print(logs.stdout + logs.stderr)
        docker("rm", "-f", name, check=False)


def test_first_launch_builds_through_the_binary(demo_launches):
    first = demo_launches[0]
    assert first.report["cached"] is False
    assert first.reference == first.report["sdk_container_image"]
    assert first.reference == first.report["image"]
    assert first.reference.startswith(TEST_REPOSITORY + ":")
    assert first.report["digest"] is None
    assert [layer["name"] for layer in first.report["layers"]] == \
        ["dependencies", "application"]
    # The binary's progress reached the user's log while it ran.
    assert "prebuilder: dependencies: building" in first.log
    assert "boot: installing requirements from requirements.txt" in first.log
    assert "prebuilder: %s built" % first.reference in first.log


def test_unchanged_relaunch_reuses_the_image(demo_launches):
    first, second = demo_launches
    assert second.reference == first.reference
    assert second.report["cached"] is True
    assert {layer["cache"] for layer in second.report["layers"]} == {"hit"}
    assert second.report["image_id"] == first.report["image_id"]
    assert "reused (nothing built)" in second.log


def test_launch_venv_lacks_the_dofns_dependencies():
    """Otherwise the pipeline below would prove nothing about the image."""
    for module in ("slugify", "tabulate", "demo_pipeline"):
        assert importlib.util.find_spec(module) is None, module


def test_pipeline_runs_in_the_prebuilt_image(worker_pool, demo_setup_file, tmp_path):
    container, port = worker_pool
    output = "/tmp/prebuilder-test-slugs.txt"  # inside the worker container
    env = dict(os.environ, PYTHONPATH=str(demo_setup_file.parent))
    run = subprocess.run(
        [sys.executable, "-m", "demo_pipeline.main", "--output", output,
         "--runner=PortableRunner", "--job_endpoint=embed",
         "--environment_type=EXTERNAL", "--environment_config=localhost:%d" % port],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    docker("cp", "%s:%s" % (container, output), str(tmp_path / "slugs.txt"))
    assert (tmp_path / "slugs.txt").read_text(encoding="utf-8") == EXPECTED_TABLE
