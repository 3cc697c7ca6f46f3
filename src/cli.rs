//! Command-line definitions (clap derive only; no logic). The flag names are a
//! contract: Beam's plugin and CI scripts call them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod images;
pub use images::{
    CheckArgs, CustomBaseArgs, DiffArgs, InspectArgs, SbomArgs, SbomFormatArg, Template,
    TemplateArgs, VerifyArgs,
};

#[derive(Debug, Parser)]
#[command(
    name = "prebuilder",
    version,
    about = "Bake a Beam pipeline's Python dependencies into an SDK container image, once.",
    long_about = "Bake a Beam pipeline's Python dependencies into an SDK container image, once.\n\n\
prebuilder runs the base image's own boot program in setup-only mode inside a container \
(through the Docker Engine API), commits the result and tags it with a key computed from \
the base image and the content of every input. Unchanged inputs are never rebuilt; a \
code-only change rebuilds only the application layer. Launch your pipeline with \
--sdk_container_image=<the reported image> and workers install nothing at start-up.",
    after_help = "Examples:\n  \
prebuilder build --base apache/beam_python3.11_sdk:2.77.0 --context ./staging --format json\n  \
prebuilder build --base apache/beam_python3.11_sdk:2.77.0 \\\n      \
--requirements-file requirements.txt --requirements-cache ./wheels --setup-file ./setup.py"
)]
pub struct Cli {
    /// Print only errors on stderr; `build` then prints only the reference to launch with
    /// (the report's sdk_container_image) on stdout, unless --format json.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// More detail on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// How stderr is written: `auto` (text; log levels coloured on a terminal unless
    /// NO_COLOR is set), `plain` (text, never coloured) or `json` (one JSON object per
    /// line, each with "v": 1 and an "event" name: every progress event, log record and
    /// the final error; the README lists them). Whatever the mode, a failure with
    /// --format json also prints {"error", "hint", "exit_code", "causes"} on stdout.
    #[arg(long, global = true, value_enum, value_name = "MODE", default_value_t = Progress::Auto)]
    pub progress: Progress,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prebuild an SDK image from staged artifacts.
    #[command(
        long_about = "Prebuild an SDK image from staged artifacts.\n\n\
Inputs come either from a Beam staging context (--context: the directory Beam's \
SdkContainerImageBuilder prepares, holding artifacts_info.json) or from Beam-style flags \
that prebuilder stages itself into the same layout. Dependencies (SDK, requirements and \
their cache) and the application (extra packages, the pipeline's own package) are built \
as two layers, each keyed by its content, so each is reused until its inputs change.\n\n\
PyFlink jobs take the PyFlink inputs instead (--py-files, --py-requirements, --py-archives, \
--py-executable, --flink-conf) on a Flink image with Python, apache-flink and Java: \
requirements and archives are the first layer, python files the second, and the report \
names the baked Python, PYTHONPATH and archive directories to launch with.\n\n\
The base image (and a --boot-from image) is pulled when the engine lacks it (see --pull); \
a result found in the registry pulls nothing.\n\n\
Exit status: 0 success; 1 the setup inside the container failed; 2 bad input or usage, or \
a refusal to act on (fix it; retrying will not help); 3 the engine or a registry is unavailable \
(connection refused or reset, timeout, HTTP 5xx, engine gone mid-build: worth a retry); \
130 interrupted (Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP), each after \
removing the setup container.",
        after_help = "Examples:\n  \
# a context Beam staged\n  \
prebuilder build --base apache/beam_python3.11_sdk:2.77.0 --context ./staging --format json\n\n  \
# Beam-style inputs, no network during setup\n  \
prebuilder build --base apache/beam_python3.11_sdk:2.77.0 --network none \\\n      \
--requirements-file requirements.txt --requirements-cache ./wheels --setup-file ./setup.py\n\n  \
# a PyFlink job's dependencies\n  \
prebuilder build --base my-flink:2.3.0-py3.11 --network none \\\n      \
--py-requirements requirements.txt#wheels --py-files udfs.py \\\n      \
--py-archives venv.zip#venv --py-executable venv/bin/python"
    )]
    Build(Box<BuildArgs>),

    /// Remove images prebuilder built that no result needs.
    #[command(
        long_about = "Remove images prebuilder built that no result needs.\n\n\
A result is an image a build reported (tagged REPO:<key>) or tagged with --tag; it needs \
the layers below it (tagged REPO:layer-<key>). gc removes every other image prebuilder \
built, and untagged ones. Images a container uses are never removed. Run with --dry-run \
first to see what would go."
    )]
    Gc(GcArgs),

    /// Print what the cache key sees of each file: size, sha256 of the bytes, and the
    /// content digest (source archives: over their sorted entries, ignoring timestamps).
    Digest(DigestArgs),

    /// Check that Beam's boot can set up and run workers in an image, and that the image
    /// matches the Python that launches the pipeline.
    #[command(
        long_about = "Check that Beam's boot can set up and run workers in an image, and that \
the image matches the Python that launches the pipeline.\n\n\
The image is probed in a short-lived container with no network: OS and architecture, the \
Python `python` resolves to and its version, apache-beam, pip, the venv module, the boot \
and the entrypoint, RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT. With a launch Python (default: \
`python3` on PATH when it has apache-beam) what must match is compared: Python minor \
version, Beam version, the pickling library in use, protobuf's major version. Every \
finding says what to change.\n\n\
Exit status: 0 compatible; 1 findings; 2 bad usage; 3 the engine is unavailable; \
130/143/129 interrupted by SIGINT/SIGTERM/SIGHUP.",
        after_help = "Examples:\n  \
prebuilder check my-gpu-image:latest --launch-python .venv/bin/python\n  \
prebuilder check apache/beam_python3.11_sdk:2.77.0 --no-launch --format json"
    )]
    Check(CheckArgs),

    /// Print the record of an image prebuilder built: its installed packages (pip freeze)
    /// and the digests of the inputs that went into it.
    Inspect(InspectArgs),

    /// Compare the records of two images prebuilder built: packages added, removed and
    /// changed, inputs, base and boot.
    Diff(DiffArgs),

    /// Print the SBOM of an image prebuilder built: the one attached to it in its registry,
    /// else one made from the record of the image on the engine.
    #[command(
        long_about = "Print the SBOM of an image prebuilder built: the one attached to it in its \
registry (an OCI referrer of its digest, as `build --push` attaches it), else one made from the \
record of the image on the engine. Every installed Python distribution (pip freeze --all in the \
image) with its version, purl, licence, the layer that installed it (or the base) and the staged \
file it came from, by digest.\n\n\
Exit status: 0 printed; 2 no SBOM attached and no such image on the engine, or bad usage; \
3 the registry or engine is unavailable.",
        after_help = "Examples:\n  \
prebuilder sbom localhost:5000/team/sdk@sha256:… > sbom.spdx.json\n  \
prebuilder sbom localhost:5000/team/sdk:stable --format cyclonedx"
    )]
    Sbom(SbomArgs),

    /// Check that a pushed image's layers, record and attached provenance and SBOMs agree.
    #[command(
        long_about = "Check that a pushed image's layers, record and attached provenance and \
SBOMs agree: the top layer is the one its config names, the record in the top layer is the one \
in its label, the provenance is about this digest and names the record's inputs by the same \
digests and its base, and each SBOM lists the record's packages. Nothing is pulled; the top \
layer is downloaded to be read.\n\n\
Exit status: 0 they agree; 1 they do not (each failed check is listed on stdout, as GNU diff's 1); \
2 bad usage or the image is not in the registry; 3 the registry is unavailable.",
        after_help = "Example:\n  prebuilder verify localhost:5000/team/sdk@sha256:…"
    )]
    Verify(VerifyArgs),

    /// Print a Dockerfile equivalent of what prebuilder does, for `docker build` users.
    Template(TemplateArgs),
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Only images tagged in this repository (and only their tags there).
    #[arg(long, value_name = "REPO")]
    pub repository: Option<String>,

    /// Keep only the N newest results (results with a --tag of yours are always kept).
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,

    /// Print what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct DigestArgs {
    /// Files to digest.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `build --pull` (the library's type: one definition).
