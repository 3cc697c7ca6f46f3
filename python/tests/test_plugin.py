"""The plugin without the engine: registration, configuration, error paths.

These use the real apache-beam (its builder lookup, its Stager, its own
local_docker builder as the reference for image names) and the real binary
or small stand-ins for it where a broken binary is the point.
"""

import logging
import os
import subprocess
import sys
import textwrap
import zipfile

import pytest

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability import sdk_container_builder
from apache_beam.runners.portability.sdk_container_builder import (
    SdkContainerImageBuilder)

import prebuilder_beam
from prebuilder_beam import PrebuilderError, _binary
from prebuilder_beam.builder import _warn_on_version_mismatch

from support import REPO_ROOT, build_image


def test_import_registers_the_prebuilder_engine():
    assert (SdkContainerImageBuilder._get_subclass_by_key("prebuilder")
            is prebuilder_beam.PrebuilderSdkContainerImageBuilder)


def test_installed_wheel_registers_the_engine_on_import(tmp_path):
    """`import prebuilder_beam` is all a launch script needs, once installed.

    The wheel is the one maturin built (python/build-wheel.sh, run by
    run-tests.sh): the package and, as a script, the binary.
    """
    wheels = [os.environ["PREBUILDER_WHEEL"]]
    assert os.path.basename(wheels[0]).startswith("prebuilder_beam-"), wheels
    with zipfile.ZipFile(wheels[0]) as wheel:
        assert "prebuilder_beam-0.1.0.data/scripts/prebuilder" in wheel.namelist()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--target", str(tmp_path / "site"), str(wheels[0])], check=True)
    check = textwrap.dedent("""
        import prebuilder_beam
        from apache_beam.runners.portability.sdk_container_builder import (
            SdkContainerImageBuilder)
        cls = SdkContainerImageBuilder._get_subclass_by_key("prebuilder")
        print(cls.__module__, prebuilder_beam.__file__)
    """)
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    out = subprocess.run([sys.executable, "-c", check], env=env, check=True,
                         capture_output=True, text=True, cwd=tmp_path).stdout
    module, path = out.split()
    assert module == "prebuilder_beam.builder"
    assert path.startswith(str(tmp_path / "site")), path


def beams_own_image_name(push_url):
    """The name Beam's local_docker builder gives its image, tag removed."""
    args = ["--docker_registry_push_url", push_url] if push_url else []
    builder = sdk_container_builder._SdkContainerImageLocalBuilder(
        PipelineOptions(args))
    builder._prepare_dependencies = lambda: None
    builder._invoke_docker_build_and_push = lambda name: None
    return builder._build().rsplit(":", 1)[0]


@pytest.mark.parametrize("push_url", [None, "localhost:5000", "registry.example/team/"])
def test_repository_is_named_as_beam_names_it(monkeypatch, push_url):
    monkeypatch.delenv("PREBUILDER_REPOSITORY")
    assert _binary.repository_for(push_url) == beams_own_image_name(push_url)


def test_prebuilder_repository_replaces_the_image_name(monkeypatch):
    monkeypatch.setenv("PREBUILDER_REPOSITORY", "team/beam")
    assert _binary.repository_for("localhost:5000") == "localhost:5000/team/beam"
    assert _binary.repository_for(None) == "team/beam"


def test_push_url_adds_push_to_the_command():
    command = _binary.build_command(
        "/bin/prebuilder", "base:1", "/ctx", "localhost:5000/r", push=True,
        extra=["--network", "none"])
    assert command == [
        "/bin/prebuilder", "build", "--base", "base:1", "--context", "/ctx",
        "--repository", "localhost:5000/r", "--format", "json",
        "--progress", "json", "--push", "--network", "none"]
    assert "--push" not in _binary.build_command(
        "/bin/prebuilder", "base:1", "/ctx", "r", push=False)


def test_direct_args_let_a_push_build_with_no_engine():
    args = _binary.direct_args(["-v"], push=True)
    assert args[:3] == ["-v", "--builder", "auto"]
    assert args[3:] == ["--launch-python", sys.executable]
    # The user's PREBUILDER_ARGS choose otherwise.
    mine = _binary.direct_args(["--builder", "engine", "--launch-python=/p"], push=True)
    assert mine == ["--builder", "engine", "--launch-python=/p"]
    # Without a push URL the result stays on the engine: no fallback.
    assert "--builder" not in _binary.direct_args([], push=False)


def test_the_outcome_says_the_direct_builder_made_it():
    report = {"sdk_container_image": "r@sha256:1", "cached": False,
              "digest": "sha256:1", "seconds": 1.0, "builder": "direct",
              "layers": [{"name": "application", "cache": "miss"}]}
    assert "by the direct builder (no container)" in _binary.describe_outcome(report)
    report["builder"] = "engine"
    assert "direct" not in _binary.describe_outcome(report)


