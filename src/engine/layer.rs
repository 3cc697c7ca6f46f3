//! A layer of exactly what the setup changed, loaded as an image.
//!
//! `docker commit` diffs the container's whole filesystem against its image;
//! on storage drivers without a native diff (fuse-overlayfs, vfs) that walk
//! takes seconds even when pip changed a handful of files, and it dominated a
//! code-only rebuild. Instead the setup script snapshots what changed (see
//! `setup`): a tar of the paths whose ctime moved, and the list of deleted
//! paths. Here that becomes an image layer (whiteouts for deletions, the
//! record in place of pip's freeze), the image config is written from the
//! base's (`commit_config`), and both go to the engine as a `docker load`
//! archive that names only the new layer: the engine already holds the
//! parent's layers, and loading skips any layer it has.

use std::collections::BTreeSet;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bollard::errors::Error as BollardError;
use bollard::models::ContainerConfig;
use bollard::query_parameters::{DownloadFromContainerOptions, ImportImageOptions};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::docker::{engine_err, DockerEngine};
use super::setup::SNAPSHOT_DIR;
use super::{Engine, LayerBuild};
use crate::error::{Error, Result};
use crate::progress::Reporter;
use crate::record::RECORD_FILE;

const WHITEOUT_PREFIX: &str = ".wh.";

impl DockerEngine {
    /// Build and load the layer of a finished setup; the new image's id.
    /// `Ok(None)` when the setup left no snapshot (no GNU find/tar in the base).
    pub(super) async fn load_layer(
        &self,
        container: &str,
        build: &LayerBuild<'_>,
        config: &ContainerConfig,
        record: Option<&[u8]>,
        reporter: &dyn Reporter,
    ) -> Result<Option<String>> {
        let layer = build.layer;
        let tmp = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let snapshot = tmp.path().join("snapshot.tar");
        if !self
            .download_to(container, &format!("{SNAPSHOT_DIR}/layer.tar"), &snapshot)
            .await?
        {
            return Ok(None);
        }
        let deleted = self
            .download_file(container, &format!("{SNAPSHOT_DIR}/deleted"))
            .await?
            .unwrap_or_default();
        let parent = self
            .docker
            .inspect_image(build.from_image)
            .await
            .map_err(|e| engine_err(&format!("inspecting {}", build.from_image), e))?;
        let parent_layers = parent.root_fs.and_then(|r| r.layers).unwrap_or_default();
        let config_value = serde_json::to_value(config).map_err(|e| Error::Engine {
            action: "writing the image config".into(),
            reason: e.to_string(),
        })?;
        let os = parent.os.unwrap_or_else(|| "linux".into());
        let arch = parent.architecture.unwrap_or_else(|| "amd64".into());
        let record = record.map(<[u8]>::to_vec);
        let dir = tmp.path().to_path_buf();
        let podman = self.podman;
        reporter.step(&format!("{}: writing the layer", layer.name));
        let (archive, image_id) =
            tokio::task::spawn_blocking(move || -> io::Result<(PathBuf, String)> {
                let layer_tar = dir.join("layer.tar");
                let diff_id = write_layer(&snapshot, &deleted, record.as_deref(), &layer_tar)?;
                let mut diff_ids = parent_layers;
                diff_ids.push(diff_id);
                let config = image_config(&os, &arch, config_value, &diff_ids, now_rfc3339());
                let image_id = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
                let archive = dir.join("image.tar");
                write_archive(&archive, &config, diff_ids.len(), &layer_tar)?;
                if podman {
                    // Podman's docker-archive loader wants every layer file.
                    let oci = dir.join("image.oci.tar");
                    super::podman::oci_from_docker_archive(&archive, &oci)?;
                    return Ok((oci, image_id));
                }
                Ok((archive, image_id))
            })
            .await
            .map_err(|e| Error::Engine {
                action: "writing the layer".into(),
                reason: e.to_string(),
            })?
            .map_err(|e| Error::Engine {
                action: "writing the layer".into(),
                reason: e.to_string(),
            })?;

        reporter.step(&format!("{}: loading the layer", layer.name));
        let file = tokio::fs::File::open(&archive)
            .await
            .map_err(|e| Error::io(&archive, e))?;
        let mut out = self.docker.import_image(
            ImportImageOptions {
                quiet: true,
                ..Default::default()
            },
            bollard::body_try_stream(tokio_util::io::ReaderStream::new(file)),
            None,
        );
        while let Some(item) = out.next().await {
            item.map_err(|e| engine_err("loading the layer image", e))?;
        }
        match self.image(&image_id).await? {
            Some(_) => Ok(Some(image_id)),
            None => Err(Error::Engine {
                action: "loading the layer image".into(),
                reason: format!("the engine did not keep {image_id}"),
            }),
        }
    }

