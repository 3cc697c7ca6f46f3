//! `prebuilder digest`: what the cache key sees of each file, so a user can
//! tell why a key changed (or did not), and the benchmark can time hashing.

use std::time::Instant;

use serde::Serialize;

use crate::cli::{DigestArgs, Format};
use crate::error::Result;
use crate::stage::digest::digest_file;

#[derive(Debug, Serialize)]
pub struct FileReport {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub content_digest: String,
    pub seconds: f64,
}

/// Digest every file (each read once) and render the result for stdout.
pub fn run(args: &DigestArgs) -> Result<String> {
    let mut reports = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let t = Instant::now();
        let d = digest_file(path)?;
        reports.push(FileReport {
            path: path.display().to_string(),
            size: d.size,
            sha256: d.sha256,
            content_digest: d.content_digest,
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    Ok(match args.format {
        Format::Json => serde_json::to_string_pretty(&reports).unwrap_or_default() + "\n",
        Format::Text => reports
            .iter()
            .map(|r| {
                let content = if r.content_digest == r.sha256 {
                    "same as bytes".to_string()
                } else {
                    r.content_digest.clone()
                };
                format!(
                    "{}\n  size     {} bytes\n  sha256   {}\n  content  {}\n  {:.0} MB/s\n",
                    r.path,
                    r.size,
                    r.sha256,
                    content,
                    r.size as f64 / 1e6 / r.seconds.max(1e-9)
                )
            })
            .collect(),
    })
}
