//! The `prebuilder` binary: parse, set up logging, run, map the result to an
//! exit status. stdout carries the report only; everything else goes to stderr.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use prebuilder::cli::{BuildArgs, CheckArgs, Cli, Command, Format, GcArgs};
use prebuilder::commands::{build, check, diff, digest, gc, inspect, template};
use prebuilder::engine::{DockerEngine, Engine};
use prebuilder::plan::LayerName;
use prebuilder::progress::Reporter;
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
            return ExitCode::from(2);
        }
    };
    let reporter = Stderr { quiet: cli.quiet };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Build(args) => run_build(*args, &reporter).await,
            Command::Gc(args) => run_gc(args).await,
            Command::Digest(args) => digest::run(&args).map(|out| print_stdout(&out)),
            Command::Check(args) => run_check(args).await,
            Command::Inspect(args) => with_engine(async |e| inspect::run(e, &args).await)
                .await
                .map(|out| print_stdout(&out)),
            Command::Diff(args) => with_engine(async |e| diff::run(e, &args).await)
                .await
                .map(|out| print_stdout(&out)),
            Command::Template(args) => template::run(&args).map(|out| print_stdout(&out)),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", redact(&e.to_string()));
            if let Some(hint) = e.hint() {
                eprintln!("hint: {}", redact(&hint));
            }
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

async fn run_build(args: BuildArgs, reporter: &Stderr) -> Result<(), Error> {
    build::validate(&args)?;
    let set = build::stage(&args).await?;
    let engine = DockerEngine::connect().await?;
    // Ctrl-C drops the build future; the engine then removes what it created.
    let outcome = tokio::select! {
        r = build::run(&engine, &args, &set, reporter) => r,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    };
    engine.remove_leftovers().await;
    let report = outcome?;
    if let Some(path) = &args.report {
        std::fs::write(path, report.to_json() + "\n").map_err(|source| Error::Report {
            path: path.clone(),
            source,
        })?;
    }
    print_report(&report, args.format);
    Ok(())
}

async fn run_gc(args: GcArgs) -> Result<(), Error> {
    let engine = DockerEngine::connect().await?;
    let report = gc::run(&engine, args.repository.as_deref(), args.keep, args.dry_run).await?;
    print_stdout(&match args.format {
        Format::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        Format::Text => report.to_text(),
    });
    report.error().map_or(Ok(()), Err)
}

/// The report goes to stdout whatever it says; findings then make the exit status 1.
async fn run_check(args: CheckArgs) -> Result<(), Error> {
    let report = with_engine(async |e| check::run(e, &args).await).await?;
    print_stdout(&match args.format {
        Format::Json => report.to_json() + "\n",
        Format::Text => report.to_text(),
    });
    check::verdict(&report)
}

/// Connect, run, and remove whatever containers `f` left (Ctrl-C included).
async fn with_engine<T>(
    f: impl AsyncFnOnce(&DockerEngine) -> Result<T, Error>,
) -> Result<T, Error> {
    let engine = DockerEngine::connect().await?;
    let outcome = tokio::select! {
        r = f(&engine) => r,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
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
/// under its layer. `-q` silences both.
struct Stderr {
    quiet: bool,
}

impl Reporter for Stderr {
    fn step(&self, message: &str) {
        if !self.quiet {
            eprintln!("prebuilder: {}", redact(message));
        }
    }

    fn output(&self, layer: LayerName, line: &str) {
        if !self.quiet {
            // pip's lines, relayed: they may echo a URL with credentials.
            eprintln!("  {layer:>12} | {}", redact(line));
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
