//! One error type for the library. Every variant names the file, image or
//! registry at fault; `hint()` says what the user can do next.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a message names an engine: its description ("the engine at
/// unix:///… (from DOCKER_HOST), Podman 4.3.1"), given by the engine adapter
/// (see [`Error::named`]), or "the engine" while none is known.
fn the(engine: &str) -> &str {
    if engine.is_empty() {
        "the engine"
    } else {
        engine
    }
}

/// The engine a command talks to, as its errors name it: what the adapter
/// says of itself, given to [`Error::named`] at the command's edge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineName {
    /// "the engine at unix:///var/run/docker.sock (default), Docker 20.10.24"
    pub description: String,
    /// "unix:///var/run/docker.sock (default)"
    pub endpoint: String,
    /// What to do when it does not answer.
    pub unreachable_hint: String,
}

/// Exit status: the setup inside the container failed (or `check` found problems).
pub const EXIT_SETUP_FAILED: i32 = 1;
/// Exit status: bad input or usage, or a refusal the user must act on.
pub const EXIT_USAGE: i32 = 2;
/// Exit status: the engine or a registry is unavailable (connection refused
/// or reset, timeout, HTTP 5xx, engine gone mid-build); retrying may succeed.
pub const EXIT_UNAVAILABLE: i32 = 3;
/// Exit status: interrupted (Ctrl-C), as shells report 128 + SIGINT
/// (SIGTERM and SIGHUP: see [`crate::cancel::Signal::exit_code`]).
pub const EXIT_INTERRUPTED: i32 = 130;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- staged artifacts (src/stage) ----
    #[error("staging context {dir} does not exist or is not a directory")]
    ContextMissing { dir: PathBuf },

    #[error("staging context {dir} has no manifest: {manifest} is missing")]
    ManifestMissing { dir: PathBuf, manifest: PathBuf },

    #[error("manifest {path} is not valid: {reason}")]
    ManifestInvalid { path: PathBuf, reason: String },

    #[error("manifest {manifest}, entry {index}: type URN is {urn:?}, expected \"beam:artifact:type:file:v1\"")]
    WrongTypeUrn {
        manifest: PathBuf,
        index: usize,
        urn: String,
    },

    #[error("manifest {manifest} names {name:?}, which escapes the staging directory")]
    ArtifactEscapes { manifest: PathBuf, name: String },

    #[error(
        "manifest {manifest} names {name:?}, but {path} does not exist or is not a regular file"
    )]
    ArtifactMissing {
        manifest: PathBuf,
        name: String,
        path: PathBuf,
    },

    #[error("{path}: sha256 is {actual}, but the manifest says {expected}")]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error("{flag} {path}: no such file or directory")]
    InputMissing { flag: &'static str, path: PathBuf },

    #[error("{flag} {path}: {reason}")]
    InputInvalid {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error("two inputs are staged under the same name {name:?}: {first} and {second}")]
    StagedNameConflict {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },

    #[error("{input}: {reason}")]
    PyFlinkInput { input: String, reason: String },

    #[error("nothing to install: {what}")]
    NothingToInstall { what: String },

    #[error("cannot read archive {path}: {reason}")]
    Archive { path: PathBuf, reason: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // ---- engine (src/engine) ----
    #[error("cannot reach the container engine{}: {source}", if endpoint.is_empty() { String::new() } else { format!(" at {endpoint}") })]
    EngineUnreachable {
        endpoint: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        /// What to do, fitted to the transport and how the endpoint was chosen.
        hint: String,
    },

    #[error("cannot use the container engine at {endpoint}: {reason}")]
    EngineConfig {
        endpoint: String,
        reason: String,
        hint: String,
    },

    /// The engine stopped answering in the middle of a build (restart, crash).
    #[error(
        "the engine at {endpoint} went away during {during}; the result was not tagged; run again"
    )]
    EngineWentAway {
        endpoint: String,
        during: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("base image {image} is not on {}", the(engine))]
    BaseMissing { image: String, engine: String },

    #[error("base image {image} moved during the build: its registry named {resolved}, the pull gave {pulled}")]
    BaseMoved {
        image: String,
        resolved: String,
        pulled: String,
    },

    #[error("base image {image} is not on the engine, and pulling it from {registry} failed ({credentials}): {reason}")]
    BaseUnavailable {
        image: String,
        registry: String,
        /// Where credentials were looked for, and whether some were found.
        credentials: String,
        reason: String,
    },

    #[error("cannot pull {image} from {registry} ({credentials}): {reason}")]
    PullFailed {
        image: String,
        registry: String,
        credentials: String,
        reason: String,
    },

    #[error("{image} in {registry} has no {platform} image; the index has: {available}")]
    PlatformMissing {
        image: String,
        registry: String,
        platform: String,
        available: String,
    },

    #[error("base image {image} has no {path}: it is not a Beam SDK image")]
    BootMissing { image: String, path: String },

    #[error("container engine error while {action} ({}): {source}", the(engine))]
    Engine {
        action: String,
        /// How the engine is named (empty until [`Error::named`]).
        engine: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The engine refused to remove an image (409): a container uses it, or
    /// images built on it remain. Never forced.
    #[error("image {image} was not removed: {}", if containers.is_empty() { reason.clone() } else { format!("container(s) {} use it", containers.join(", ")) })]
    ImageInUse {
        image: String,
        containers: Vec<String>,
        reason: String,
    },

    /// A local file or directory prebuilder itself writes (temp files, layer tars).
    #[error("local I/O error while {action}: {source}")]
    Local {
        action: String,
        #[source]
        source: std::io::Error,
    },

    /// The directory prebuilder writes a layer into has too little room:
    /// found before writing (the setup's snapshot says how big the layer
    /// is) or when a write ran out of space. Nothing is left behind.
    #[error("not enough space to write the {what} in {dir}: it needs about {}, the file system has {} free", human_bytes(*needed), human_bytes(*available))]
    DiskFull {
        what: String,
        dir: PathBuf,
        needed: u64,
        available: u64,
    },

    /// The setup started its snapshot and could not finish it (its `tar`
    /// failed inside the container): committing the container instead would
    /// carry the half-made snapshot, so the build stops here.
    #[error("the setup of layer {layer:?} could not write its snapshot inside the setup container (from {image}); see tar's message in the setup's output above")]
    SnapshotFailed { layer: String, image: String },

    /// A background task of prebuilder's own (hashing, tar writing) panicked or was cancelled.
    #[error("internal task failed while {action}: {source}")]
    Task {
        action: String,
        #[source]
        source: tokio::task::JoinError,
    },

    #[error(
        "{engine} built {image}, but it is not what was asked for, so it was removed:{}",
        differences.iter().map(|d| format!("\n  - {d}")).collect::<String>()
    )]
    ResultMismatch {
        engine: String,
        image: String,
        differences: Vec<String>,
        /// The hint: the likely cause on this engine (`build::verify`).
        cause: String,
    },

    #[error("setup of layer {layer:?} failed with exit status {status}: {step}{tail}")]
    SetupFailed {
        layer: String,
        step: String,
        status: i64,
        /// The last lines of the setup's output, already formatted (may be empty).
        tail: String,
    },

    /// The containers it had created are removed, and said so, by the caller.
    #[error("interrupted ({})", signal.name())]
    Interrupted { signal: crate::cancel::Signal },

    // ---- registries (src/registry) ----
    #[error("cannot reach registry {registry}: {source}")]
    RegistryUnreachable {
        registry: String,
        #[source]
        source: RegistryCause,
    },

    #[error("registry {registry} refused the request: authentication required{}", if *with_credentials { " (the configured credentials were rejected)" } else { " (no credentials are configured for it)" })]
    RegistryUnauthorized {
        registry: String,
        with_credentials: bool,
    },

    #[error("{} would not push to registry {registry} over plain HTTP (it speaks HTTP, the engine asked for HTTPS)", the(engine))]
    RegistryInsecure {
        registry: String,
        podman: bool,
        engine: String,
    },

    #[error("registry {registry} denied access to {repository}")]
    RegistryDenied {
        registry: String,
        repository: String,
    },

    /// The registry answered, but not as the call needs (a 5xx among
    /// them: [`Error::exit_code`] tells those apart by the cause).
    #[error("registry {registry}: {action} failed: {source}")]
    Registry {
        registry: String,
        action: String,
        #[source]
        source: RegistryCause,
    },

    #[error("cannot read credentials for registry {registry}: {reason}")]
    Credentials { registry: String, reason: String },

    #[error("{reference} already exists in the registry with other content ({existing}); not overwritten")]
    TagConflict { reference: String, existing: String },

    /// A `--no-cache --push` rebuild whose digest differs from the one the
    /// registry holds under the same content tag: content tags never move.
    #[error("{reference} is in the registry as {pushed}, but this rebuild of the same inputs is {rebuilt}: the registry's image was made with other bytes, and content tags never move")]
    ContentTagTaken {
        reference: String,
        pushed: String,
        rebuilt: String,
    },

    #[error("{message}")]
    Usage { message: String, hint: String },

    // ---- custom bases, checks and records ----
    #[error("{what} {image} is not on {}", the(engine))]
    ImageMissing {
        what: &'static str,
        image: String,
        engine: String,
    },

    #[error("--boot-from image {image} has no {path}: it is not a Beam SDK image")]
    BootSourceMissing { image: String, path: String },

    #[error("base image {image} is not ready for Beam's boot; nothing was installed:{findings}")]
    BaseRefused {
        image: String,
        /// The findings, listed as `crate::check::list` renders them.
        findings: String,
        /// Whether one of them is about the boot (the hint then offers --boot-from).
        boot: bool,
    },

    #[error("base image {image} is not ready for PyFlink; nothing was installed:{findings}")]
    PyFlinkBaseRefused {
        image: String,
        /// The findings, listed as `crate::check::list` renders them.
        findings: String,
    },

    #[error("image {image} is not compatible: {findings} finding(s), listed on stdout")]
    Incompatible { image: String, findings: usize },

    /// `verify`: the image's layers, record and attestations disagree.
    #[error("{image}: its layers, record and attestations do not agree: {failed} check(s) failed, listed on stdout")]
    Disagree { image: String, failed: usize },

    #[error("no {format} SBOM is attached to {image}{}", if *on_engine { "" } else { ", and the engine has no such image to make one from" })]
    SbomMissing {
        image: String,
        format: &'static str,
        on_engine: bool,
    },

    #[error("cannot probe image {image}: {reason}")]
    ProbeFailed { image: String, reason: String },

    #[error("cannot probe the launch Python {python}: {reason}")]
    LaunchPython { python: PathBuf, reason: String },

    #[error("image {image} has no prebuilder record (no label prebuilder.record, no {file})")]
    RecordMissing { image: String, file: &'static str },

    #[error("the prebuilder record of image {image} is not valid: {reason}")]
    RecordInvalid { image: String, reason: String },

    #[error("cannot write {what} file {path}: {source}")]
    Output {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write report {path}: {source}")]
    Report {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // ---- direct mode (src/direct) ----
    /// Direct mode cannot read this base (no engine and no container to ask).
    #[error("direct mode cannot use the base {image}: {reason}")]
    DirectBase { image: String, reason: String },

    /// An input direct mode does not install itself; the engine mode would.
    #[error("direct mode refuses {input}: {reason}")]
    DirectRefused { input: String, reason: String },

    /// `--platform`: an input that cannot serve one of the platforms asked for.
    #[error("cannot build for {platform}: {input}: {reason}")]
    PlatformRefused {
        platform: String,
        input: String,
        reason: String,
        hint: String,
    },

    /// `--platform`: the engine cannot run a container for the platform.
    #[error("{} cannot run {platform} containers: {reason}", the(engine))]
    EmulationMissing {
        platform: String,
        engine: String,
        reason: String,
    },

    /// A package index (PEP 503/691) that could not be read, or a file it
    /// gave that fails its check; `index` never carries credentials.
    #[error("package index {index}: {action} failed: {reason}")]
    PackageIndex {
        index: String,
        action: String,
        reason: String,
        hint: String,
        /// Unreachable, cut short or HTTP 5xx: worth a retry (exit 3).
        retry: bool,
    },

    /// What pip (or Beam's boot) would fail on, found before anything is built.
    #[error("{step}: {reason}")]
    DirectFailed { step: String, reason: String },
}

/// Why a registry call failed, kept typed rather than as text: the exit
/// status tells a registry's 5xx (worth a retry) from a refusal by it, and
/// whoever walks the error's sources sees the HTTP client's own chain.
#[derive(Debug, thiserror::Error)]
pub enum RegistryCause {
    /// The registry answered with a status the call does not expect.
    /// `message` is what it said: its JSON `errors` (as the docker CLI
    /// shows them), else the start of its body; `None` for an empty body
    /// (every answer to a `HEAD`).
    #[error("HTTP {status}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        status: reqwest::StatusCode,
        message: Option<String>,
    },
    /// The HTTP exchange itself failed: connection refused or reset, an
    /// unknown host, TLS, a timeout, a body cut short (or, for a token, not
    /// JSON). Shown with the client's whole chain of causes.
    #[error("{}", chain(.0))]
    Http(#[source] reqwest::Error),
    /// Anything else, in words: an answer that breaks the protocol (no
    /// `Location`, a blob with another digest), a push with nothing to put.
    #[error("{0}")]
    Other(String),
}

impl From<String> for RegistryCause {
    fn from(text: String) -> Self {
        RegistryCause::Other(text)
    }
}

impl From<&str> for RegistryCause {
    fn from(text: &str) -> Self {
        RegistryCause::Other(text.to_string())
    }
}

/// An error and its sources, `: `-joined (reqwest's own message names only
/// the request; the cause, e.g. "Connection refused", is deeper).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

impl Error {
    /// The next step for the user, printed after the error as `hint: …`.
    pub fn hint(&self) -> Option<String> {
        use Error::*;
        Some(match self {
            ContextMissing { .. } => "pass the directory Beam staged (it holds artifacts_info.json), or use --requirements-file/--setup-file instead of --context".into(),
            ManifestMissing { .. } => "a Beam staging context holds artifacts_info.json next to the staged files; regenerate it with your pipeline's launch, or use the Beam-style flags".into(),
            ManifestInvalid { .. } | WrongTypeUrn { .. } => "artifacts_info.json must be a JSON array of ArtifactInformation JSON strings with typeUrn beam:artifact:type:file:v1, as Beam writes it".into(),
            ArtifactEscapes { .. } => "staged names are file names relative to the manifest's directory; remove the entry or stage the file into the context".into(),
            ArtifactMissing { .. } => "copy the file into the staging context or regenerate the context".into(),
            DigestMismatch { .. } => "the file changed after it was staged; regenerate the staging context".into(),
            InputMissing { .. } => "check the path; relative paths are taken from the current directory".into(),
            InputInvalid { .. } => "see `prebuilder build --help` for what each input flag takes".into(),
            PyFlinkInput { .. } => "PyFlink inputs: --py-files PATH[,PATH], --py-requirements FILE[#CACHE_DIR], --py-archives FILE#NAME, --py-executable PATH (NAME/path points into an archive), or the python.* keys of --flink-conf; nothing was built".into(),
            StagedNameConflict { .. } => "rename one of the files: staged names must be unique".into(),
            NothingToInstall { .. } => "pass --requirements-file, --extra-package, --setup-file or --sdk-location (or a --context with artifacts); for a PyFlink job, --py-requirements, --py-archives or --py-files".into(),
            Archive { .. } => "the archive is damaged or not in the format its name says; rebuild it".into(),
            Io { .. } => "check that the path exists and is readable".into(),
            EngineUnreachable { hint, .. } | EngineConfig { hint, .. } => hint.clone(),
            BaseMissing { image, .. } => format!("with --pull never, prebuilder never pulls: load the base first, e.g. `docker pull {image}` on a machine with network, or `docker load -i image.tar`; or let it pull with --pull missing"),
            PlatformMissing { platform, .. } => format!("choose a base built for {platform} (or a multi-platform one that includes it)"),
            PullFailed { image, registry, .. } | BaseUnavailable { image, registry, .. } => format!("check the reference and that {registry} is reachable; if it needs a login, run `docker login {registry}` (prebuilder uses the docker CLI's credentials); offline, load the image (`docker load -i image.tar`, or `docker pull {image}` where there is network) and build with --pull never"),
            BootMissing { .. } => "use a Beam SDK image (apache/beam_python<MAJOR>.<MINOR>_sdk:<version>) or one built from it, or add Beam's boot to this base with --boot-from <Beam SDK image>".into(),
            Engine { .. } => "check the engine's log (`journalctl -u docker` or `docker info`) and retry".into(),
            ResultMismatch { cause, .. } => cause.clone(),
            BaseMoved { .. } => "its tag was pushed again while this build ran; run the same command again (it computes the keys from the image it then finds), or pin the base by digest (IMAGE@sha256:…)".into(),
            EngineWentAway { .. } => "check that the engine is up (`docker info`), then run the same command again: layers finished before it went away are reused, and what the interrupted one left is removed by the next run or `prebuilder gc`".into(),
            ImageInUse { containers, .. } if !containers.is_empty() => format!("remove the container(s) first (`docker rm -f {}`) or keep the image; prebuilder never forces a removal", containers.join(" ")),
            ImageInUse { .. } => "images built on it still exist: remove them first, or keep it".into(),
            Local { .. } => "check free space and permissions of the directory named above, then run again".into(),
            DiskFull { dir, .. } => format!("free space on the file system of {}, or point prebuilder at a directory on one with room: PREBUILDER_STATE_DIR=/path/with/room (layers are written under its tmp/); nothing was left behind", dir.display()),
            SnapshotFailed { .. } => "usually the engine's own disk is full: `docker system df` shows its use, `docker info` its data root; free space there and run again".into(),
            Task { .. } => "this is a bug in prebuilder; run again, and report it with the output above if it repeats".into(),
            // The pip hint only for pip's failures (the boot's "failed to install" line).
            // Beam's boot says "failed to install …"; PyFlink's setup names --py-requirements.
            SetupFailed { step, .. } if step.to_ascii_lowercase().contains("failed to install") || step.contains("--py-requirements") => "fix the failing package in your inputs (the output above shows pip's message); with --network none every requirement must be in the requirements cache".into(),
            SetupFailed { status: 96, .. } => "build this platform on a base whose apache-beam is the staged SDK's version (e.g. Beam's SDK image of that version, which has every platform), or launch with the base's version of Beam; nothing was installed".into(),
            SetupFailed { status, .. } if *status == 97 || *status == 98 => "prebuilder's setup script could not clean the artifacts directory in the container (see the lines above); check that the base image's /opt/apache/beam/artifacts is writable".into(),
            SetupFailed { .. } => "the base image's boot failed before installing anything with pip: the last lines above say why (e.g. apache-beam missing or a different version than the base's boot expects); `prebuilder check IMAGE` probes the base".into(),
            RegistryUnreachable { registry, .. } => format!("check that {registry} is the right host and port and that the registry is running; run without --push to build locally"),
            RegistryUnauthorized { registry, .. } => format!("run `docker login {registry}` (prebuilder reads the docker CLI's credentials: DOCKER_CONFIG, credsStore, credHelpers)"),
            RegistryInsecure { registry, podman: true, .. } => format!("mark it insecure for Podman: add `[[registry]]` / `location = \"{registry}\"` / `insecure = true` to /etc/containers/registries.conf (or the file CONTAINERS_REGISTRIES_CONF names for the Podman service), restart the service, and push again; or serve the registry over TLS"),
            RegistryInsecure { registry, podman: false, .. } => format!("add \"insecure-registries\": [\"{registry}\"] to the engine's /etc/docker/daemon.json and restart it, or serve the registry over TLS"),
            RegistryDenied { registry, .. } => format!("your account on {registry} may not push or pull this repository: ask for access or choose another --repository"),
            Registry { registry, .. } if self.exit_code() == EXIT_UNAVAILABLE => format!("{registry} failed on its side (the message above is its own); run the same command again later: nothing was reported as pushed, pushing again is safe, and what was built or uploaded is reused"),
            Registry { .. } => "nothing was reported as pushed; pushing again is safe".into(),
            Credentials { .. } => "check DOCKER_CONFIG/config.json and that the credential helper it names is on PATH and works (`docker-credential-<name> list`)".into(),
            TagConflict { .. } => "pass --replace-tags to move the tag to this build, or choose another --tag; nothing was built or pushed".into(),
            ContentTagTaken { .. } => "rebuilds by prebuilder are byte-identical, so the registry's image came from elsewhere: another tool, another prebuilder version, or a `docker commit` fallback (PREBUILDER_COMMIT, or a base without GNU find/tar), here or there. No tag was put or moved in the registry; the rebuild is on the engine only. Drop --no-cache to use the registry's image (with your --tag), or push the rebuild to another --repository".into(),
            Usage { hint, .. } => hint.clone(),
            Interrupted { .. } => return None,
            ImageMissing { what: "--boot-from image", image, .. } => format!("with --pull never, prebuilder never pulls: load it first, e.g. `docker pull {image}` on a machine with network, or `docker load -i image.tar`; or let it pull with --pull missing"),
            ImageMissing { image, .. } => format!("prebuilder pulls only the --base and --boot-from images (see --pull): load it first, e.g. `docker pull {image}` on a machine with network, or `docker load -i image.tar`"),
            BootSourceMissing { .. } => "pass a Beam SDK image (apache/beam_python<MAJOR>.<MINOR>_sdk:<version>, same Beam version as the base) to --boot-from".into(),
            BaseRefused { boot, .. } => {
                let boot = if *boot {
                    "use a Beam SDK image (apache/beam_python<MAJOR>.<MINOR>_sdk:<version>) or one built from it, or add Beam's boot with --boot-from; "
                } else {
                    ""
                };
                format!("{boot}change the base as each finding says (`prebuilder check IMAGE` shows the whole probe), or pass --no-check to build anyway")
            }
            PyFlinkBaseRefused { .. } => "use a Flink image with Python, apache-flink and Java (the Python minor version of the launching Python), change the base as each finding says, or pass --no-check to build anyway".into(),
            Incompatible { .. } => "change what each finding's `fix:` says, then run `prebuilder check` again".into(),
            Disagree { .. } => "something other than prebuilder's push wrote the image or its referrers, or they were made for another image: push the result again from its inputs (`prebuilder build --push`), and find out who else writes to the repository".into(),
            SbomMissing { .. } => "`prebuilder build --push` attaches SBOMs (unless --no-attestations; --sbom-format picks the formats); pass an image on the engine to make one from its record".into(),
            ProbeFailed { image, .. } => format!("look inside with `docker run --rm -it --entrypoint /bin/sh {image}`; the probe needs /bin/sh and, for most checks, python"),
            LaunchPython { .. } => "pass --launch-python with the interpreter that launches the pipeline (it needs apache-beam)".into(),
            RecordMissing { .. } => "records are written by `prebuilder build` (this version and later); rebuild the image, with --no-cache if its layers are cached".into(),
            RecordInvalid { .. } => "rebuild the image with `prebuilder build --no-cache`".into(),
            Report { .. } => "choose a writable path for --report".into(),
            Output { what, .. } => format!("choose a writable path for {what} (its directory must exist); the image was built and is reported on stdout"),
            DirectBase { .. } => "build with --builder engine (the engine runs the base's own boot), or use a glibc base with python, pip and apache-beam".into(),
            PlatformRefused { hint, .. } => hint.clone(),
            PackageIndex { hint, .. } => hint.clone(),
            EmulationMissing { platform, .. } => format!("add emulation for {platform} to the engine's host: on Debian/Ubuntu `apt-get install qemu-user-static binfmt-support` (and `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc` if it is not mounted), or `docker run --privileged --rm tonistiigi/binfmt --install all`; or build on a machine of that platform; nothing was built"),
            DirectRefused { .. } => "build with --builder engine, which runs the base's boot and pip in a container; nothing was built or pushed".into(),
            DirectFailed { .. } => "fix the inputs as the message says (every requirement and dependency must be pinned and staged in the requirements cache); nothing was built or pushed".into(),
        })
    }

    /// The process exit status, the one place it is decided:
    /// [`EXIT_SETUP_FAILED`] when the setup inside the container failed (or
    /// `check` has findings), [`EXIT_UNAVAILABLE`] when the engine or a
    /// registry could not be reached, answered 5xx or broke off (worth a retry),
    /// 128 + the signal on SIGINT ([`EXIT_INTERRUPTED`]), SIGTERM or SIGHUP,
    /// [`EXIT_USAGE`] for everything the user
    /// must fix (input, usage, credentials, a refusal).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::SetupFailed { .. }
            | Error::Incompatible { .. }
            | Error::Disagree { .. }
            | Error::DirectFailed { .. } => EXIT_SETUP_FAILED,
            Error::EngineUnreachable { .. }
            | Error::EngineWentAway { .. }
            | Error::BaseMoved { .. }
            | Error::RegistryUnreachable { .. } => EXIT_UNAVAILABLE,
            // A registry that answers 5xx is down or overloaded, not refusing.
            Error::Registry {
                source: RegistryCause::Status { status, .. },
                ..
            } if status.is_server_error() => EXIT_UNAVAILABLE,
            // The exchange broke (a timeout, a body cut short): worth a retry;
            // a client that cannot be built or a token that is not JSON: not.
            Error::Registry {
                source: RegistryCause::Http(e),
                ..
            } if !(e.is_builder() || e.is_decode()) => EXIT_UNAVAILABLE,
            Error::PackageIndex { retry: true, .. } => EXIT_UNAVAILABLE,
            Error::Interrupted { signal } => signal.exit_code(),
            _ => EXIT_USAGE,
        }
    }

    /// A write into `dir` that ran out of space, as [`Error::DiskFull`]
    /// (`needed`: what the whole write needs); any other error as
    /// `otherwise` makes it.
    pub(crate) fn or_full(
        source: std::io::Error,
        what: impl Into<String>,
        dir: &std::path::Path,
        needed: u64,
        otherwise: impl FnOnce(std::io::Error) -> Error,
    ) -> Error {
        if source.kind() == std::io::ErrorKind::StorageFull {
            Error::DiskFull {
                what: what.into(),
                dir: dir.to_path_buf(),
                needed,
                available: crate::state::available_space(dir).unwrap_or(0),
            }
        } else {
            otherwise(source)
        }
    }

    /// This error, naming `engine` where it speaks of the engine without
    /// naming it (an adapter's error, made before the caller knew it).
    pub fn named(mut self, name: &EngineName) -> Error {
        match &mut self {
            Error::Engine { engine, .. }
            | Error::BaseMissing { engine, .. }
            | Error::ImageMissing { engine, .. }
            | Error::EmulationMissing { engine, .. }
            | Error::RegistryInsecure { engine, .. }
                if engine.is_empty() =>
            {
                *engine = name.description.clone();
            }
            Error::EngineUnreachable { endpoint, hint, .. } if endpoint.is_empty() => {
                *endpoint = name.endpoint.clone();
                *hint = name.unreachable_hint.clone();
            }
            _ => {}
        }
        self
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `5.3 GB`, `40.0 MB`, `512 bytes` (decimal units, as `df -H` shows).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_df_shows_them() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(40_000_000), "40.0 MB");
        assert_eq!(human_bytes(5_300_000_000), "5.3 GB");
        assert_eq!(human_bytes(u64::MAX), "18446744.1 TB");
    }

    #[test]
    fn a_full_disk_names_the_directory_the_sizes_and_the_way_out() {
        let e = Error::DiskFull {
            what: "dependencies layer".into(),
            dir: PathBuf::from("/small/tmp/h-1"),
            needed: 120_000_000,
            available: 39_000_000,
        };
        let text = e.to_string();
        assert!(
            text.contains("/small/tmp/h-1")
                && text.contains("120.0 MB")
                && text.contains("39.0 MB"),
            "{text}"
        );
        let hint = e.hint().unwrap();
        assert!(
            hint.contains("PREBUILDER_STATE_DIR") && hint.contains("/small/tmp/h-1"),
            "{hint}"
        );
        assert_eq!(e.exit_code(), EXIT_USAGE);
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert!(matches!(
            Error::or_full(full, "layer", std::path::Path::new("/"), 1, |s| Error::io(
                "/", s
            )),
            Error::DiskFull { .. }
        ));
        let other = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(matches!(
            Error::or_full(other, "layer", std::path::Path::new("/"), 1, |s| Error::io(
                "/", s
            )),
            Error::Io { .. }
        ));
    }

    fn failed(step: &str, status: i64) -> Error {
        Error::SetupFailed {
            layer: "dependencies".into(),
            step: step.into(),
            status,
            tail: String::new(),
        }
    }

    /// Issue 12: the pip hint appeared for failures that were not pip's.
    #[test]
    fn the_setup_hint_matches_the_failing_step() {
        let pip = failed(
            "boot: failed to install requirements.txt: pip exited with status 1",
            1,
        );
        assert!(pip.hint().unwrap().contains("pip's message"));
        let boot = failed("/opt/apache/beam/boot --setup_only failed", 1);
        let h = boot.hint().unwrap();
        assert!(
            !h.contains("pip's message") && h.contains("before installing anything"),
            "{h}"
        );
        let script = failed("/opt/apache/beam/boot --setup_only failed", 98);
        assert!(script.hint().unwrap().contains("artifacts directory"));
    }

    use crate::cancel::Signal;

    #[test]
    fn exit_statuses_tell_retry_from_fix() {
        let unavailable = Error::RegistryUnreachable {
            registry: "r".into(),
            source: "connection refused".into(),
        };
        assert_eq!(unavailable.exit_code(), EXIT_UNAVAILABLE);
        // Issue 18: a registry's 5xx on a blob, an upload or a manifest
        // exited 2; it is a retry, any other status a refusal.
        let answered = |status: u16| Error::Registry {
            registry: "r".into(),
            action: "uploading blob sha256:0 to team/x".into(),
            source: RegistryCause::Status {
                status: reqwest::StatusCode::from_u16(status).unwrap(),
                message: Some("unknown: unknown error".into()),
            },
        };
        for status in [500, 502, 503, 504] {
            let e = answered(status);
            assert_eq!(e.exit_code(), EXIT_UNAVAILABLE, "{e}");
            assert!(e.hint().unwrap().contains("run the same command again"));
        }
        for status in [400, 404, 405] {
            let e = answered(status);
            assert_eq!(e.exit_code(), EXIT_USAGE, "{e}");
            assert!(!e.hint().unwrap().contains("failed on its side"));
        }
        let e = answered(503);
        assert_eq!(
            e.to_string(),
            "registry r: uploading blob sha256:0 to team/x failed: HTTP 503 Service Unavailable: unknown: unknown error"
        );
        assert!(std::error::Error::source(&e).is_some(), "a typed source");
        let usage = Error::Usage {
            message: "m".into(),
            hint: "h".into(),
        };
        assert_eq!(usage.exit_code(), EXIT_USAGE);
        let interrupted = Error::Interrupted {
            signal: Signal::Interrupt,
        };
        assert_eq!(interrupted.exit_code(), EXIT_INTERRUPTED);
        let terminated = Error::Interrupted {
            signal: Signal::Terminate,
        };
        assert_eq!(terminated.exit_code(), 143);
    }
}
