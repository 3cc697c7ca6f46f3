"""templates/: the GitHub Actions workflow and the GitLab CI job, run.

Their shell steps (`run:` / `script:`) are taken from the YAML and run as the
CI systems run them, with the real binary, the real engine and a throwaway
registry, on a copy of the demo pipeline. The variables a CI system provides
(GITHUB_OUTPUT, CI_PROJECT_URL, ...) are set as it sets them; the template's
own variables are replaced only where they name this machine's base image,
registry and offline wheel cache. Steps that need the internet (installing
prebuilder, pulling the base, logging in) are skipped and named below; every
other shell step runs, and the outputs the next job reads are checked against
the registry and the engine.
"""

import json
import os
import re
import shutil
import subprocess
import urllib.request

import pytest
import yaml

from support import REPO_ROOT, TEST_REPOSITORY, docker

TEMPLATES = REPO_ROOT / "templates"

# Steps that reach the internet; the test provides what they would.
GITHUB_SKIPPED = {"Install prebuilder", "Load the base image"}
GITLAB_SKIPPED_SECTIONS = {"before_script"}


@pytest.fixture
def workspace(tmp_path, demo_setup_file, fixtures_env):
    """A checkout of a pipeline project: the demo pipeline and its requirements."""
    root = tmp_path / "checkout"
    shutil.copytree(demo_setup_file.parent, root)
    shutil.copy(REPO_ROOT / "demo" / "requirements.txt", root / "requirements.txt")
    return root


@pytest.fixture
def ci_path(tmp_path):
    """PATH with `prebuilder` on it, as `pip install prebuilder-beam` leaves it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(os.environ["PREBUILDER_BIN"], bin_dir / "prebuilder")
    return "%s:%s" % (bin_dir, os.environ["PATH"])


def offline_args(fixtures_env, template_args):
    """The template's PREBUILD_ARGS plus what this machine needs: no network."""
    assert "--requirements-file requirements.txt" in template_args
    return "%s --requirements-cache %s --network none" % (
        template_args, fixtures_env["FIXTURE_DEMO_WHEELS"])


