//! Streams the artifacts of one layer into the setup container as a tar,
//! without holding the set in memory: a blocking task writes the tar into a
//! bounded channel of 1 MiB chunks that the HTTP body reads from.

use std::io::{self, Write};
use std::path::PathBuf;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::stage::MANIFEST_FILE;

const CHUNK: usize = 1 << 20;
/// Chunks in flight: bounds the upload's memory to a few MiB whatever the set's size.
const IN_FLIGHT: usize = 4;

/// One file of the upload: its name under `artifacts/` and where its bytes are.
#[derive(Debug, Clone)]
pub struct UploadFile {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// The sha256 the bytes must have, when the digest was taken from
    /// another file (the original of a Beam copy, `crate::stage::Artifact::origin`):
    /// checked while the bytes stream, and a mismatch fails the upload
    /// before the tar is complete, so they never reach an image.
    pub verify: Option<String>,
}

pub type Chunks = mpsc::Receiver<io::Result<Bytes>>;

/// Start writing the tar of `artifacts/` (the manifest first, then the files).
/// Entries are relative to the upload directory (`/opt/apache/beam`).
/// The join handle yields the writer's own error, which names the file at fault.
pub fn start(
    manifest: String,
    files: Vec<UploadFile>,
) -> (Chunks, tokio::task::JoinHandle<Result<()>>) {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let handle = tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = write_tar(writer, &manifest, &files);
        if let Err(e) = &result {
            // Fail the HTTP body too, so the engine does not see a short tar as complete.
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
        result
    });
    (rx, handle)
}

fn write_tar(writer: ChannelWriter, manifest: &str, files: &[UploadFile]) -> Result<()> {
    let upload_err = |e: io::Error| Error::Engine {
        engine: String::new(),
        action: "streaming the artifacts into the setup container".into(),
        source: Box::new(e),
    };
    let mut tar = tar::Builder::new(writer);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut dirs = std::collections::BTreeSet::new();
    dirs.insert("artifacts".to_string());
    for f in files {
        let mut parts: Vec<&str> = f.name.split('/').collect();
        parts.pop();
        for i in 1..=parts.len() {
            dirs.insert(format!("artifacts/{}", parts[..i].join("/")));
        }
    }
    for d in &dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, format!("{d}/"), io::empty())
            .map_err(upload_err)?;
    }
    let mut h = header(tar::EntryType::Regular, 0o644, manifest.len() as u64);
    tar.append_data(
        &mut h,
        format!("artifacts/{MANIFEST_FILE}"),
        manifest.as_bytes(),
    )
    .map_err(upload_err)?;
    for f in files {
        let file = std::fs::File::open(&f.path).map_err(|e| Error::io(&f.path, e))?;
        let size = file.metadata().map_err(|e| Error::io(&f.path, e))?.len();
        if size != f.size {
            return Err(Error::Io {
                path: f.path.clone(),
                source: io::Error::other(format!(
                    "changed while prebuilder was running ({} bytes when digested, {size} now); run again",
                    f.size
                )),
            });
        }
        let mut h = header(tar::EntryType::Regular, 0o644, size);
        // `take` guards against the file growing after the size check.
        let mut bytes = Verifying {
            inner: io::Read::take(file, size),
            hasher: f.verify.as_ref().map(|_| Sha256::new()),
            expected: f.verify.as_deref(),
            actual: None,
        };
        let appended = tar.append_data(&mut h, format!("artifacts/{}", f.name), &mut bytes);
        if let (Some(expected), Some(actual)) = (&f.verify, bytes.actual) {
            return Err(Error::DigestMismatch {
                path: f.path.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        appended.map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => upload_err(e),
            _ => Error::io(&f.path, e),
        })?;
    }
    let mut writer = tar.into_inner().map_err(upload_err)?;
    writer.flush().map_err(upload_err)
}

/// Passes bytes through; with a hasher, at the end it compares their
/// sha256 with `expected` and, when they differ, keeps the digest in
/// `actual` and fails the read (so the entry, and the tar, are never complete).
struct Verifying<'a, R> {
    inner: R,
    hasher: Option<Sha256>,
    expected: Option<&'a str>,
    actual: Option<String>,
}