def test_missing_binary_raises_before_staging(monkeypatch, tmp_path):
    monkeypatch.delenv("PREBUILDER_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    # A requirements file that does not exist: had Beam staged first, its
    # Stager would have failed on it instead.
    with pytest.raises(PrebuilderError) as raised:
        build_image("--requirements_file", tmp_path / "absent.txt")
    message = str(raised.value)
    assert "prebuilder binary was not found" in message
    assert "PREBUILDER_BIN" in message and "PATH" in message
    assert "hint:" in message
    assert raised.value.status is None


def test_prebuilder_bin_that_is_not_executable_is_named(monkeypatch, tmp_path):
    not_a_binary = tmp_path / "prebuilder"
    not_a_binary.write_text("")
    monkeypatch.setenv("PREBUILDER_BIN", str(not_a_binary))
    with pytest.raises(PrebuilderError, match="is not an executable file") as raised:
        build_image()
    assert str(not_a_binary) in str(raised.value)


def test_binary_is_found_on_path(monkeypatch, tmp_path):
    os.symlink(os.environ["PREBUILDER_BIN"], tmp_path / "prebuilder")
    assert _binary.find_binary({"PATH": str(tmp_path)}) == str(tmp_path / "prebuilder")


@pytest.mark.parametrize("args", ["--push", "--repository x", "--base=x:1", "--format text",
                                  "--progress plain"])
def test_prebuilder_args_cannot_replace_the_plugins_own_flags(monkeypatch, args):
    monkeypatch.setenv("PREBUILDER_ARGS", args)
    with pytest.raises(PrebuilderError, match="PREBUILDER_ARGS must not set"):
        build_image()


@pytest.mark.parametrize("stage_a_file", [False, True])
def test_nothing_to_install_uses_the_base_image(base_image, plugin_logs, tmp_path, stage_a_file):
    args = ["--sdk_container_image", base_image]
    if stage_a_file:  # staged for the workers, but not installed by the boot
        (tmp_path / "notes.txt").write_text("not a package\n")
        args += ["--files_to_stage", tmp_path / "notes.txt"]
    assert build_image(*args) == base_image
    assert "stages nothing to install" in plugin_logs.text
    assert "running prebuilder" not in plugin_logs.text


def fake_binary(tmp_path, script):
    path = tmp_path / "fake-prebuilder"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def test_success_without_a_report_is_an_error(monkeypatch, tmp_path, installed_requirement, base_image):
    binary = fake_binary(tmp_path, "echo 'prebuilder: done' >&2\necho 'not json'\n")
    monkeypatch.setenv("PREBUILDER_BIN", str(binary))
    with pytest.raises(PrebuilderError, match="printed no JSON report") as raised:
        build_image("--sdk_container_image", base_image, *installed_requirement)
    assert "not json" in str(raised.value)


def test_killed_binary_shows_its_last_lines(monkeypatch, tmp_path, installed_requirement, base_image):
    binary = fake_binary(tmp_path, "echo 'prebuilder: working' >&2\nkill -9 $$\n")
    monkeypatch.setenv("PREBUILDER_BIN", str(binary))
    with pytest.raises(PrebuilderError) as raised:
        build_image("--sdk_container_image", base_image, *installed_requirement)
    message = str(raised.value)
    assert message.startswith("prebuilder was killed by SIGKILL")
    assert "prebuilder: working" in message
    assert raised.value.status == -9


def test_interrupted_launch_interrupts_the_binary(monkeypatch, tmp_path, installed_requirement, base_image):
    """Ctrl-C in the launcher reaches the binary, which then removes its container.

    The stand-in is a Python script, not a shell script: it installs its
    SIGINT handler the way the real binary does (tokio's ctrl_c sets one with
    sigaction), which replaces an inherited SIG_IGN. A `trap ... INT` in sh
    cannot: a non-interactive shell may not trap a signal ignored on entry,
    and SIGINT is ignored for every job a non-interactive shell starts in the
    background (`make test &`, CI runners), so the old stand-in ignored the
    plugin's SIGINT there, was killed after the 30 s grace, and left no marker.
    """
    marker = tmp_path / "got-sigint"
    binary = tmp_path / "fake-prebuilder"
    binary.write_text("#!%s\n" % sys.executable + textwrap.dedent("""\
        import signal, sys, time
        def interrupted(*_):
            with open(%r, "w") as f:
                f.write("interrupted\\n")
            sys.exit(130)
        signal.signal(signal.SIGINT, interrupted)
        print('{"v":1,"event":"layer_building","layer":"dependencies","artifacts":1,'
              '"text":"dependencies: building (1 artifact(s))"}', file=sys.stderr, flush=True)
        time.sleep(60)
        """ % str(marker)))
    binary.chmod(0o755)
    monkeypatch.setenv("PREBUILDER_BIN", str(binary))

    class CtrlC(logging.Handler):
        def emit(self, record):
            if "dependencies: building" in record.getMessage():
                raise KeyboardInterrupt

    handler = CtrlC()
    logging.getLogger("prebuilder_beam").addHandler(handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            build_image("--sdk_container_image", base_image, *installed_requirement)
    finally:
        logging.getLogger("prebuilder_beam").removeHandler(handler)
    assert marker.read_text() == "interrupted\n"


def test_push_without_a_digest_is_an_error(monkeypatch, tmp_path, installed_requirement, base_image):
    report = '{"sdk_container_image": "localhost:5000/r:abc", "cached": false}'
    binary = fake_binary(tmp_path, "echo '%s'\n" % report)
    monkeypatch.setenv("PREBUILDER_BIN", str(binary))
    with pytest.raises(PrebuilderError, match="not pinned to a digest"):
        build_image("--sdk_container_image", base_image, *installed_requirement,
                    "--docker_registry_push_url", "localhost:5000")


def test_base_for_other_versions_is_warned_about(caplog):
    caplog.set_level(logging.WARNING, logger="prebuilder_beam")
    _warn_on_version_mismatch("apache/beam_python3.9_sdk:2.50.0")
    assert "workers need the same versions" in caplog.text
    caplog.clear()
    from apache_beam import version

    _warn_on_version_mismatch("apache/beam_python%d.%d_sdk:%s" % (
        sys.version_info[0], sys.version_info[1], version.__version__))
    _warn_on_version_mismatch("my-gpu-image:1")
    assert caplog.text == ""


@pytest.mark.parametrize("args,local", [
    ([], True),
    (["--runner=DirectRunner"], True),
    (["--runner=PrismRunner"], True),
    (["--runner=PortableRunner", "--job_endpoint=embed"], True),
    (["--runner=PortableRunner", "--job_endpoint=localhost:8099"], True),
    (["--runner=FlinkRunner", "--flink_master=[local]"], True),
    (["--runner=DataflowRunner"], False),
    (["--runner=apache_beam.runners.dataflow.dataflow_runner.DataflowRunner"], False),
    (["--runner=PortableRunner", "--job_endpoint=jobs.example.com:8099"], False),
    (["--runner=FlinkRunner", "--flink_master=flink.example.com:8081"], False),
])
def test_which_runners_start_workers_on_this_machine(args, local):
    from apache_beam.options.pipeline_options import PipelineOptions
    from prebuilder_beam.builder import _runs_locally
    assert _runs_locally(PipelineOptions(args)) is local


def test_remote_runner_without_a_push_url_warns(caplog, base_image, installed_requirement):
    with caplog.at_level(logging.INFO, logger="prebuilder_beam"):
        build_image("--runner=DataflowRunner", "--sdk_container_image", base_image,
                    *installed_requirement)
    warnings = [r for r in caplog.records
                if r.name.startswith("prebuilder_beam") and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "no --docker_registry_push_url" in message
    assert "DataflowRunner" in message and "--docker_registry_push_url to a registry" in message
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="prebuilder_beam"):
        build_image("--sdk_container_image", base_image, *installed_requirement)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and r.name.startswith("prebuilder_beam")]


def test_progress_shows_with_pythons_default_logging(base_image, installed_requirement, tmp_path):
    """A launch that never configures logging still shows the build, as local_docker does."""
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, %r)
        from support import build_image
        print(build_image(*sys.argv[1:]))
    """ % os.path.dirname(__file__))
    args = ["--sdk_container_image", base_image, *map(str, installed_requirement)]
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                         text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "running prebuilder (pid" in out.stderr, out.stderr
    assert "prebuilder: dependencies:" in out.stderr, out.stderr
    assert out.stderr.count("running prebuilder (pid") == 1, "each line once"
    assert out.stdout.strip().startswith("prebuilder-test/"), out.stdout


def test_the_binary_is_told_which_file_each_copy_came_from(monkeypatch, tmp_path, base_image):
    """Issue 22: Beam copies every artifact into a fresh context on each
    launch; the plugin names the originals (`--origins`) so the binary can
    look their digests up instead of reading the copies again."""
    package = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(package, "w") as wheel:
        wheel.writestr("pkg/__init__.py", "")
    seen = tmp_path / "seen"
    seen.mkdir()
    binary = fake_binary(tmp_path, textwrap.dedent("""\
        while [ $# -gt 0 ]; do
          case "$1" in
            --origins) cp "$2" %(seen)s/origins.json ;;
            --context) ls "$2" > %(seen)s/context.txt ;;
          esac
          shift
        done
        echo '{"sdk_container_image": "prebuilt:1", "cached": false, "seconds": 0}'
        """ % {"seen": seen}))
    monkeypatch.setenv("PREBUILDER_BIN", str(binary))
    assert build_image(
        "--sdk_container_image", base_image,
        "--extra_package", package) == "prebuilt:1"
    import json
    origins = json.loads((seen / "origins.json").read_text())
    # The extra package is the user's own file; extra_packages.txt was
    # generated in a directory Beam has deleted, so it is not named.
    assert origins == {package.name: str(package)}
    staged = (seen / "context.txt").read_text().split()
    assert package.name in staged and "extra_packages.txt" in staged
    # Beam's module sees the real shutil again.
    import shutil
    assert sdk_container_builder.shutil is shutil
