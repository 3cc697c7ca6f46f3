//! What prebuilder writes for people and for machines, from one set of typed
//! values: the library's progress [`Event`]s, log records (tracing) and the
//! final [`Error`]. `--progress auto|plain` turns them into English lines,
//! `--progress json` into one JSON object per line; both renderers start from
//! the same values, so neither can say what the other does not (buildx's
//! `--progress rawjson` beside its tty output). A failure with `--format json`
//! is also one [`Failure`] object on stdout. Only the binary calls this;
//! every line is scrubbed of credentials ([`redact`]) on the way out.

use std::io::{IsTerminal, Write};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::cli::Progress;
use crate::error::{Error, EXIT_USAGE};
use crate::plan::{BEAM_DIR, BOOT};
use crate::progress::{Event, Reporter};
use crate::record::RECORD_FILE;
use crate::redact::redact;

/// The `"v"` of every JSON line: raised only when a name or field changes
/// meaning or goes away (new events and new fields do not raise it).
pub const VERSION: u64 = 1;

/// Where progress, logs and the final error go: stderr, as `--progress`
/// says. `quiet` (`-q`) drops progress; the final error is always written.
#[derive(Debug, Clone, Copy)]
pub struct Console {
    mode: Progress,
    quiet: bool,
}

impl Console {
    pub fn new(mode: Progress, quiet: bool) -> Console {
        Console { mode, quiet }
    }

    pub fn json(&self) -> bool {
        self.mode == Progress::Json
    }

    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// The final error: `error:` and `hint:` lines, or one `error` object.
    pub fn failure(&self, failure: &Failure) {
        if self.json() {
            write_stderr(&failure.json_line());
        } else {
            write_stderr(&failure.text());
        }
    }

    /// A line that is no build event and must not wait for the log filter
    /// (a second signal, just before exiting): a `warn` log record in JSON.
    pub fn notice(&self, text: &str) {
        if self.json() {
            write_stderr(&log_line("warn", text, Map::new()));
        } else {
            write_stderr(&format!("prebuilder: {}", redact(text)));
        }
    }

    /// Route log records (tracing) to stderr in this console's mode.
    /// Other crates stay at warn even with -vv: HTTP clients' debug output
    /// can carry request headers, and registry credentials travel in headers.
    pub fn init_logging(&self, verbose: u8) {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let level = if self.quiet {
            "error"
        } else {
            match verbose {
                0 => "warn",
                1 => "warn,prebuilder=info",
                _ => "warn,prebuilder=debug",
            }
        };
        let filter = tracing_subscriber::EnvFilter::try_from_env("PREBUILDER_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        if self.json() {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(JsonLog)
                .try_init();
            return;
        }
        let color = self.mode == Progress::Auto
            && std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(|| RedactingStderr)
            .with_ansi(color)
            .without_time()
            .with_target(false)
            .try_init();
    }
}

/// Text: one line per step, the setup's own output indented under its
/// layer. JSON: one object per event.
impl Reporter for Console {
    fn event(&self, event: Event<'_>) {
        if self.quiet {
            return;
        }
        if self.json() {
            write_stderr(&json_line(&event));
            return;
        }
        match event {
            Event::RegistrySkipped { reason } => tracing::warn!("{reason}; building locally"),
            // pip's lines, relayed: they may echo a URL with credentials.
            Event::SetupOutput { layer, line } => {
                write_stderr(&format!("  {layer:>12} | {}", redact(line)))
            }
            _ => write_stderr(&format!("prebuilder: {}", redact(&words(&event)))),
        }
    }
}

/// One line (or several, for a multi-line error) on stderr in one write, so
/// lines of concurrent writers never interleave.
fn write_stderr(text: &str) {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The event as one JSON object: `"v"`, `"event"`, its fields, and `"text"`,
/// the words the text renderer prints for it (for people; never matched).
pub fn json_line(event: &Event<'_>) -> String {
    let (name, fields) = match serde_json::to_value(event) {
        Ok(Value::Object(mut fields)) => match fields.remove("event") {
            Some(Value::String(name)) => (name, fields),
            _ => (String::new(), fields),
        },
        _ => (String::new(), Map::new()),
    };
    record(&name, fields, &words(event))
}

/// `{"v":1,"event":NAME,<fields>,"text":TEXT}`, every string redacted. The
/// keys come in this order (fields sorted) for people reading the stream.
fn record(name: &str, fields: Map<String, Value>, text: &str) -> String {
    let mut out = format!("{{\"v\":{VERSION},\"event\":{}", Value::from(name));
    for (key, mut value) in fields {
        redact_strings(&mut value);
        out.push_str(&format!(",{}:{value}", Value::from(key)));
    }
    out.push_str(&format!(
        ",\"text\":{}}}",
        Value::from(redact(text).as_ref())
    ));
    out
}

/// Every string in `value`, redacted in place: field by field, so a mask can
/// never cut a JSON escape in half.
fn redact_strings(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(clean) = redact(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_strings),
        Value::Object(map) => map.values_mut().for_each(redact_strings),
        _ => {}
    }
}

