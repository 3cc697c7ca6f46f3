//! Pure image assembly: the layer tar of a setup's snapshot (whiteouts for
//! deletions, the record in place of pip's freeze), the image config, and the
//! `docker load` archive that names only the new layer. No I/O beyond the
//! readers and writers it is handed; `crate::build::layer` does the engine side.
//!
//! Why: `docker commit` diffs the container's whole filesystem against its
//! image; on storage drivers without a native diff (fuse-overlayfs, vfs) that
//! walk takes seconds even when pip changed a handful of files. The setup
//! script snapshots what changed instead (`crate::build::setup`); here that
//! becomes a layer, and the engine, which holds the parent's layers already,
//! loads only the new one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::plan::BOOT;

pub mod export;
pub mod reproducible;
pub mod split;

const WHITEOUT_PREFIX: &str = ".wh.";

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
    /// Bytes written so far.
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The layer tar from the snapshot (`outer`: the engine's tar holding
/// `layer.tar`), whiteouts for `deleted`, and `record` (absolute path,
/// content) in place of what the snapshot holds at that path, every header
/// normalised to `epoch` (see [`reproducible`]).
/// Returns the diff id (`sha256:` of the uncompressed layer).
pub fn write_layer<R: Read, W: Write>(
    outer: R,
    deleted: &[u8],
    record: Option<(&str, &[u8])>,
    epoch: u64,
    out: W,
) -> io::Result<String> {
    let mut outer = tar::Archive::new(outer);
    let mut entries = outer.entries()?;
    let inner = inner_tar(&mut entries, "the snapshot holds no layer.tar")?;
    write_layer_from(inner, deleted, record, epoch, out)
}

/// [`write_layer`] from the snapshot's `layer.tar` itself (`inner`): the
/// entries it holds, whiteouts for `deleted`, then `record`. Direct mode
/// (`crate::direct::layer`) writes its layer through this too, so both
/// builders share the epoch, order and owner rules.
pub fn write_layer_from<R: Read, W: Write>(
    inner: R,
    deleted: &[u8],
    record: Option<(&str, &[u8])>,
    epoch: u64,
    out: W,
) -> io::Result<String> {
    let mut builder = tar::Builder::new(Hashing {
        inner: out,
        hasher: Sha256::new(),
        written: 0,
    });
    copy_entries(
        inner,
        &mut builder,
        record.map(|(path, _)| relative(path)),
        epoch,
    )?;
    for p in topmost_deleted(deleted) {
        builder.append_data(&mut file_header(0, 0o600, epoch), whiteout(&p), io::empty())?;
    }
    if let Some((path, content)) = record {
        let mut h = file_header(content.len() as u64, 0o644, epoch);
        builder.append_data(&mut h, relative(path), content)?;
    }
    let mut hashing = builder.into_inner()?;
    hashing.flush()?;
    Ok(format!("sha256:{}", hex::encode(hashing.hasher.finalize())))
}

/// A regular file owned by root, dated `mtime`.
fn file_header(size: u64, mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every entry of the snapshot's tar, in its order (the setup script sorts
/// it), with its header (owner, mode, links) as GNU tar wrote it, times
/// normalised to `epoch` and paths made relative to the root.
fn copy_entries<R: Read, W: Write>(
    inner: R,
    builder: &mut tar::Builder<W>,
    skip: Option<&str>,
    epoch: u64,
) -> io::Result<()> {
    let mut archive = tar::Archive::new(inner);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let path = relative(&raw).to_string();
        if path.is_empty() || skip == Some(path.as_str()) {
            continue;
        }
        let mut header = entry.header().clone();
        reproducible::normalize_header(&mut header, epoch);
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
/// container config, the layers' diff ids and the history (`docker history`).
pub fn image_config(
    os: &str,
    arch: &str,
    config: serde_json::Value,
    diff_ids: &[String],
    created: String,
    history: Vec<serde_json::Value>,
) -> Vec<u8> {
    let doc = serde_json::json!({
        "architecture": arch,
        "os": os,
        "created": created,
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    });
    doc.to_string().into_bytes()
}

/// A `docker load` archive: config, manifest, and the last layer's file only
/// (`layer_tar`, `layer_size` bytes).
pub fn write_archive<W: Write, R: Read>(
    out: W,
    config: &[u8],
    layers: usize,
    layer_tar: R,
    layer_size: u64,
) -> io::Result<W> {
    write_archive_layers(out, config, layers, vec![(layer_tar, layer_size)])
}

/// A `docker load` archive: config, manifest, and the files of the last
/// `new.len()` layers only (each a reader and its size, bottom up): the
/// layers of a split (`split::split_tree`) load in one archive.
pub fn write_archive_layers<W: Write, R: Read>(
    out: W,
    config: &[u8],
    layers: usize,
    new: Vec<(R, u64)>,
) -> io::Result<W> {
    let names = layer_names(layers);
    let manifest = archive_manifest(&names);
    let mut b = tar::Builder::new(out);
    for (name, bytes) in [
        ("config.json", config),
        ("manifest.json", manifest.as_bytes()),
    ] {
        b.append_data(&mut file_header(bytes.len() as u64, 0o644, 0), name, bytes)?;
    }
    let first_new = names.len().saturating_sub(new.len());
    for (name, (layer_tar, layer_size)) in names[first_new..].iter().zip(new) {
        b.append_data(&mut file_header(layer_size, 0o644, 0), name, layer_tar)?;
    }
    let mut out = b.into_inner()?;
    out.flush()?;
    Ok(out)
}

/// The pieces of a load archive of one new layer, for loading a split's
/// layers one request each ([`write_archive_layers`]'s names, the layer
/// first): the tar header of layer `index` (of `size` bytes), the padding
/// after its bytes, and the tail (the config of the image with `layers`
/// layers, the manifest, the end of the archive). The engine reads the
/// manifest only once the archive is in, so the tail may wait.
pub fn archive_one_layer(
    index: usize,
    size: u64,
    config: &[u8],
    layers: usize,
) -> io::Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let mut h = file_header(size, 0o644, 0);
    h.set_path(format!("{index}/layer.tar"))?;
    h.set_cksum();
    let head = h.as_bytes().to_vec();
    let pad = vec![0u8; ((512 - size % 512) % 512) as usize];
    let manifest = archive_manifest(&layer_names(layers));
    let tail = files_tar(
        &[
            ("config.json", config),
            ("manifest.json", manifest.as_bytes()),
        ],
        0,
    )?;
    Ok((head, pad, tail))
}

/// A load archive's layer file names: `<i>/layer.tar` for `layers` layers.
fn layer_names(layers: usize) -> Vec<String> {
    (0..layers).map(|i| format!("{i}/layer.tar")).collect()
}

/// A load archive's `manifest.json`: one untagged image, `config.json`,
/// the layer files `names`.
fn archive_manifest(names: &[String]) -> String {
    serde_json::json!([{ "Config": "config.json", "RepoTags": null, "Layers": names }]).to_string()
}

/// The first file in the engine's tar around a file (what its archive API
/// gives for one file: the setup's `layer.tar`, a part of it); `missing`
/// says what was expected when there is none.
pub(crate) fn inner_tar<'a, R: Read>(
    entries: &mut tar::Entries<'a, R>,
    missing: &str,
) -> io::Result<tar::Entry<'a, R>> {
    for e in entries {
        let e = e?;
        if e.header().entry_type().is_file() {
            return Ok(e);
        }
    }
    Err(io::Error::other(missing.to_string()))
}

