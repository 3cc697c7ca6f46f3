//! The `prebuilder` binary: parse, set up logging, run, map the result to an
//! exit status. stdout carries the report only (or, with --format json, the
//! error object of a failure); everything else goes to stderr, in the words
//! or JSON lines of `prebuilder::render`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use prebuilder::cancel::{Cancel, Signal, Trigger};
use prebuilder::cli::{BuildArgs, CheckArgs, Cli, Command, Format, GcArgs, Progress, VerifyArgs};
use prebuilder::commands::{build, check, diff, digest, gc, inspect, sbom, template, verify};
use prebuilder::engine::{DockerEngine, Engine};
use prebuilder::outputs;
use prebuilder::render::{Console, Failure};
use prebuilder::report::Report;
use prebuilder::settings::Settings;
use prebuilder::Error;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return refused(e),
    };
    let console = Console::new(cli.progress, cli.quiet);
    console.init_logging(cli.verbose);
    let format = stdout_format(&cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(source) => {
            let e = Error::Local {
                action: "starting the async runtime".into(),
                source,
            };
            return fail(&console, format, &e);
        }
    };
    // The environment, read once here and passed in (`prebuilder::settings`).
    let settings = Settings::from_process();
    let (trigger, cancel) = Cancel::new();
    let result = runtime.block_on(async {
        // Commands that talk to an engine clean up on a signal; digest and
        // template keep the default handlers (nothing to clean up).
        if !matches!(cli.command, Command::Digest(_) | Command::Template(_)) {
            watch_signals(trigger, console);
        }
        match cli.command {
            Command::Build(args) => run_build(*args, &settings, &console, &cancel).await,
            Command::Gc(args) => run_gc(args, &settings, &cancel).await,
            Command::Digest(args) => digest::run(&args).map(|out| print_stdout(&out)),
            Command::Check(args) => run_check(args, &settings, &cancel).await,
            Command::Inspect(args) => {
                with_engine(&settings, &cancel, async |e| inspect::run(e, &args).await)
                    .await
                    .map(|out| print_stdout(&out))
            }
            Command::Diff(args) => {
                with_engine(&settings, &cancel, async |e| diff::run(e, &args).await)
                    .await
                    .map(|out| print_stdout(&out))
            }
            Command::Sbom(args) => cancellable(&cancel, sbom::run(&args, &settings))
                .await
                .map(|out| print_bytes(&out)),
            Command::Verify(args) => run_verify(args, &settings, &cancel).await,
            Command::Template(args) => template::run(&args).map(|out| print_stdout(&out)),
        }
    });
    shut_down(runtime, &settings);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&console, format, &e),
    }
}

/// The error on stderr (words or a JSON line, as --progress says) and, with
/// --format json, as an object on stdout unless stdout already holds the
/// command's own report (`check`'s findings, `gc`'s partial removal).
fn fail(console: &Console, format: Format, e: &Error) -> ExitCode {
    let failure = Failure::of(e);
    console.failure(&failure);
    if format == Format::Json && !STDOUT_USED.load(Ordering::Relaxed) {
        print_stdout(&(failure.to_json() + "\n"));
    }
    ExitCode::from(failure.exit_code as u8)
}

/// A command line clap refused: help and --version as clap prints them; an
/// error as clap prints it, unless the command line asked for JSON
/// (`--progress json`, `--format json`), which clap could not parse for us.
fn refused(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let json_progress = asks(&args, "--progress", "json");
    let json_format = asks(&args, "--format", "json");
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || !(json_progress || json_format)
    {
        e.exit()
    }
    let failure = Failure::usage(&e);
    if json_progress {
        Console::new(Progress::Json, false).failure(&failure);
    } else {
        let _ = e.print();
    }
    if json_format {
        print_stdout(&(failure.to_json() + "\n"));
    }
    ExitCode::from(failure.exit_code as u8)
}

/// Whether `args` hold `FLAG VALUE` or `FLAG=VALUE`.
fn asks(args: &[String], flag: &str, value: &str) -> bool {
    args.windows(2).any(|w| w[0] == flag && w[1] == value)
        || args
            .iter()
            .any(|a| a.strip_prefix(flag).and_then(|rest| rest.strip_prefix('=')) == Some(value))
}