def registry_digest(address, path, tag_or_digest):
    request = urllib.request.Request(
        "http://%s/v2/%s/manifests/%s" % (address, path, tag_or_digest), method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                           "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers["Docker-Content-Digest"]


def run_shell(script, env, cwd, shell=("bash", "--noprofile", "--norc", "-eo", "pipefail", "-c")):
    result = subprocess.run([*shell, script], env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, "step failed (%d):\n%s\n--- stdout\n%s\n--- stderr\n%s" % (
        result.returncode, script, result.stdout[-3000:], result.stderr[-3000:])
    return result


def read_outputs(path):
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


def test_github_actions_workflow_steps(start_registry, base_image, fixtures_env,
                                       workspace, ci_path, tmp_path):
    workflow = yaml.safe_load((TEMPLATES / "github-actions.yml").read_text())
    job = workflow["jobs"]["prebuild"]
    assert job["outputs"]["sdk-container-image"] == \
        "${{ steps.prebuild.outputs.sdk-container-image }}"
    registry = start_registry()
    repository = "%s/%s" % (registry.address, TEST_REPOSITORY)
    github_output = tmp_path / "github_output"
    summary = tmp_path / "step_summary"
    github_output.touch()
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir()
    (docker_config / "config.json").write_text("{}")
    env = dict(os.environ, PATH=ci_path, DOCKER_CONFIG=str(docker_config),
               GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(github_output),
               GITHUB_STEP_SUMMARY=str(summary), GITHUB_WORKSPACE=str(workspace),
               GITHUB_SERVER_URL="https://github.com", GITHUB_REPOSITORY="example/pipeline",
               GITHUB_SHA="0123456789abcdef0123456789abcdef01234567")
    env.update({k: str(v) for k, v in workflow["env"].items()})
    env.update(BASE_IMAGE=base_image, REPOSITORY=repository,
               PREBUILD_ARGS=offline_args(fixtures_env, workflow["env"]["PREBUILD_ARGS"]))

    ran = []
    outputs = {}
    for step in job["steps"]:
        if "run" not in step:
            continue
        if step["name"] in GITHUB_SKIPPED:
            continue
        script = re.sub(
            r"\$\{\{\s*steps\.prebuild\.outputs\.([\w-]+)\s*\}\}",
            lambda m: outputs[m.group(1)], step["run"])
        assert "${{" not in script, "only step outputs may be expressions: %s" % script
        run_shell(script, env, workspace)
        ran.append(step.get("id") or step["name"])
        if step.get("id") == "prebuild":
            outputs = read_outputs(github_output)
    assert ran == ["prebuild", "Summary"], ran

    path = TEST_REPOSITORY
    image, digest = outputs["image"], outputs["digest"]
    assert image.startswith(repository + ":"), outputs
    assert digest == registry_digest(registry.address, path, image.rsplit(":", 1)[1])
    assert outputs["sdk-container-image"] == "%s@%s" % (repository, digest)
    metadata = json.loads((workspace / "prebuild-metadata.json").read_text())
    assert metadata["containerimage.digest"] == digest
    image_id = docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
    assert metadata["containerimage.config.digest"] == image_id
    assert (workspace / "prebuild.iid").read_text() == image_id
    assert "--sdk_container_image=%s@%s" % (repository, digest) in summary.read_text()
    source = docker("image", "inspect", "--format",
                    '{{index .Config.Labels "org.opencontainers.image.source"}}', image)
    assert source.stdout.strip() == "https://github.com/example/pipeline"


def test_gitlab_ci_job_script(start_registry, base_image, fixtures_env, workspace,
                              ci_path, tmp_path):
    pipeline = yaml.safe_load((TEMPLATES / "gitlab-ci.yml").read_text())
    job = pipeline["prebuild-sdk-image"]
    assert job["retry"]["exit_codes"] == [3], "retry only when unavailable"
    assert job["artifacts"]["reports"]["dotenv"] == "prebuild.env"
    assert GITLAB_SKIPPED_SECTIONS <= set(job), "the skipped section exists"
    registry = start_registry()
    repository = "%s/%s" % (registry.address, TEST_REPOSITORY)
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir()
    (docker_config / "config.json").write_text("{}")
    env = dict(os.environ, PATH=ci_path, DOCKER_CONFIG=str(docker_config), GITLAB_CI="true",
               CI_PROJECT_URL="https://gitlab.example.com/group/pipeline",
               CI_COMMIT_SHA="89abcdef0123456789abcdef0123456789abcdef",
               CI_REGISTRY_IMAGE="%s/group/pipeline" % registry.address)
    variables = {k: str(v) for k, v in job["variables"].items()}
    # The dind service's engine is this machine's engine here.
    for name in ("DOCKER_HOST", "DOCKER_TLS_CERTDIR"):
        variables.pop(name)
    env.update(variables)
    env.update(BASE_IMAGE=base_image, REPOSITORY=repository,
               PREBUILD_ARGS=offline_args(fixtures_env, variables["PREBUILD_ARGS"]))
    env.pop("GITHUB_ACTIONS", None)

    # GitLab runs the script's lines in one shell and stops at the first failure.
    script = "\n".join(job["script"])
    result = run_shell(script, env, workspace)

    reference = (workspace / "sdk_container_image.txt").read_text().strip()
    assert re.fullmatch(re.escape(repository) + r"@sha256:[0-9a-f]{64}", reference), reference
    digest = reference.split("@", 1)[1]
    metadata = json.loads((workspace / "prebuild-metadata.json").read_text())
    assert metadata["containerimage.digest"] == digest
    image = metadata["image.name"].split(",")[0]
    assert registry_digest(registry.address, TEST_REPOSITORY, image.rsplit(":", 1)[1]) == digest
    assert (workspace / "prebuild.env").read_text() == "SDK_CONTAINER_IMAGE=%s\n" % reference
    image_id = (workspace / "prebuild.iid").read_text()
    assert "prebuilt %s (image id %s)" % (reference, image_id) in result.stdout
    labels = json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}",
                               image).stdout)
    assert labels["org.opencontainers.image.source"] == env["CI_PROJECT_URL"]
    assert labels["org.opencontainers.image.revision"] == env["CI_COMMIT_SHA"]