/// A log record as a JSON line: `{"v":1,"event":"log","level":…,"text":…}`,
/// and `"fields"` when the record has fields besides its message.
fn log_line(level: &str, message: &str, fields: Map<String, Value>) -> String {
    let mut map = Map::new();
    map.insert("level".into(), Value::from(level));
    if !fields.is_empty() {
        map.insert("fields".into(), Value::Object(fields));
    }
    record("log", map, message)
}

/// The tracing layer of `--progress json`: each record one `log` line.
struct JsonLog;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for JsonLog {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = LogFields::default();
        event.record(&mut fields);
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        write_stderr(&log_line(&level, &fields.message, fields.others));
    }
}

#[derive(Default)]
struct LogFields {
    message: String,
    others: Map<String, Value>,
}

impl tracing::field::Visit for LogFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field.name(), value.to_string());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.put(field.name(), format!("{value:?}"));
    }
}

impl LogFields {
    fn put(&mut self, name: &str, value: String) {
        if name == "message" {
            self.message = value;
        } else {
            self.others.insert(name.to_string(), Value::from(value));
        }
    }
}

/// stderr for text log records, scrubbed of credentials like every other
/// line prebuilder prints (a warning may quote a URL or an engine's message).
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

/// A failed command, as machines read it: the object `--format json` prints
/// on stdout, and the fields of the `error` line of `--progress json`. Every
/// string is redacted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// What went wrong, naming the file, image or registry at fault.
    pub error: String,
    /// The next step, when there is one.
    pub hint: Option<String>,
    /// The process exit status (see `prebuilder build --help`).
    pub exit_code: i32,
    /// The error's causes, outermost first (each as its own message; the
    /// `error` text may already quote some of them).
    pub causes: Vec<String>,
}

impl Failure {
    pub fn of(e: &Error) -> Failure {
        let mut causes = Vec::new();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            causes.push(redact(&c.to_string()).into_owned());
            cause = c.source();
        }
        Failure {
            error: redact(&e.to_string()).into_owned(),
            hint: e.hint().map(|h| redact(&h).into_owned()),
            exit_code: e.exit_code(),
            causes,
        }
    }

    /// A command line clap refused (exit status 2): its first line is the
    /// error, the rest (tips, usage, `--help`) the hint.
    pub fn usage(e: &clap::Error) -> Failure {
        let rendered = e.render().to_string();
        let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines.next().unwrap_or_default();
        let error = match first.strip_prefix("error: ") {
            Some(message) => message.to_string(),
            None => e
                .kind()
                .as_str()
                .unwrap_or("the command line is not valid")
                .to_string(),
        };
        let hint = lines
            .filter(|l| !l.starts_with("error: "))
            .collect::<Vec<_>>()
            .join("; ");
        Failure {
            error: redact(&error).into_owned(),
            hint: Some(if hint.is_empty() {
                "run `prebuilder --help`".to_string()
            } else {
                redact(&hint).into_owned()
            }),
            exit_code: EXIT_USAGE,
            causes: Vec::new(),
        }
    }

    /// The object on stdout (`--format json`), one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The error and each cause not already in its text, `: `-joined.
    fn message(&self) -> String {
        let mut text = self.error.clone();
        for cause in &self.causes {
            if !text.contains(cause.as_str()) {
                text = format!("{text}: {cause}");
            }
        }
        text
    }

    /// As the text renderer prints it: `error: …` and `hint: …`.
    pub fn text(&self) -> String {
        match &self.hint {
            Some(hint) => format!("error: {}\nhint: {hint}", self.message()),
            None => format!("error: {}", self.message()),
        }
    }

    fn json_line(&self) -> String {
        let fields = match serde_json::to_value(self) {
            Ok(Value::Object(fields)) => fields,
            _ => Map::new(),
        };
        record("error", fields, &self.text())
    }
}

/// The English words for an event, as `--progress auto|plain` prints them
/// after `prebuilder: ` (and JSON lines carry as `"text"`). Free to improve:
/// machines read the event's name and fields.
pub fn words(event: &Event<'_>) -> String {
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
        Event::EarlyLayer {
            layer,
            part,
            index,
            of,
        } => format!("{layer}: {part}'s layer loaded while the setup runs ({index} of {of})"),
        Event::EarlyLayersDropped {
            layer,
            count,
            reason,
        } => format!(
            "{layer}: the {count} layer(s) made while the setup ran are not used ({reason}); \
             every layer is made from the snapshot"
        ),
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
        _ => registry_words(event),
    }
}

/// [`words`] for the events of registries, pulls and pushes.
fn registry_words(event: &Event<'_>) -> String {
    match event {
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
        // Every other event has its words in `words` (a test checks that
        // each event has some).
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests;