    /// Stream `path` out of a container into `to` (the engine's tar around
    /// it). `false` when the path does not exist.
    async fn download_to(&self, container: &str, path: &str, to: &Path) -> Result<bool> {
        let action = || format!("reading {path} from container {container}");
        let mut file = tokio::fs::File::create(to)
            .await
            .map_err(|e| Error::io(to, e))?;
        let mut stream = self.docker.download_from_container(
            container,
            Some(DownloadFromContainerOptions {
                path: path.to_string(),
            }),
        );
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => file.write_all(&bytes).await.map_err(|e| Error::io(to, e))?,
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Ok(false),
                Err(e) => return Err(engine_err(&action(), e)),
            }
        }
        file.flush().await.map_err(|e| Error::io(to, e))?;
        Ok(true)
    }
}

/// `./usr/lib/x` → `usr/lib/x`; `.` and `./` → `` (the root, never an entry).
fn relative(path: &str) -> &str {
    let p = path.strip_prefix("./").unwrap_or(path);
    let p = p.trim_end_matches('/');
    if p == "." {
        ""
    } else {
        p.trim_start_matches('/')
    }
}

/// Deleted paths (NUL-separated) reduced to the topmost: a whiteout of a
/// directory hides everything under it, and an entry under it would recreate it.
fn topmost_deleted(list: &[u8]) -> Vec<String> {
    let mut all: Vec<String> = list
        .split(|b| *b == 0)
        .filter_map(|p| std::str::from_utf8(p).ok())
        .map(relative)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    all.sort();
    let mut kept: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for p in all {
        let covered = Path::new(&p)
            .ancestors()
            .skip(1)
            .any(|a| kept.contains(a.to_string_lossy().as_ref()));
        if !covered {
            kept.insert(p.clone());
            out.push(p);
        }
    }
    out
}

fn whiteout(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/{WHITEOUT_PREFIX}{name}"),
        None => format!("{WHITEOUT_PREFIX}{path}"),
    }
}

/// Writes what it is given and digests it: the layer's diff id.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The layer tar from the snapshot (`outer`: the engine's tar holding
/// `layer.tar`), whiteouts for `deleted`, and `record` at [`RECORD_FILE`].
/// Returns the diff id (`sha256:` of the uncompressed layer).
fn write_layer(
    outer: &Path,
    deleted: &[u8],
    record: Option<&[u8]>,
    out: &Path,
) -> io::Result<String> {
    let mut outer = tar::Archive::new(std::fs::File::open(outer)?);
    let mut entries = outer.entries()?;
    let inner = loop {
        match entries.next() {
            Some(e) => {
                let e = e?;
                if e.header().entry_type().is_file() {
                    break e;
                }
            }
            None => return Err(io::Error::other("the snapshot holds no layer.tar")),
        }
    };
    let file = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let mut builder = tar::Builder::new(Hashing {
        inner: file,
        hasher: Sha256::new(),
    });
    copy_entries(inner, &mut builder, record.is_some())?;
    for p in topmost_deleted(deleted) {
        builder.append_data(&mut file_header(0, 0o600), whiteout(&p), io::empty())?;
    }
    if let Some(content) = record {
        let mut h = file_header(content.len() as u64, 0o644);
        builder.append_data(&mut h, relative(RECORD_FILE), content)?;
    }
    let mut hashing = builder.into_inner()?;
    hashing.flush()?;
    Ok(format!("sha256:{}", hex::encode(hashing.hasher.finalize())))
}

