//! An image's facts for the rules: its config from the engine, the rest from
//! a probe container (the only part of `check` that talks to an engine).

use super::{ImageFacts, Probe, DEFAULT_ENV_VAR};
use crate::engine::{ops, Engine};
use crate::error::{Error, Result};

/// An image as the rules see it: its config from the engine, the rest from a
/// probe container. `name` is how messages call it.
pub async fn image_facts<E: Engine>(engine: &E, reference: &str, name: &str) -> Result<ImageFacts> {
    let info = ops::require(engine, reference, "image").await?;
    let out = ops::probe(engine, &info.id, super::image_command()).await?;
    let probe = if out.shell {
        Probe::parse(&out.stdout).ok_or_else(|| Error::ProbeFailed {
            image: name.to_string(),
            reason: format!(
                "the probe printed no result (exit status {}): {}",
                out.status,
                last_lines(&out.stderr, 5)
            ),
        })?
    } else {
        Probe::default()
    };
    Ok(ImageFacts {
        image: name.to_string(),
        id: info.id,
        os: out.os,
        architecture: out.architecture,
        shell: out.shell,
        entrypoint: info.entrypoint,
        cmd: info.cmd,
        default_environment: super::env_value(&info.env, DEFAULT_ENV_VAR),
        probe,
    })
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