impl<R: io::Read> io::Read for Verifying<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = &mut self.hasher {
            if n > 0 {
                hasher.update(&buf[..n]);
            } else if !buf.is_empty() {
                let actual = hex::encode(std::mem::take(hasher).finalize());
                self.hasher = None;
                if self
                    .expected
                    .is_some_and(|e| !e.eq_ignore_ascii_case(&actual))
                {
                    self.actual = Some(actual);
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the staged file is not the file its digest was taken from",
                    ));
                }
            }
        }
        Ok(n)
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// `Write` into the channel in 1 MiB chunks; a closed channel (the upload was
/// cancelled or failed) stops the writer with `BrokenPipe`.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload was cancelled"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(mut rx: Chunks) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        while let Some(c) = rx.recv().await {
            all.extend_from_slice(&c?);
        }
        Ok(all)
    }

    #[tokio::test]
    async fn tar_holds_manifest_dirs_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.whl");
        std::fs::write(&big, vec![7u8; 3 * CHUNK + 5]).unwrap();
        let small = dir.path().join("req");
        std::fs::write(&small, "six\n").unwrap();
        let files = vec![
            UploadFile {
                name: "requirements.txt".into(),
                path: small,
                size: 4,
                verify: None,
            },
            UploadFile {
                name: "sub/big.whl".into(),
                path: big,
                size: (3 * CHUNK + 5) as u64,
                verify: None,
            },
        ];
        let (rx, handle) = start("[]".into(), files);
        let bytes = collect(rx).await.unwrap();
        handle.await.unwrap().unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let entries: Vec<(String, u64, u32)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.size(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "artifacts/",
                "artifacts/sub/",
                "artifacts/artifacts_info.json",
                "artifacts/requirements.txt",
                "artifacts/sub/big.whl"
            ]
        );
        assert_eq!(entries[4].1, (3 * CHUNK + 5) as u64);
        assert_eq!(entries[3].2, 0o644);
    }

    #[tokio::test]
    async fn a_file_that_changed_size_fails_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pkg.whl");
        std::fs::write(&f, "abc").unwrap();
        let (rx, handle) = start(
            "[]".into(),
            vec![UploadFile {
                name: "pkg.whl".into(),
                path: f.clone(),
                size: 99,
                verify: None,
            }],
        );
        let body = collect(rx).await;
        assert!(body.is_err(), "the body fails too");
        let err = handle.await.unwrap().unwrap_err();
        assert!(err.to_string().contains(&f.display().to_string()), "{err}");
        assert!(
            err.to_string()
                .contains("changed while prebuilder was running"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_dropped_receiver_stops_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big.whl");
        std::fs::write(&f, vec![0u8; 16 * CHUNK]).unwrap();
        let (rx, handle) = start(
            "[]".into(),
            vec![UploadFile {
                name: "big.whl".into(),
                path: f,
                size: (16 * CHUNK) as u64,
                verify: None,
            }],
        );
        drop(rx);
        let err = handle.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("cancelled"), "{err}");
    }

    /// Issue 22: a digest taken from a Beam copy's original decides the
    /// lookup; the copy's own bytes are checked on their way in.
    #[tokio::test]
    async fn a_copy_that_is_not_its_original_fails_before_the_tar_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("pkg.whl");
        let bytes = vec![3u8; 2 * CHUNK + 11];
        std::fs::write(&copy, &bytes).unwrap();
        let file = |sha: String| UploadFile {
            name: "pkg.whl".into(),
            path: copy.clone(),
            size: bytes.len() as u64,
            verify: Some(sha),
        };
        let right = hex::encode(Sha256::digest(&bytes));
        let (rx, handle) = start("[]".into(), vec![file(right.clone())]);
        let body = collect(rx).await.unwrap();
        handle.await.unwrap().unwrap();
        assert_eq!(tar::Archive::new(&body[..]).entries().unwrap().count(), 3);

        let wrong = hex::encode(Sha256::digest(b"the original"));
        let (rx, handle) = start("[]".into(), vec![file(wrong.clone())]);
        assert!(collect(rx).await.is_err(), "the body fails too");
        match handle.await.unwrap() {
            Err(Error::DigestMismatch {
                path,
                expected,
                actual,
            }) => {
                assert_eq!(path, copy);
                assert_eq!(expected, wrong);
                assert_eq!(actual, right);
            }
            other => panic!("{other:?}"),
        }
    }
}
