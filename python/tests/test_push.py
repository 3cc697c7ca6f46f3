"""--docker_registry_push_url: the plugin pushes through the binary.

Each test starts its own `docker-registry` on 127.0.0.1 (plain HTTP, which the
engine allows for loopback registries).
"""

import subprocess

import pytest

from prebuilder_beam import PrebuilderError

from support import TEST_REPOSITORY, build_image

def test_refused_push_raises_with_the_binarys_error(
        start_registry, base_image, installed_requirement):
    registry = start_registry(auth=True)  # and the tests never log in
    with pytest.raises(PrebuilderError) as raised:
        build_image("--sdk_container_image", base_image, *installed_requirement,
                    "--docker_registry_push_url", registry.address)
    error = raised.value
    command = error.command
    assert "--push" in command
    assert command[command.index("--repository") + 1] == \
        "%s/%s" % (registry.address, TEST_REPOSITORY)
    assert error.status == 2
    assert error.error.startswith("error: ")
    assert error.error in str(error)
    assert "\nhint: " in error.error
    # The registry refused (401: no credentials): the error names it and says
    # how to log in.
    assert registry.address in error.error
    assert "docker login %s" % registry.address in error.error


def test_push_returns_the_digest_pinned_reference(
        start_registry, base_image, installed_requirement):
    registry = start_registry()
    args = ("--sdk_container_image", base_image, *installed_requirement,
            "--docker_registry_push_url", registry.address)
    reference = build_image(*args)
    repository = "%s/%s" % (registry.address, TEST_REPOSITORY)
    name, _, digest = reference.partition("@")
    assert name == repository
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    # The registry serves exactly that manifest.
    inspected = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}",
         "docker://" + reference], capture_output=True, text=True, check=True)
    assert inspected.stdout.strip() == digest
    # An unchanged relaunch builds nothing and names the same pushed image.
    assert build_image(*args) == reference


def test_with_no_docker_the_plugin_builds_directly_and_says_so(
        start_registry, base_image, installed_requirement, plugin_logs,
        monkeypatch, tmp_path):
    # A machine with no Docker: the base is read from a registry, the result
    # pushed to the loopback one by prebuilder's own client (direct mode).
    registry = start_registry()
    base = "%s/fixture/beam-base:direct" % registry.address
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
         "docker-daemon:%s" % base_image, "docker://" + base],
        check=True, capture_output=True)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/prebuilder-test.sock")
    monkeypatch.setenv("PREBUILDER_STATE_DIR", str(tmp_path / "state"))
    reference = build_image("--sdk_container_image", base, *installed_requirement,
                            "--docker_registry_push_url", registry.address)
    repository = "%s/%s" % (registry.address, TEST_REPOSITORY)
    name, _, digest = reference.partition("@")
    assert name == repository
    assert digest.startswith("sha256:")
    # It said which mode it used: no engine answered, so the direct builder.
    assert "by the direct builder (no container)" in plugin_logs.text, plugin_logs.text
    inspected = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}",
         "docker://" + reference], capture_output=True, text=True, check=True)
    assert inspected.stdout.strip() == digest
