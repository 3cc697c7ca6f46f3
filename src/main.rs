//! The `prebuilder` binary: parse, set up logging, run, map the result to an
//! exit status. stdout carries the report only; everything else goes to stderr.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use prebuilder::cancel::{Cancel, Signal, Trigger};
use prebuilder::cli::{BuildArgs, CheckArgs, Cli, Command, Format, GcArgs, VerifyArgs};
use prebuilder::commands::{build, check, diff, digest, gc, inspect, sbom, template, verify};
use prebuilder::engine::{DockerEngine, Engine};
use prebuilder::outputs;
use prebuilder::plan::{BEAM_DIR, BOOT};
use prebuilder::progress::{Event, Reporter};
use prebuilder::record::RECORD_FILE;
use prebuilder::redact::redact;
use prebuilder::report::Report;
use prebuilder::Error;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(prebuilder::error::EXIT_USAGE as u8);
        }
    };
    let reporter = Stderr { quiet: cli.quiet };
    let (trigger, cancel) = Cancel::new();
    let result = runtime.block_on(async {
        // Commands that talk to an engine clean up on a signal; digest and
        // template keep the default handlers (nothing to clean up).
        if !matches!(cli.command, Command::Digest(_) | Command::Template(_)) {
            watch_signals(trigger);
        }
        match cli.command {
            Command::Build(args) => run_build(*args, &reporter, &cancel).await,
            Command::Gc(args) => run_gc(args, &cancel).await,
            Command::Digest(args) => digest::run(&args).map(|out| print_stdout(&out)),
            Command::Check(args) => run_check(args, &cancel).await,
            Command::Inspect(args) => with_engine(&cancel, async |e| inspect::run(e, &args).await)
                .await
                .map(|out| print_stdout(&out)),
            Command::Diff(args) => with_engine(&cancel, async |e| diff::run(e, &args).await)
                .await
                .map(|out| print_stdout(&out)),
            Command::Sbom(args) => cancellable(&cancel, sbom::run(&args))
                .await
                .map(|out| print_bytes(&out)),
            Command::Verify(args) => run_verify(args, &cancel).await,
            Command::Template(args) => template::run(&args).map(|out| print_stdout(&out)),
        }
    });
    shut_down(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", redact(&with_causes(&e)));
            if let Some(hint) = e.hint() {
                eprintln!("hint: {}", redact(&hint));
            }
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// How long the runtime's shutdown may wait for the ssh transport to close.
const SSH_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(10);

/// Stop the runtime. Hashing threads of an interrupted run need not finish,
/// so nothing is waited for, except over ssh: bollard's ssh transport starts
/// one `ssh -M` master per connection, daemonised (`-f`, so no child of
/// ours) with `ControlPersist=yes`, and only the drop of that connection's
/// session (`ssh -O exit`, run by openssh's `Session::drop`) stops it. The
/// connections live in the runtime's tasks: dropped, with their sessions,
/// when the runtime shuts down, which must be waited for or the process
/// exits first and leaves every master running.
fn shut_down(runtime: tokio::runtime::Runtime) {
    let ssh = prebuilder::engine::endpoint::current()
        .is_some_and(|e| matches!(e.transport, prebuilder::engine::endpoint::Transport::Ssh));
    if ssh {
        runtime.shutdown_timeout(SSH_SHUTDOWN);
    } else {
        runtime.shutdown_background();
    }
}

/// The first SIGINT, SIGTERM or SIGHUP cancels the command (which cleans up
/// and exits 2, 143 or 129); a second one exits at once.
fn watch_signals(trigger: Trigger) {
    use tokio::signal::unix::{signal, SignalKind};
    let kinds = [
        (SignalKind::interrupt(), Signal::Interrupt),
        (SignalKind::terminate(), Signal::Terminate),
        (SignalKind::hangup(), Signal::Hangup),
    ];
    let mut streams = Vec::new();
    for (kind, which) in kinds {
        match signal(kind) {
            Ok(stream) => streams.push((stream, which)),
            Err(e) => tracing::warn!("cannot watch {}: {e}", which.name()),
        }
    }
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let next = futures_util::future::select_all(
                streams
                    .iter_mut()
                    .map(|(s, which)| Box::pin(async move { s.recv().await.map(|_| *which) })),
            );
            let Some(which) = next.await.0 else { return };
            if !first {
                eprintln!(
                    "prebuilder: {} again; exiting without clean-up",
                    which.name()
                );
                std::process::exit(which.exit_code());
            }
            first = false;
            let _ = trigger.send(Some(which));
        }
    });
}

async fn run_build(args: BuildArgs, reporter: &Stderr, cancel: &Cancel) -> Result<(), Error> {
    let report = build::run(&args, reporter, cancel).await?;
    let outputs = outputs::Outputs::new(args.iidfile.clone(), args.metadata_file.clone(), |k| {
        std::env::var(k).ok()
    });
    // stdout first: an unwritable output file must not hide the built image.
    if reporter.quiet && args.format == Format::Text {
        print_stdout(&outputs::quiet(&report));
    } else {
        print_report(&report, args.format);
    }
    outputs::write(&outputs, &report)
}