/// A regular file owned by root, dated now.
fn file_header(size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    h
}

/// Every entry of the snapshot's tar, with its header (owner, mode, times,
/// links) as GNU tar wrote it and paths made relative to the root.
fn copy_entries<R: Read, W: Write>(
    inner: R,
    builder: &mut tar::Builder<W>,
    skip_record: bool,
) -> io::Result<()> {
    let mut archive = tar::Archive::new(inner);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let path = relative(&raw).to_string();
        if path.is_empty() || (skip_record && path == relative(RECORD_FILE)) {
            continue;
        }
        let mut header = entry.header().clone();
        match header.entry_type() {
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                builder.append_link(&mut header, &path, target)?;
            }
            tar::EntryType::Link => {
                // Hard links name another entry of the same tar: make it relative too.
                let target = entry
                    .link_name()?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                builder.append_link(&mut header, &path, relative(&target))?;
            }
            _ => builder.append_data(&mut header, &path, &mut entry)?,
        }
    }
    Ok(())
}

/// The image config (Docker's format, which OCI's shares): the given
/// container config and the layers' diff ids.
fn image_config(
    os: &str,
    arch: &str,
    config: serde_json::Value,
    diff_ids: &[String],
    created: String,
) -> Vec<u8> {
    let doc = serde_json::json!({
        "architecture": arch,
        "os": os,
        "created": created,
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    doc.to_string().into_bytes()
}

/// A `docker load` archive: config, manifest, and the last layer's file only.
fn write_archive(path: &Path, config: &[u8], layers: usize, layer_tar: &Path) -> io::Result<()> {
    let names: Vec<String> = (0..layers).map(|i| format!("{i}/layer.tar")).collect();
    let manifest =
        serde_json::json!([{ "Config": "config.json", "RepoTags": null, "Layers": names }])
            .to_string();
    let mut b = tar::Builder::new(BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path)?,
    ));
    for (name, bytes) in [
        ("config.json", config),
        ("manifest.json", manifest.as_bytes()),
    ] {
        b.append_data(&mut file_header(bytes.len() as u64, 0o644), name, bytes)?;
    }
    if let Some(last) = names.last() {
        b.append_path_with_name(layer_tar, last)?;
    }
    b.into_inner()?.flush()
}

/// Now as RFC 3339 UTC (the config's `created`, which `gc` sorts by).
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

