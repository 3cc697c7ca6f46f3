"""The Beam side of the plugin: an SdkContainerImageBuilder named `prebuilder`.

Beam finds builders by walking the subclasses of SdkContainerImageBuilder that
have been imported, matching `_builder_key()` against
--prebuild_sdk_container_engine; so defining this class is all the
registration there is. Beam calls `_build()` and uses the reference it returns
as the pipeline's sdk_container_image.
"""

import contextlib
import logging
import os
import re
import shlex
import sys
import tempfile

from apache_beam import version as beam_version
from apache_beam.options.pipeline_options import FlinkRunnerOptions
from apache_beam.options.pipeline_options import PortableOptions
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.runners.internal.names import STAGED_SDK_SOURCES_FILENAME
from apache_beam.runners.portability import sdk_container_builder
from apache_beam.runners.portability.sdk_container_builder import (
    SdkContainerImageBuilder)
from apache_beam.runners.portability.stager import (
    EXTRA_PACKAGES_FILE, REQUIREMENTS_FILE, WORKFLOW_TARBALL_FILE)

from prebuilder_beam import _binary
from prebuilder_beam._binary import PrebuilderError

_LOGGER = logging.getLogger(__name__)

BUILDER_KEY = "prebuilder"

# Staged names the boot installs (requirements, extra packages, the
# pipeline's package, an SDK source or wheel).
_INSTALLED_NAMES = frozenset((
    REQUIREMENTS_FILE, EXTRA_PACKAGES_FILE, WORKFLOW_TARBALL_FILE,
    STAGED_SDK_SOURCES_FILENAME))

# Beam's SDK images: apache/beam_python3.11_sdk:2.77.0 and the like.
_SDK_IMAGE = re.compile(r"beam_python(\d+)\.(\d+)_sdk:([^@/\s]+)$")


class PrebuilderSdkContainerImageBuilder(SdkContainerImageBuilder):
    """Builds the prebuilt SDK image with the `prebuilder` binary.

    Beam's own Stager stages the dependencies into a context directory
    (`_prepare_dependencies`); `prebuilder build --context` installs them into
    the base image (--sdk_container_image, else Beam's default image for the
    running Python and Beam versions), reusing every layer whose inputs did
    not change, and pushes to --docker_registry_push_url when it is set.
    """

    @classmethod
    def _builder_key(cls):
        return BUILDER_KEY

    def _build(self):
        with visible_progress(logging.getLogger("prebuilder_beam")):
            return self._build_image()

    def _build_image(self):
        # Configuration problems surface before Beam spends time staging.
        binary = _binary.find_binary()
        extra = _binary.extra_args()
        push = bool(self._docker_registry_push_url)
        repository = _binary.repository_for(self._docker_registry_push_url)
        _warn_on_version_mismatch(self._base_image)
        if not push and not _runs_locally(self._options):
            _LOGGER.warning(
                "prebuilder: no --docker_registry_push_url is set, so the image "
                "stays on this machine's engine, but the runner (%s) starts "
                "workers elsewhere: they will fail to pull it. Set "
                "--docker_registry_push_url to a registry the workers can "
                "reach.", _runner_name(self._options) or "default")

        with tempfile.TemporaryDirectory(prefix="prebuilder-beam-") as work:
            context = os.path.join(work, "context")
            os.mkdir(context)
            self._temp_src_dir = context
            self._prepare_dependencies()
            if not _stages_something_to_install(context):
                # The binary refuses such a context (there is nothing to
                # bake); Beam would otherwise fail a launch that merely has no
                # dependencies, e.g. one with only --save_main_session.
                _LOGGER.info(
                    "prebuilder: the pipeline stages nothing to install; "
                    "using the base image %s as it is", self._base_image)
                return self._base_image
            origins = _binary.write_origins(
                getattr(self, "_origins", {}), os.path.join(work, "origins.json"))
            command = _binary.build_command(
                binary, self._base_image, context, repository, push,
                _binary.direct_args(extra, push), origins=origins)
            report = _binary.run_build(command)

        reference = report["sdk_container_image"]
        if push and "@sha256:" not in reference:
            raise PrebuilderError(
                "prebuilder was asked to push to %s but reported %s, which is "
                "not pinned to a digest\ncommand: %s" %
                (self._docker_registry_push_url, reference, shlex.join(command)),
                status=0, command=command)
        _LOGGER.info("prebuilder: %s", _binary.describe_outcome(report))
        return reference

    def _prepare_dependencies(self):
        """Beam's staging, remembering the file each staged copy came from.

        Beam copies every artifact into the context on each launch, so the
        copies are new files every time and their digests cannot be
        remembered; the originals (the requirements cache, extra packages)
        can. The binary looks their digests up and checks each copy against
        its original's while uploading it (`--origins`). Beam's own code
        runs unchanged: only its module's `shutil` is seen through a proxy
        that notes each copy into the context.
        """
        self._origins = origins = {}
        real = getattr(sdk_container_builder, "shutil", None)
        if real is None:
            super()._prepare_dependencies()
            return
        context = os.path.abspath(self._temp_src_dir)
        sdk_container_builder.shutil = _CopyRecorder(real, context, origins)
        try:
            super()._prepare_dependencies()
        finally:
            sdk_container_builder.shutil = real

    def _invoke_docker_build_and_push(self, container_image_name):
        # Beam's base _build() calls this with a random tag; _build() above
        # replaces that flow because the binary names the image by content.
        raise NotImplementedError(
            "PrebuilderSdkContainerImageBuilder builds in _build()")


