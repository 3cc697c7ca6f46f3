//! Streams the artifacts of one layer into the setup container as a tar,
//! without holding the set in memory: a blocking task writes the tar into a
//! bounded channel of 1 MiB chunks that the HTTP body reads from.

use std::io::{self, Write};
use std::path::PathBuf;

use bytes::Bytes;
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
        tar.append_data(
            &mut h,
            format!("artifacts/{}", f.name),
            io::Read::take(file, size),
        )
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => upload_err(e),
            _ => Error::io(&f.path, e),
        })?;
    }
    let mut writer = tar.into_inner().map_err(upload_err)?;
    writer.flush().map_err(upload_err)
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
            },
            UploadFile {
                name: "sub/big.whl".into(),
                path: big,
                size: (3 * CHUNK + 5) as u64,
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
            }],
        );
        drop(rx);
        let err = handle.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("cancelled"), "{err}");
    }
}