/// The --format of the command, for its failure.
fn stdout_format(command: &Command) -> Format {
    match command {
        Command::Build(a) => a.format,
        Command::Gc(a) => a.format,
        Command::Digest(a) => a.format,
        Command::Check(a) => a.format,
        Command::Inspect(a) => a.format,
        Command::Diff(a) => a.format,
        Command::Verify(a) => a.format,
        // Its stdout is the document: a failure prints no object there.
        Command::Sbom(_) => Format::Text,
        Command::Template(_) => Format::Text,
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
fn shut_down(runtime: tokio::runtime::Runtime, settings: &Settings) {
    use prebuilder::engine::endpoint::{resolve, Env, Transport};
    let ssh =
        resolve(&Env::from_settings(settings)).is_ok_and(|e| matches!(e.transport, Transport::Ssh));
    if ssh {
        runtime.shutdown_timeout(SSH_SHUTDOWN);
    } else {
        runtime.shutdown_background();
    }
}

/// The first SIGINT, SIGTERM or SIGHUP cancels the command (which cleans up
/// and exits 2, 143 or 129); a second one exits at once.
fn watch_signals(trigger: Trigger, console: Console) {
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
                console.notice(&format!("{} again; exiting without clean-up", which.name()));
                std::process::exit(which.exit_code());
            }
            first = false;
            let _ = trigger.send(Some(which));
        }
    });
}

async fn run_build(
    args: BuildArgs,
    settings: &Settings,
    console: &Console,
    cancel: &Cancel,
) -> Result<(), Error> {
    let report = build::run(&args, settings, console, cancel).await?;
    let outputs = outputs::Outputs::new(args.iidfile.clone(), args.metadata_file.clone(), |k| {
        settings.var(k).map(str::to_string)
    });
    // stdout first: an unwritable output file must not hide the built image.
    if console.quiet() && args.format == Format::Text {
        print_stdout(&outputs::quiet(&report));
    } else {
        print_report(&report, args.format);
    }
    outputs::write(&outputs, &report)
}

async fn run_gc(args: GcArgs, settings: &Settings, cancel: &Cancel) -> Result<(), Error> {
    let engine = DockerEngine::connect(settings).await?;
    let state_root = prebuilder::state::root(settings);
    let report = tokio::select! {
        r = gc::run(&engine, args.repository.as_deref(), args.keep, args.dry_run, Some(&state_root.dir)) => r.map_err(|e| e.named(&engine.name()))?,
        signal = cancel.cancelled() => return Err(Error::Interrupted { signal }),
    };
    print_stdout(&match args.format {
        Format::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        Format::Text => report.to_text(),
    });
    report.error().map_or(Ok(()), Err)
}

/// The report goes to stdout whatever it says; findings then make the exit status 1.
async fn run_check(args: CheckArgs, settings: &Settings, cancel: &Cancel) -> Result<(), Error> {
    let report = with_engine(settings, cancel, async |e| {
        check::run(e, &args, settings).await
    })
    .await?;
    print_stdout(&match args.format {
        Format::Json => report.to_json() + "\n",
        Format::Text => report.to_text(),
    });
    check::verdict(&report)
}

/// The verdict goes to stdout whatever it says; a disagreement then makes
/// the exit status 1.
async fn run_verify(args: VerifyArgs, settings: &Settings, cancel: &Cancel) -> Result<(), Error> {
    let verdict = cancellable(cancel, verify::run(&args, settings)).await?;
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
    settings: &Settings,
    cancel: &Cancel,
    f: impl AsyncFnOnce(&DockerEngine) -> Result<T, Error>,
) -> Result<T, Error> {
    let engine = DockerEngine::connect(settings).await?;
    let outcome = tokio::select! {
        r = f(&engine) => r,
        signal = cancel.cancelled() => Err(Error::Interrupted { signal }),
    };
    engine.remove_leftovers().await;
    outcome.map_err(|e| e.named(&engine.name()))
}

fn print_report(report: &Report, format: Format) {
    print_stdout(&match format {
        Format::Json => report.to_json() + "\n",
        Format::Text => report.to_text(),
    });
}

/// Whether the command wrote its output: a failure after it adds no second
/// JSON document to stdout.
static STDOUT_USED: AtomicBool = AtomicBool::new(false);

/// A document's bytes as they are (an SBOM).
fn print_bytes(bytes: &[u8]) {
    STDOUT_USED.store(true, Ordering::Relaxed);
    let _ = std::io::stdout().lock().write_all(bytes);
}

fn print_stdout(text: &str) {
    STDOUT_USED.store(true, Ordering::Relaxed);
    // A closed stdout (`| head`) is not an error worth a failing status.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