pub use crate::build::{Builder, PullPolicy};

/// `build --sbom-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SbomFormat {
    Spdx,
    Cyclonedx,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// `--progress`: what stderr carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    Auto,
    Plain,
    Json,
}

/// Inputs that only Beam builds take: PyFlink inputs conflict with each.
const BEAM_INPUTS: [&str; 8] = [
    "context",
    "requirements_file",
    "requirements_cache",
    "extra_package",
    "setup_file",
    "sdk_location",
    "files_to_stage",
    "boot_from",
];

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Base SDK image (must be on the engine already), e.g. apache/beam_python3.11_sdk:2.77.0.
    #[arg(long, value_name = "IMAGE")]
    pub base: String,

    /// A Beam staging context: a directory with artifacts_info.json and the staged files.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with_all = ["requirements_file", "requirements_cache", "extra_package", "setup_file", "sdk_location", "files_to_stage"],
        required_unless_present_any = ["requirements_file", "requirements_cache", "extra_package", "setup_file", "sdk_location", "files_to_stage", "py_files", "py_requirements", "py_archives", "py_executable", "flink_conf"],
    )]
    pub context: Option<PathBuf>,

    /// With --context: a JSON object naming, for staged names, the file each
    /// was copied from (Beam's plugin passes it: Beam copies every artifact
    /// into a fresh directory, so only the originals' digests can be
    /// remembered). A copy is checked against its original's digest while
    /// it is uploaded.
    #[arg(long, value_name = "FILE", requires = "context", hide = true)]
    pub origins: Option<PathBuf>,

    /// requirements.txt to install (pin every transitive dependency for offline builds).
    #[arg(long, value_name = "FILE", help_heading = "Beam-style inputs")]
    pub requirements_file: Option<PathBuf>,

    /// Directory of wheels/sdists the requirements install may use (pip --find-links).
    /// Repeatable as PLATFORM=DIR (`linux/arm64=./wheels-arm64`): that platform's
    /// wheels for a `--platform` build; a plain DIR serves the other platforms. A
    /// platform the staged wheels do not serve gets the wheels of its pinned
    /// requirements fetched from the package index pip's configuration names
    /// (PIP_INDEX_URL, pip.conf, the requirements file's --index-url; credentials from
    /// the URL or ~/.netrc, never printed).
    #[arg(
        long,
        value_name = "[PLATFORM=]DIR",
        help_heading = "Beam-style inputs"
    )]
    pub requirements_cache: Vec<String>,

    /// A package (wheel or sdist) to install after the requirements; repeatable, installed in order.
    #[arg(long, value_name = "FILE", help_heading = "Beam-style inputs")]
    pub extra_package: Vec<PathBuf>,

    /// The pipeline's setup.py/pyproject.toml (or its directory): the project is packed
    /// deterministically as workflow.tar.gz and installed last.
    #[arg(long, value_name = "PATH", help_heading = "Beam-style inputs")]
    pub setup_file: Option<PathBuf>,

    /// An Apache Beam SDK to install over the base's: apache_beam-*.whl or a source tarball.
    #[arg(long, value_name = "FILE", help_heading = "Beam-style inputs")]
    pub sdk_location: Option<PathBuf>,

    /// A file to stage for the workers (not installed); repeatable.
    #[arg(long, value_name = "FILE", help_heading = "Beam-style inputs")]
    pub files_to_stage: Vec<PathBuf>,

    /// PyFlink (-pyfs): a python file, .zip/.egg/.whl or directory for the workers'
    /// PYTHONPATH; repeatable and comma-separated. Copied under /opt/flink/python-files.
    #[arg(long, value_name = "PATH", value_delimiter = ',', help_heading = "PyFlink inputs", conflicts_with_all = BEAM_INPUTS)]
    pub py_files: Vec<PathBuf>,

    /// PyFlink (-pyreq): a requirements file, installed offline (pip --no-index
    /// --find-links CACHE_DIR) when a cache dir follows the `#`.
    #[arg(long, value_name = "FILE[#CACHE_DIR]", help_heading = "PyFlink inputs", conflicts_with_all = BEAM_INPUTS)]
    pub py_requirements: Option<String>,

    /// PyFlink (-pyarch): an archive (zip, tar, tar.gz) extracted under
    /// /opt/flink/python-archives/NAME; repeatable and comma-separated.
    #[arg(long, value_name = "FILE#NAME", value_delimiter = ',', help_heading = "PyFlink inputs", conflicts_with_all = BEAM_INPUTS)]
    pub py_archives: Vec<String>,

    /// PyFlink (-pyexec): the workers' Python; NAME/path points into the archive NAME
    /// (e.g. venv/bin/python), an absolute path into the image.
    #[arg(long, value_name = "PATH", help_heading = "PyFlink inputs", conflicts_with_all = BEAM_INPUTS)]
    pub py_executable: Option<String>,

    /// PyFlink: read the python.* options (python.files, python.requirements,
    /// python.archives, python.executable, python.client.executable, python.pythonpath)
    /// from a Flink config.yaml or legacy flink-conf.yaml; flags override it.
    #[arg(long, value_name = "FILE", help_heading = "PyFlink inputs", conflicts_with_all = BEAM_INPUTS)]
    pub flink_conf: Option<PathBuf>,

    /// Repository for the result's tags.
    #[arg(
        long,
        value_name = "REPO",
        default_value = "beam_python_prebuilt_sdk",
        help_heading = "Output"
    )]
    pub repository: String,

    /// Another tag for the result in --repository (repeatable), e.g. `latest`.
    #[arg(long = "tag", value_name = "NAME", help_heading = "Output")]
    pub tags: Vec<String>,

    /// A label for the result image, KEY=VALUE (repeatable). The result also gets
    /// org.opencontainers.image.{created,base.name,base.digest,source,revision} where known
    /// (source and revision from GitHub Actions' or GitLab CI's environment, else from the git
    /// checkout of --setup-file; created only when SOURCE_DATE_EPOCH is set). Labels are
    /// part of the result's key: other labels, another result.
    #[arg(long = "label", value_name = "KEY=VALUE", help_heading = "Output")]
    pub labels: Vec<String>,

    /// Push the result to the registry named in --repository (credentials as the docker CLI
    /// finds them) and report its digest; the report's sdk_container_image is then REPO@sha256:….
    /// prebuilder pushes through the registry API itself (its own gzip and OCI manifest: the
    /// same inputs give the same digest from any engine), with every layer below the result as
    /// REPO:layer-<key>; blobs the registry has are skipped, base layers mounted or copied.
    #[arg(long, help_heading = "Output")]
    pub push: bool,

    /// With --push: move a --tag that already points to other content in the registry
    /// (without it, that is an error).
    #[arg(long, requires = "push", help_heading = "Output")]
    pub replace_tags: bool,

    /// Rebuild every layer even when an image with its key exists.
    #[arg(long)]
    pub no_cache: bool,

    /// When to pull the base image (and the --boot-from image), with the docker CLI's
    /// credentials (docker's names): `missing` pulls it when the engine lacks it, `always`
    /// pulls it first, `never` fails when it is absent. A cache question never pulls anything.
    #[arg(long, value_enum, value_name = "POLICY", default_value = "missing")]
    pub pull: PullPolicy,

    /// Who installs a missing layer: `engine` runs the base's boot in a setup
    /// container; `direct` runs no container (Beam's boot and pip replayed from
    /// files: pinned requirements, staged wheels, a pure-Python workflow; what it
    /// cannot decide exactly is refused with the input named); `auto` is direct
    /// only when no engine answers. Keys name the builder: the two never share a
    /// layer.
    #[arg(long, value_enum, value_name = "BUILDER", default_value = "engine")]
    pub builder: Builder,

    /// Platforms to build for, docker's spelling, comma-separated: `linux/amd64`,
    /// `linux/arm64` (`linux/arm64/v8`). Each is a build of its own on the base's
    /// image for it (read from the base's registry); two or more push one OCI image
    /// index (needs --push). With --builder direct (or auto and no engine) each
    /// platform is built directly, with no engine and no emulation. Default: the
    /// engine's platform; with no engine, the base's only one.
    #[arg(long, value_name = "PLATFORM[,PLATFORM…]")]
    pub platform: Option<String>,

    /// Write the result as an OCI image layout (`oci:DIR`) or a `docker load`
    /// archive (`docker-archive:FILE`), with no engine: direct mode only; the base
    /// is read from its registry.
    #[arg(
        long,
        value_name = "oci:DIR|docker-archive:FILE",
        help_heading = "Output"
    )]
    pub output: Option<String>,

    /// The Python that launches the pipeline: direct mode builds the workflow's
    /// sdist into a wheel with it, and wheels fetched from a package index for a
    /// `--platform` are for its version (default: python3 on PATH).
    #[arg(long, value_name = "PATH")]
    pub launch_python: Option<PathBuf>,

    /// Take Beam's boot from this Beam SDK image: its /opt/apache/beam is copied into the
    /// base as a first `boot` layer and the boot becomes the entrypoint. For bases that have
    /// Python and apache-beam but no boot, e.g. GPU images.
    #[arg(long, value_name = "IMAGE")]
    pub boot_from: Option<String>,

    /// Install even when the base fails the checks that otherwise run before anything is
    /// installed (Python on PATH, apache-beam, pip, venv, the boot; see `prebuilder check`).
    #[arg(long)]
    pub no_check: bool,

    /// Network of the setup container: `default` (the engine's), `none`, `host`, or a network
    /// name. With `none`, pip gets PIP_NO_INDEX=1, so a requirement missing from the cache
    /// fails in seconds with pip's own message.
    #[arg(long, value_name = "MODE", default_value = "default")]
    pub network: String,

    /// Report format on stdout (logs and progress always go to stderr).
    #[arg(long, value_enum, default_value_t = Format::Text, help_heading = "Output")]
    pub format: Format,

    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub report: Option<PathBuf>,

    /// Write the image id to FILE, as `docker build --iidfile` does (on a registry hit,
    /// where nothing is pulled, the registry's digest).
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub iidfile: Option<PathBuf>,

    /// Attach no SBOM and no provenance to the pushed result. By default a --push attaches
    /// an SPDX 2.3 and a CycloneDX 1.6 SBOM and a SLSA v1 provenance statement (unsigned) as
    /// OCI referrers of the result's digest, which stays the same (see `prebuilder sbom`).
    #[arg(long, help_heading = "Supply chain")]
    pub no_attestations: bool,

    /// Which SBOM formats to make: spdx (SPDX 2.3 JSON), cyclonedx (CycloneDX 1.6 JSON), or both.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value = "both",
        help_heading = "Supply chain"
    )]
    pub sbom_format: SbomFormat,

    /// Also write every document to DIR (sbom.spdx.json, sbom.cdx.json,
    /// provenance.intoto.json), pushed or not; about the image id when not pushed.
    #[arg(long, value_name = "DIR", help_heading = "Supply chain")]
    pub attestations_dir: Option<PathBuf>,

    /// Write buildx-style metadata JSON to FILE: `containerimage.digest` (registry digest,
    /// when pushed), `containerimage.config.digest` (image id) and `image.name`.
    /// Under GitHub Actions (GITHUB_ACTIONS=true) the step outputs `image`, `digest` and
    /// `sdk-container-image` are also appended to $GITHUB_OUTPUT.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub metadata_file: Option<PathBuf>,
}

impl BuildArgs {
    /// `--requirements-cache` values: the plain `DIR` (the last one given) and
    /// the `PLATFORM=DIR` ones (a value whose part before `=` starts with `linux/`).
    pub fn requirements_caches(&self) -> (Option<PathBuf>, Vec<(String, PathBuf)>) {
        let mut plain = None;
        let mut per_platform = Vec::new();
        for v in &self.requirements_cache {
            match v.split_once('=') {
                Some((p, dir)) if p.starts_with("linux/") => {
                    per_platform.push((p.to_string(), PathBuf::from(dir)))
                }
                _ => plain = Some(PathBuf::from(v)),
            }
        }
        (plain, per_platform)
    }
}