fn rfc3339(secs: u64) -> String {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative("./usr/lib/x"), "usr/lib/x");
        assert_eq!(relative("./"), "");
        assert_eq!(relative("."), "");
        assert_eq!(relative("./etc/"), "etc");
    }

    #[test]
    fn whiteouts_only_for_topmost_deleted_paths() {
        let list = b"./olddir\0./olddir/f\0./olddir/sub/g\0./gone.txt\0./olddir-sibling\0\0";
        assert_eq!(
            topmost_deleted(list),
            ["gone.txt", "olddir", "olddir-sibling"]
        );
        assert_eq!(whiteout("usr/lib/x.py"), "usr/lib/.wh.x.py");
        assert_eq!(whiteout("top"), ".wh.top");
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_219_199), "2026-11-20T23:59:59Z");
    }

    fn snapshot_tar(dir: &Path) -> PathBuf {
        // What the engine hands out: a tar holding the snapshot's layer.tar,
        // itself as GNU tar writes it with `-C /` (./ paths).
        let mut inner = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, body: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(body.len() as u64);
            h.set_mode(0o755);
            h.set_uid(1000);
            h.set_mtime(1_700_000_000);
            match link {
                Some(t) => inner.append_link(&mut h, path, t).unwrap(),
                None => inner.append_data(&mut h, path, body).unwrap(),
            }
        };
        add("./", tar::EntryType::Directory, b"", None);
        add(
            "./usr/lib/python3/dist-packages/slugify/",
            tar::EntryType::Directory,
            b"",
            None,
        );
        add(
            "./usr/lib/python3/dist-packages/slugify/__init__.py",
            tar::EntryType::Regular,
            b"x = 1\n",
            None,
        );
        add(
            "./usr/bin/slugify",
            tar::EntryType::Symlink,
            b"",
            Some("../lib/slugify.py"),
        );
        add(
            "./usr/bin/slugify-hard",
            tar::EntryType::Link,
            b"",
            Some("./usr/lib/python3/dist-packages/slugify/__init__.py"),
        );
        add(
            "./opt/apache/beam/prebuilder-record.json",
            tar::EntryType::Regular,
            b"# python 3.11\nfreeze\n",
            None,
        );
        let inner = inner.into_inner().unwrap();
        let mut outer = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(inner.len() as u64);
        h.set_mode(0o644);
        outer.append_data(&mut h, "layer.tar", &inner[..]).unwrap();
        let path = dir.join("snapshot.tar");
        std::fs::write(&path, outer.into_inner().unwrap()).unwrap();
        path
    }

    #[test]
    fn layer_keeps_headers_adds_whiteouts_and_replaces_the_record() {
        assert_eq!(
            RECORD_FILE, "/opt/apache/beam/prebuilder-record.json",
            "the fixture below names it"
        );
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("layer.tar");
        let diff_id = write_layer(
            &snapshot_tar(dir.path()),
            b"./old\0./old/x\0",
            Some(b"{\"record\": 1}"),
            &out,
        )
        .unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(
            diff_id,
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
        );
        let mut a = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let (uid, mode) = (e.header().uid().unwrap(), e.header().mode().unwrap());
            let mut body = String::new();
            e.read_to_string(&mut body).unwrap();
            seen.push((path, link, uid, mode, body));
        }
        let paths: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "usr/lib/python3/dist-packages/slugify",
                "usr/lib/python3/dist-packages/slugify/__init__.py",
                "usr/bin/slugify",
                "usr/bin/slugify-hard",
                ".wh.old",
                "opt/apache/beam/prebuilder-record.json",
            ]
        );
        assert_eq!(seen[1].2, 1000, "owners are kept");
        assert_eq!(seen[1].3, 0o755, "modes are kept");
        assert_eq!(
            seen[2].1.as_deref(),
            Some("../lib/slugify.py"),
            "symlink targets are kept"
        );
        assert_eq!(
            seen[3].1.as_deref(),
            Some("usr/lib/python3/dist-packages/slugify/__init__.py"),
            "hard links point at the relative entry"
        );
        assert_eq!(
            seen[5].4, "{\"record\": 1}",
            "the record replaces pip's freeze"
        );
    }

    #[test]
    fn archive_names_every_layer_but_carries_only_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer.tar");
        std::fs::write(&layer, b"layer bytes").unwrap();
        let config = image_config(
            "linux",
            "amd64",
            serde_json::json!({"Entrypoint": ["/opt/apache/beam/boot"]}),
            &["sha256:a".into(), "sha256:b".into()],
            rfc3339(0),
        );
        let archive = dir.path().join("image.tar");
        write_archive(&archive, &config, 2, &layer).unwrap();
        let mut a = tar::Archive::new(std::fs::File::open(&archive).unwrap());
        let mut files = std::collections::BTreeMap::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            files.insert(e.path().unwrap().to_string_lossy().into_owned(), body);
        }
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["1/layer.tar", "config.json", "manifest.json"]
        );
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(
            manifest[0]["Layers"],
            serde_json::json!(["0/layer.tar", "1/layer.tar"])
        );
        let config: serde_json::Value = serde_json::from_slice(&files["config.json"]).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!(["sha256:a", "sha256:b"])
        );
        assert_eq!(config["config"]["Entrypoint"][0], "/opt/apache/beam/boot");
        assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    }
}