/// The error and each cause not already in its text, `: `-joined.
fn with_causes(e: &Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let shown = c.to_string();
        if !text.contains(&shown) {
            text = format!("{text}: {shown}");
        }
        cause = c.source();
    }
    text
}

async fn run_gc(args: GcArgs, cancel: &Cancel) -> Result<(), Error> {
    let engine = DockerEngine::connect().await?;
    let state_root = prebuilder::state::root();
    let report = tokio::select! {
        r = gc::run(&engine, args.repository.as_deref(), args.keep, args.dry_run, Some(&state_root.dir)) => r?,
        signal = cancel.cancelled() => return Err(Error::Interrupted { signal }),
    };
    print_stdout(&match args.format {
        Format::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        Format::Text => report.to_text(),
    });
    report.error().map_or(Ok(()), Err)
}

/// The report goes to stdout whatever it says; findings then make the exit status 1.
async fn run_check(args: CheckArgs, cancel: &Cancel) -> Result<(), Error> {
    let report = with_engine(cancel, async |e| check::run(e, &args).await).await?;
    print_stdout(&match args.format {
        Format::Json => report.to_json() + "\n",
        Format::Text => report.to_text(),
    });
    check::verdict(&report)
}

/// The verdict goes to stdout whatever it says; a disagreement then makes
/// the exit status 1.
async fn run_verify(args: VerifyArgs, cancel: &Cancel) -> Result<(), Error> {
    let verdict = cancellable(cancel, verify::run(&args)).await?;
    print_stdout(&match args.format {
        Format::Json => verdict.to_json(),
        Format::Text => verdict.to_text(),
    });
    verify::verdict(&verdict)
}

/// `f`, or [`Error::Interrupted`] on a signal.
async fn cancellable<T>(
    cancel: &Cancel,
    f: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::select! {
        r = f => r,
        signal = cancel.cancelled() => Err(Error::Interrupted { signal }),
    }
}

/// Connect, run, and remove whatever containers `f` left (signals included).
async fn with_engine<T>(
    cancel: &Cancel,
    f: impl AsyncFnOnce(&DockerEngine) -> Result<T, Error>,
) -> Result<T, Error> {
    let engine = DockerEngine::connect().await?;
    let outcome = tokio::select! {
        r = f(&engine) => r,
        signal = cancel.cancelled() => Err(Error::Interrupted { signal }),
    };
    engine.remove_leftovers().await;
    outcome
}

fn print_report(report: &Report, format: Format) {
    print_stdout(&match format {
        Format::Json => report.to_json() + "\n",
        Format::Text => report.to_text(),
    });
}

fn print_bytes(bytes: &[u8]) {
    let _ = std::io::stdout().lock().write_all(bytes);
}

fn print_stdout(text: &str) {
    // A closed stdout (`| head`) is not an error worth a failing status.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn init_logging(cli: &Cli) {
    // Other crates stay at warn even with -vv: HTTP clients' debug output
    // can carry request headers, and registry credentials travel in headers.
    let level = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            0 => "warn",
            1 => "warn,prebuilder=info",
            _ => "warn,prebuilder=debug",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PREBUILDER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr)
        .with_ansi(color)
        .without_time()
        .with_target(false)
        .init();
}

/// Progress on stderr: one line per step, the setup's own output indented
/// under its layer. `-q` silences both. The only place events become words.
struct Stderr {
    quiet: bool,
}

impl Reporter for Stderr {
    fn event(&self, event: Event<'_>) {
        if self.quiet {
            return;
        }
        if let Event::RegistrySkipped { reason } = event {
            tracing::warn!("{reason}; building locally");
            return;
        }
        if let Event::SetupOutput { layer, line } = event {
            // pip's lines, relayed: they may echo a URL with credentials.
            eprintln!("  {layer:>12} | {}", redact(line));
            return;
        }
        eprintln!("prebuilder: {}", redact(&words(&event)));
    }
}