/// The image id of a config: `sha256:` of its bytes.
pub fn image_id(config: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(config)))
}

/// A tar of one regular file (mode 0644, root, dated now).
pub fn single_file_tar(name: &str, content: &[u8]) -> io::Result<Vec<u8>> {
    files_tar(&[(name, content)], now_secs())
}

/// A tar of regular files (name, content; mode 0644, root, dated `mtime`),
/// in that order.
pub fn files_tar(files: &[(&str, &[u8])], mtime: u64) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        builder.append_data(
            &mut file_header(content.len() as u64, 0o644, mtime),
            name,
            *content,
        )?;
    }
    builder.into_inner()
}

/// A tar of empty root-owned 0755 directories (`opt/`, `opt/apache/`, …).
pub fn dirs_tar(dirs: &[&str]) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for d in dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        builder.append_data(&mut h, d, io::empty())?;
    }
    builder.into_inner()
}

/// Seconds since the epoch as RFC 3339 UTC (a reproducible layer's `created`).
pub fn rfc3339(secs: u64) -> String {
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

/// Fields of a container config that an image config keeps: a commit or a
/// load writes exactly these from the base, never the setup container's.
const IMAGE_CONFIG_FIELDS: [&str; 12] = [
    "User",
    "ExposedPorts",
    "Env",
    "Cmd",
    "Healthcheck",
    "ArgsEscaped",
    "Volumes",
    "WorkingDir",
    "OnBuild",
    "StopSignal",
    "Shell",
    "Entrypoint",
];

/// The config of a layer image (Engine API JSON): the *base image's*
/// (entrypoint, cmd, env, working dir, user, …) plus `labels` on top of the
/// base's. With neither entrypoint nor cmd the boot becomes the entrypoint
/// (else the engine would keep the setup script).
pub fn layer_config(
    base: &serde_json::Value,
    labels: &BTreeMap<String, String>,
) -> serde_json::Value {
    use serde_json::Value;
    let mut out = serde_json::Map::new();
    for field in IMAGE_CONFIG_FIELDS {
        if let Some(v) = base.get(field).filter(|v| !v.is_null()) {
            out.insert(field.to_string(), v.clone());
        }
    }
    let mut all = base
        .get("Labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in labels {
        all.insert(k.clone(), Value::String(v.clone()));
    }
    out.insert("Labels".into(), Value::Object(all));
    let empty = |field: &str| {
        out.get(field)
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty())
    };
    let entrypoint = if empty("Entrypoint") && empty("Cmd") {
        serde_json::json!([BOOT])
    } else {
        out.get("Entrypoint")
            .cloned()
            .unwrap_or(serde_json::json!([]))
    };
    out.insert("Entrypoint".into(), entrypoint);
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

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
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("layer.tar");
        let diff_id = write_layer(
            std::fs::File::open(snapshot_tar(dir.path())).unwrap(),
            b"./old\0./old/x\0",
            Some((
                "/opt/apache/beam/prebuilder-record.json",
                b"{\"record\": 1}",
            )),
            1_600_000_000,
            std::fs::File::create(&out).unwrap(),
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

    /// Reproducible: every date is the epoch (the fixture's files are newer),
    /// and the same snapshot gives the same bytes (diff id) again.
    #[test]
    fn layer_dates_are_the_epoch_and_the_bytes_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = snapshot_tar(dir.path());
        let write = |name: &str, epoch: u64| {
            let out = dir.path().join(name);
            let id = write_layer(
                std::fs::File::open(&snapshot).unwrap(),
                b"./old\0",
                Some(("/opt/apache/beam/prebuilder-record.json", b"{}")),
                epoch,
                std::fs::File::create(&out).unwrap(),
            )
            .unwrap();
            (id, out)
        };
        let (a, out) = write("a.tar", 1_600_000_000);
        let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.mtime().unwrap(), 1_600_000_000, "{:?}", e.path());
            assert_eq!(h.username().unwrap().unwrap_or(""), "");
        }
        assert_eq!(write("b.tar", 1_600_000_000).0, a, "same input, same layer");
        assert_ne!(write("c.tar", 1_500_000_000).0, a, "the epoch is the date");
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
            vec![serde_json::json!({"created_by": "base"})],
        );
        let archive = dir.path().join("image.tar");
        write_archive(
            std::fs::File::create(&archive).unwrap(),
            &config,
            2,
            std::fs::File::open(&layer).unwrap(),
            11,
        )
        .unwrap();
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
        assert_eq!(config["history"][0]["created_by"], "base");
    }

    #[test]
    fn layer_config_keeps_the_bases_config_and_adds_labels() {
        let base = serde_json::json!({
            "Env": ["PATH=/usr/bin"],
            "Cmd": ["python3"],
            "Entrypoint": null,
            "Hostname": "setup-container",
            "Labels": {"vendor": "x", "prebuilder.key": "old"},
        });
        let labels = BTreeMap::from([("prebuilder.key".to_string(), "new".to_string())]);
        let c = layer_config(&base, &labels);
        assert_eq!(c["Env"][0], "PATH=/usr/bin");
        assert_eq!(c["Cmd"][0], "python3");
        assert_eq!(c["Labels"]["vendor"], "x");
        assert_eq!(c["Labels"]["prebuilder.key"], "new");
        assert!(
            c.get("Hostname").is_none(),
            "container-only fields are dropped"
        );
        assert_eq!(c["Entrypoint"], serde_json::json!([]));
        let bare = layer_config(&serde_json::json!({}), &BTreeMap::new());
        assert_eq!(bare["Entrypoint"], serde_json::json!([BOOT]));
    }
}