class _CopyRecorder:
    """`shutil` as Beam's container builder sees it while staging: every
    function is shutil's own; `copyfile` also notes, for a copy into the
    context, the file it was made from (staged name -> absolute path)."""

    def __init__(self, real, context, origins):
        self._real = real
        self._context = context
        self._origins = origins

    def __getattr__(self, name):
        return getattr(self._real, name)

    def copyfile(self, src, dst, *args, **kwargs):
        result = self._real.copyfile(src, dst, *args, **kwargs)
        dst = os.path.abspath(dst)
        if os.path.dirname(dst) == self._context:
            self._origins[os.path.basename(dst)] = os.path.abspath(src)
        return result


# Runners whose workers use this machine's engine (or none): a local image is fine.
_LOCAL_RUNNERS = frozenset((
    "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner",
    "FnApiRunner", "PrismRunner", "InteractiveRunner"))
_PORTABLE_RUNNERS = frozenset(("PortableRunner", "FlinkRunner", "SparkRunner"))
_LOCAL_ENDPOINT = re.compile(r"^(embed|\[local\]|(localhost|127\.0\.0\.1|\[::1\])(:\d+)?)$")


def _runner_name(options):
    runner = options.view_as(StandardOptions).runner
    if runner is None:
        return None
    name = runner if isinstance(runner, str) else type(runner).__name__
    return name.rsplit(".", 1)[-1]


def _runs_locally(options):
    """Whether the workers use this machine's engine, so a local image is enough.

    The direct/Prism/interactive runners, and portable runners whose job
    endpoint is in this process (`embed`) or on this machine; every other
    runner (Dataflow, a remote Flink or Spark) starts workers elsewhere.
    """
    name = _runner_name(options)
    if name is None or name in _LOCAL_RUNNERS:
        return True
    if name in _PORTABLE_RUNNERS:
        portable = options.view_as(PortableOptions)
        endpoint = portable.job_endpoint or "embed"
        flink_master = options.view_as(FlinkRunnerOptions).flink_master or "[auto]"
        local_flink = name != "FlinkRunner" or flink_master in ("[local]", "[auto]") \
            or bool(_LOCAL_ENDPOINT.match(flink_master))
        return bool(_LOCAL_ENDPOINT.match(endpoint)) and local_flink
    return False


@contextlib.contextmanager
def visible_progress(logger):
    """Shows the binary's progress (INFO) even where logging is not set up.

    Beam's own local_docker engine lets `docker build` write to the terminal,
    so a launch shows its build whatever the logging level. Python's default
    level (WARNING) would hide this plugin's INFO lines, so while it builds
    they go to stderr through a handler of its own. Where logging already
    shows INFO (the user configured it), nothing changes.
    """
    if logger.isEnabledFor(logging.INFO):
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    # Root handlers would print each line a second time.
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _stages_something_to_install(context):
    """Whether the staging context holds a file the boot installs.

    The context is flat: every staged file under its staged name, next to
    Beam's Dockerfile and the manifest. Other staged files (the pickled main
    session, files to stage, the submission environment) are not installed.
    """
    for name in os.listdir(context):
        if name in _INSTALLED_NAMES or (
                name.startswith("apache_beam-") and name.endswith(".whl")):
            return True
    return False


def _warn_on_version_mismatch(base):
    """Beam and Python versions must match between launch and workers."""
    match = _SDK_IMAGE.search(base)
    if not match:
        return
    python = "%s.%s" % (match.group(1), match.group(2))
    running_python = "%d.%d" % sys.version_info[:2]
    beam = match.group(3)
    running_beam = beam_version.__version__
    if python != running_python or beam not in (running_beam, "latest"):
        _LOGGER.warning(
            "prebuilder: the base image %s is for Python %s and Beam %s, but "
            "this launch runs Python %s and Beam %s; workers need the same "
            "versions as the launch", base, python, beam, running_python,
            running_beam)