fn words(event: &Event<'_>) -> String {
    match event {
        Event::LayerHit { layer, tag } => format!("{layer}: cache hit ({tag})"),
        Event::LayerBuilding { layer, artifacts } => {
            format!("{layer}: building ({artifacts} artifact(s))")
        }
        Event::BootBuilding { boot_ref, base } => {
            format!("boot: building (the boot of {boot_ref} on {base})")
        }
        Event::WaitingForLock => {
            "another prebuilder is building the same layer; waiting for it".into()
        }
        Event::CheckingBase { name } => {
            format!("checking {name} before installing anything (a probe container, no network)")
        }
        Event::CreatingContainer { layer, name } => {
            format!("{layer}: creating setup container {name}")
        }
        Event::Uploading {
            layer,
            files,
            bytes,
        } => format!(
            "{layer}: uploading {files} artifact(s), {:.1} MB",
            *bytes as f64 / 1e6
        ),
        Event::RunningSetup { layer, step } => format!("{layer}: running {step}"),
        Event::SetupOutput { layer, line } => format!("{layer} | {line}"),
        Event::Recording { layer, packages } => {
            format!("{layer}: recording {packages} installed package(s) in {RECORD_FILE}")
        }
        Event::WritingLayer { layer } => format!("{layer}: writing the layer"),
        Event::LoadingLayer { layer } => format!("{layer}: loading the layer"),
        Event::NoSnapshot { layer } => {
            format!("{layer}: the base has no GNU find/tar for a layer snapshot; committing")
        }
        Event::Committing { layer } => format!("{layer}: committing"),
        Event::BootCopying { boot_ref } => format!("boot: copying {BEAM_DIR} from {boot_ref}"),
        Event::BootCopied { bytes } => format!(
            "boot: copied {} (tar); committing with entrypoint {BOOT}",
            if *bytes < 1_000_000 {
                format!("{:.1} kB", *bytes as f64 / 1e3)
            } else {
                format!("{:.1} MB", *bytes as f64 / 1e6)
            }
        ),
        Event::RegistryHit {
            image,
            registry,
            digest,
        } => format!("registry hit: {image} is in {registry} ({digest})"),
        Event::RegistrySkipped { reason } => format!("{reason}; building locally"),
        Event::Pushing { reference } => format!("pushing {reference}"),
        Event::PushStatus { reference, status } => format!("push {reference}: {status}"),
        Event::AlreadyPushed { reference, digest } => format!(
            "{reference} is already in the registry ({digest}); same inputs, so it is not pushed again"
        ),
        Event::MovingTag {
            reference,
            from,
            to,
        } => format!("moving {reference} from {from} to {to}"),
        Event::BaseResolved { base, id, registry } => {
            format!("base {base}: image id {id} (read from {registry}, not pulled)")
        }
        Event::BootResolved { boot, id, registry } => {
            format!("--boot-from {boot}: image id {id} (read from {registry}, not pulled)")
        }
        Event::NothingPulled => "the base was not pulled: nothing to build".into(),
        Event::Pulling { reference } => format!("pulling {reference}"),
        Event::PullStatus { reference, status } => format!("pull {reference}: {status}"),
        Event::Pulled { reference } => format!("pulled {reference}"),
        Event::LayerFromRegistry { layer, reference } => format!(
            "{layer}: found in the registry as {reference}; pulling it instead of building it"
        ),
        Event::TaggedInRegistry { reference, digest } => {
            format!("tagged {reference} in the registry ({digest})")
        }
        Event::TagsNotApplied { image } => format!(
            "{image} is only in the registry: --tag not applied (pass --push to tag it there)"
        ),
        Event::Attestation {
            kind,
            subject,
            referrer,
            existing: false,
        } => format!("attached the {kind} document to {subject} ({referrer})"),
        Event::Attestation {
            kind,
            subject,
            referrer,
            existing: true,
        } => format!("{subject} has its {kind} document already ({referrer})"),
        Event::AttestationWritten { path } => format!("wrote {path}"),
        Event::AttestationsSkipped { reason } => {
            format!("no SBOM or provenance for this result: {reason}")
        }
    }
}

/// stderr for log events, scrubbed of credentials like every other line
/// prebuilder prints (a warning may quote a URL or an engine's message).
struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prebuilder::plan::LayerName;
    use prebuilder::progress::Layer;

    #[test]
    fn causes_are_printed_once() {
        let e = Error::Local {
            action: "writing the layer".into(),
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(
            with_causes(&e),
            "local I/O error while writing the layer: disk full"
        );
        let inner = std::io::Error::other(std::io::Error::other("connection reset"));
        let e = Error::Engine {
            action: "pushing".into(),
            source: Box::new(inner),
        };
        assert!(
            with_causes(&e).ends_with(": connection reset"),
            "{}",
            with_causes(&e)
        );
        assert_eq!(with_causes(&e).matches("connection reset").count(), 1);
    }

    #[test]
    fn events_keep_the_words_scripts_match() {
        let l = LayerName::Dependencies;
        assert_eq!(
            words(&Event::LayerBuilding {
                layer: l,
                artifacts: 3
            }),
            "dependencies: building (3 artifact(s))"
        );
        assert_eq!(
            words(&Event::LoadingLayer { layer: l }),
            "dependencies: loading the layer"
        );
        assert_eq!(
            words(&Event::LayerHit {
                layer: Layer::Boot,
                tag: "abc"
            }),
            "boot: cache hit (abc)"
        );
        assert_eq!(
            words(&Event::Uploading {
                layer: LayerName::Application,
                files: 2,
                bytes: 1_500_000
            }),
            "application: uploading 2 artifact(s), 1.5 MB"
        );
    }
}
