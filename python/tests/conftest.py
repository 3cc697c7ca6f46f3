"""Shared fixtures for the plugin's tests.

Everything here is real: apache-beam 2.77.0 from the fixture venv (the tests
run in it), the prebuilder binary from $PREBUILDER_BIN, the offline fixture
images on the shared Docker Engine (integration/fixtures), and a throwaway
`docker-registry` for the push tests. `python/run-tests.sh` sets that up.

The engine is shared with other people's runs, so every image a test creates
is tagged in a repository of this run (`prebuilder-test/plugin-<pid>`, or the
same under a test registry's address) and every container is labelled
`prebuilder-test=plugin-<pid>`; all of them are removed at the end, and the
run fails if a setup container of one of its prebuilder processes is left.
"""

import logging
import os
import shlex
import shutil
import tempfile
from pathlib import Path

import pytest

from support import (REPO_ROOT, TEST_LABEL, TEST_REPOSITORY, Registry,
                     PidRecorder, captured_plugin_logs, docker)


@pytest.fixture(scope="session")
def fixtures_env():
    """fixtures.env of integration/fixtures/build.sh, as a dict."""
    cache = os.environ.get("PREBUILDER_FIXTURE_CACHE", "/var/cache/prebuilder-fixtures")
    path = Path(cache) / "fixtures.env"
    if not path.is_file():
        pytest.fail("%s is missing: run `make fixtures` (python/run-tests.sh does)" % path)
    values = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            parts = shlex.split(value)
            values[key] = parts[0] if parts else ""
    return values


@pytest.fixture(scope="session")
def base_image(fixtures_env):
    return fixtures_env["FIXTURE_BEAM_IMAGE"]


@pytest.fixture(scope="session")
def repositories_to_sweep():
    """Repositories whose images this run removes at the end (tests add to it)."""
    return {TEST_REPOSITORY}


@pytest.fixture(scope="session", autouse=True)
def plugin_environment(repositories_to_sweep):
    """The environment every test launches Beam in; cleanup at the end."""
    binary = os.environ.get("PREBUILDER_BIN")
    installed = os.environ.get("PREBUILDER_TEST_INSTALLED") == "1"
    if not installed and (not binary or not os.access(binary, os.X_OK)):
        pytest.fail("PREBUILDER_BIN must name the prebuilder binary (python/run-tests.sh sets it)")
    if installed and binary:
        pytest.fail("PREBUILDER_BIN is set: the installed-wheel run must find the binary itself")
    recorder = PidRecorder()
    logging.getLogger("prebuilder_beam").addHandler(recorder)
    with pytest.MonkeyPatch.context() as mp:
        # Beam's Stager resolves requirements from --requirements_cache only,
        # whatever this machine's pip configuration says (it sets
        # PIP_FIND_LINKS); as integration/fixtures/beam_context.py does.
        mp.setenv("PIP_NO_INDEX", "1")
        mp.delenv("PIP_FIND_LINKS", raising=False)
        mp.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        # The fixture images reach no network: pip fails fast on a missing
        # requirement instead of retrying an index.
        mp.setenv("PREBUILDER_ARGS", "--network none")
        mp.setenv("PREBUILDER_REPOSITORY", TEST_REPOSITORY)
        yield
    logging.getLogger("prebuilder_beam").removeHandler(recorder)

    leftovers = [
        name for name in docker(
            "ps", "-a", "--filter", "label=prebuilder",
            "--format", "{{.Names}}").stdout.split()
        if any(name.endswith("-" + pid) for pid in recorder.pids)]
    for container in docker("ps", "-aq", "--filter", "label=" + TEST_LABEL).stdout.split():
        docker("rm", "-f", container, check=False)
    for repository in sorted(repositories_to_sweep):
        tags = docker("images", "--filter", "reference=" + repository,
                      "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        for tag in tags:
            docker("rmi", tag, check=False)
    assert not leftovers, "prebuilder left setup containers: %s" % leftovers


@pytest.fixture
def plugin_logs():
    with captured_plugin_logs() as capture:
        yield capture


@pytest.fixture(scope="session")
def demo_setup_file(tmp_path_factory):
    """setup.py of a copy of demo/pipeline (Beam writes egg-info next to it)."""
    target = tmp_path_factory.mktemp("demo") / "pipeline"
    shutil.copytree(
        REPO_ROOT / "demo" / "pipeline", target,
        ignore=shutil.ignore_patterns("*.egg-info", "build", "dist", "__pycache__"))
    return target / "setup.py"


@pytest.fixture
def installed_requirement(tmp_path, fixtures_env):
    """A requirements file the base image already satisfies.

    The cheapest input that makes the binary build a layer: the setup's pip
    finds everything installed and needs neither wheels nor an index.
    """
    path = tmp_path / "requirements.txt"
    path.write_text("apache-beam==%s\n" % fixtures_env["FIXTURE_BEAM_VERSION"])
    return ("--requirements_file", path, "--requirements_cache", "skip")


@pytest.fixture
def start_registry(tmp_path, repositories_to_sweep):
    """Starts registries for one test; images tagged for them are swept."""
    if not shutil.which("docker-registry"):
        pytest.skip("Debian's docker-registry is not installed")
    started = []

    def start(auth=False):
        root = Path(tempfile.mkdtemp(prefix="registry-", dir=tmp_path))
        registry = Registry(root, auth)
        started.append(registry)
        repositories_to_sweep.add("%s/%s" % (registry.address, TEST_REPOSITORY))
        return registry

    yield start
    for registry in started:
        registry.stop()
