//! What `--push` needs from the engine's own copy of an image, and the blobs
//! it becomes:
//! - [`unpack`]: an engine's image archive (`docker save` of one or more
//!   images: Docker's legacy layout, Docker 25's OCI layout and Podman's
//!   docker-archive all carry `manifest.json`) spooled into a directory, each
//!   image as its config bytes (whose digest is the image id) and its layer
//!   files, each checked against the diff id its config names;
//! - [`compress`]: one layer as the registry blob prebuilder pushes, gzip
//!   with fixed settings (no name, mtime 0, one level), so the same layer
//!   gives the same blob digest on every machine and engine, whatever the
//!   engine's own compressor would have done.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// One image of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedImage {
    /// The config as the engine stores it.
    pub config: Vec<u8>,
    /// Its layers, bottom first.
    pub layers: Vec<ExportedLayer>,
}

/// One layer file of an archive (uncompressed, as its diff id covers it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedLayer {
    /// `sha256:` of the file: the layer's diff id.
    pub diff_id: String,
    /// Where it was spooled; `None` when it was not kept (see [`unpack`]).
    pub path: Option<PathBuf>,
    pub size: u64,
}

/// A compressed layer: what the registry stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

#[derive(serde::Deserialize)]
struct ManifestItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// A regular file of the archive, spooled (`None`: digested, not kept).
struct Spooled {
    path: Option<PathBuf>,
    digest: String,
    size: u64,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// `a/./b/../c` → `a/c`; `None` for a path that climbs out of the archive.
fn normal(path: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(parts.join("/"))
}

/// Files up to this size are always kept (configs, manifest.json).
const SMALL: u64 = 1 << 20;

/// Spool every regular file of `archive` into `dir` (hashing it on the
/// way; a file larger than 1 MiB whose digest `keep` refuses is deleted
/// at once: the layers the registry has already), then read
/// `manifest.json`: every image it lists, its config and its layers in
/// order. A gzip-compressed file (the containerd store's export of a pulled
/// layer) is spooled and digested decompressed. A layer whose digest is not
/// the diff id its config names is an error: the engine exported something
/// else and a push of it would give a different image.
pub fn unpack<R: Read>(
    archive: R,
    dir: &Path,
    keep: &dyn Fn(&str) -> bool,
) -> io::Result<Vec<ExportedImage>> {
    let files = spool(archive, dir, keep)?;
    let manifest = files.read("manifest.json")?;
    let items: Vec<ManifestItem> = serde_json::from_slice(&manifest)
        .map_err(|e| invalid(format!("the image archive's manifest.json: {e}")))?;
    items.iter().map(|item| image(&files, item)).collect()
}

/// The regular files of an archive and its links, by normal path.
#[derive(Default)]
struct Files {
    files: HashMap<String, Spooled>,
    links: HashMap<String, String>,
}

impl Files {
    /// The file at `name`, through links.
    fn find(&self, name: &str) -> io::Result<&Spooled> {
        let mut name = name.to_string();
        for _ in 0..8 {
            if let Some(f) = self.files.get(&name) {
                return Ok(f);
            }
            match self.links.get(&name) {
                Some(t) => name = t.clone(),
                None => break,
            }
        }
        Err(invalid(format!("the image archive has no file {name}")))
    }

    /// The bytes of a small file (a manifest or config).
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        match &self.find(name)?.path {
            Some(p) => std::fs::read(p),
            None => Err(invalid(format!(
                "{name} is too large for a manifest or config"
            ))),
        }
    }
}

/// Spool the archive's regular files and note its links (see [`unpack`]).
fn spool<R: Read>(archive: R, dir: &Path, keep: &dyn Fn(&str) -> bool) -> io::Result<Files> {
    let mut out = Files::default();
    let mut a = tar::Archive::new(archive);
    for (n, entry) in a.entries()?.enumerate() {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let Some(name) = normal(&path) else {
            return Err(invalid(format!(
                "the image archive names {} outside itself",
                path.display()
            )));
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let spooled = spool_file(&mut entry, &dir.join(format!("e{n}")), keep)
                    .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?;
                out.files.insert(name, spooled);
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let Some(target) = entry.link_name()? else {
                    continue;
                };
                // A symlink is relative to its directory, a hard link to the root.
                let resolved = if entry.header().entry_type() == tar::EntryType::Symlink {
                    path.parent().unwrap_or(Path::new("")).join(target)
                } else {
                    target.into_owned()
                };
                if let Some(t) = normal(&resolved) {
                    out.links.insert(name, t);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// gzip's magic number.
const GZIP: [u8; 2] = [0x1f, 0x8b];
/// zstd's magic number.
const ZSTD: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Spool one file into `spool`, decompressed when it is gzip; deleted
/// when large and not kept.
fn spool_file(
    entry: &mut dyn Read,
    spool: &Path,
    keep: &dyn Fn(&str) -> bool,
) -> io::Result<Spooled> {
    let mut head = Vec::with_capacity(4);
    entry.take(4).read_to_end(&mut head)?;
    if head.starts_with(&ZSTD) {
        return Err(invalid(
            "a zstd-compressed layer, which prebuilder cannot read yet; \
             let the engine keep gzip layers (the default)"
                .into(),
        ));
    }
    let mut input = io::Cursor::new(head.clone()).chain(entry);
    let mut out = Hashing::new(BufWriter::new(File::create(spool)?));
    let size = if head.starts_with(&GZIP) {
        io::copy(&mut flate2::read::MultiGzDecoder::new(input), &mut out)?
    } else {
        io::copy(&mut input, &mut out)?
    };
    let digest = out.finish()?;
    let path = if size > SMALL && !keep(&digest) {
        std::fs::remove_file(spool)?;
        None
    } else {
        Some(spool.to_path_buf())
    };
    Ok(Spooled { path, digest, size })
}

/// One image of the manifest: its config and its layers, each checked
/// against the diff id the config names.
fn image(files: &Files, item: &ManifestItem) -> io::Result<ExportedImage> {
    let config = files.read(&item.config)?;
    let diff_ids = diff_ids(&config)?;
    if diff_ids.len() != item.layers.len() {
        return Err(invalid(format!(
            "the image archive lists {} layers for a config with {}",
            item.layers.len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (name, diff_id) in item.layers.iter().zip(diff_ids) {
        let f = files.find(name)?;
        if f.digest != diff_id {
            return Err(invalid(format!(
                "the engine exported {name} as {} but the image's config names {diff_id} \
                 (an altered layer)",
                f.digest
            )));
        }
        layers.push(ExportedLayer {
            diff_id,
            path: f.path.clone(),
            size: f.size,
        });
    }
    Ok(ExportedImage { config, layers })
}

/// The diff ids a config names, bottom first.
pub fn diff_ids(config: &[u8]) -> io::Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct RootFs {
        #[serde(default)]
        diff_ids: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    let c: Config = serde_json::from_slice(config)
        .map_err(|e| invalid(format!("an image config without rootfs.diff_ids: {e}")))?;
    Ok(c.rootfs.diff_ids)
}

/// The gzip level of every blob prebuilder pushes (Docker's too): part of
/// the blob's digest, so never changed lightly (every pushed layer would
/// upload again).
const LEVEL: u32 = 6;

/// The input is compressed in pieces of this size, each its own gzip member
/// (a gzip file may hold several; every engine's reader takes them, as
/// `pigz` output is taken): the pieces compress in parallel, and the bytes do
/// not depend on how many threads did it.
const PIECE: usize = 4 << 20;

/// At most this many pieces are compressed at once (memory: two buffers each).
const MAX_THREADS: usize = 4;

/// Compress `src` into `dst` as prebuilder's gzip (see the module): the
/// blob's digest and size.
pub fn compress(src: &Path, dst: &Path) -> io::Result<Blob> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS);
    let mut input = File::open(src)?;
    let mut out = Hashing::new(BufWriter::with_capacity(1 << 20, File::create(dst)?));
    let mut first = true;
    loop {
        let mut pieces = Vec::new();
        let mut last = false;
        while pieces.len() < threads && !last {
            let piece = read_piece(&mut input)?;
            last = piece.len() < PIECE;
            if !piece.is_empty() || (first && pieces.is_empty()) {
                pieces.push(piece);
            }
        }
        first = false;
        let members: Vec<io::Result<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = pieces.iter().map(|p| s.spawn(|| member(p))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a compression thread panicked")))
                })
                .collect()
        });
        for m in members {
            out.write_all(&m?)?;
        }
        if last {
            break;
        }
    }
    let size = out.written;
    let digest = out.finish()?;
    Ok(Blob { digest, size })
}

/// Up to [`PIECE`] bytes (fewer only at the end of the input).
fn read_piece(input: &mut File) -> io::Result<Vec<u8>> {
    let mut piece = Vec::with_capacity(PIECE);
    input.take(PIECE as u64).read_to_end(&mut piece)?;
    Ok(piece)
}

/// One gzip member: no name, mtime 0, OS "unknown", [`LEVEL`].
fn member(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(
            Vec::with_capacity(data.len() / 2),
            flate2::Compression::new(LEVEL),
        );
    gz.write_all(data)?;
    gz.finish()
}

/// A writer that digests what passes through it.
struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Flush and return `sha256:` of everything written.
    fn finish(mut self) -> io::Result<String> {
        self.inner.flush()?;
        Ok(format!("sha256:{}", hex::encode(self.hasher.finalize())))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(b)))
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, name: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Symlink);
        b.append_link(&mut h, name, target).unwrap();
    }

    fn config(diff_ids: &[String]) -> Vec<u8> {
        serde_json::json!({"rootfs": {"type": "layers", "diff_ids": diff_ids}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_legacy_save_of_two_images_gives_each_config_and_its_layers_in_order() {
        let (l1, l2) = (b"layer one".to_vec(), b"layer two".to_vec());
        let lower = config(&[sha(&l1)]);
        let upper = config(&[sha(&l1), sha(&l2)]);
        let mut b = tar::Builder::new(Vec::new());
        // Docker's legacy layout: layers first, configs, manifest.json last.
        file(&mut b, "aaa/layer.tar", &l1);
        file(&mut b, "bbb/layer.tar", &l2);
        file(&mut b, "lower.json", &lower);
        file(&mut b, "upper.json", &upper);
        let manifest = serde_json::json!([
            {"Config": "lower.json", "RepoTags": null, "Layers": ["aaa/layer.tar"]},
            {"Config": "upper.json", "RepoTags": null, "Layers": ["aaa/layer.tar", "bbb/layer.tar"]},
        ]);
        file(&mut b, "manifest.json", manifest.to_string().as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let images = unpack(&b.into_inner().unwrap()[..], dir.path(), &|_| true).unwrap();
        assert_eq!(images.len(), 2);
        assert_eq!(images[0].config, lower);
        assert_eq!(images[1].config, upper);
        let ids: Vec<&str> = images[1]
            .layers
            .iter()
            .map(|l| l.diff_id.as_str())
            .collect();
        assert_eq!(ids, [sha(&l1), sha(&l2)]);
        let path = images[1].layers[1].path.as_ref().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), l2);
        assert_eq!(images[1].layers[1].size, l2.len() as u64);
        // The shared layer was spooled once.
        assert_eq!(images[0].layers[0].path, images[1].layers[0].path);
    }

    #[test]
    fn large_layers_not_kept_are_digested_but_not_left_on_disk() {
        let big = vec![7u8; (SMALL + 1) as usize];
        let small = b"small layer".to_vec();
        let c = config(&[sha(&big), sha(&small)]);
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "big/layer.tar", &big);
        file(&mut b, "small/layer.tar", &small);
        file(&mut b, "cfg.json", &c);
        let manifest = serde_json::json!([{"Config": "cfg.json", "Layers": ["big/layer.tar", "small/layer.tar"]}]);
        file(&mut b, "manifest.json", manifest.to_string().as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let wanted = sha(&small);
        let images = unpack(&b.into_inner().unwrap()[..], dir.path(), &|d| d == wanted).unwrap();
        let layers = &images[0].layers;
        assert_eq!(layers[0].diff_id, sha(&big), "digested all the same");
        assert_eq!(layers[0].path, None);
        assert!(layers[1].path.is_some());
        // Only the kept layer, the config and the manifest are on disk.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn symlinked_layers_as_podman_writes_them_resolve() {
        let l1 = b"only layer".to_vec();
        let hex1 = hex::encode(Sha256::digest(&l1));
        let c = config(&[sha(&l1)]);
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, &format!("{hex1}.tar"), &l1);
        link(
            &mut b,
            &format!("{hex1}/layer.tar"),
            &format!("../{hex1}.tar"),
        );
        file(&mut b, "cfg.json", &c);
        let manifest =
            serde_json::json!([{"Config": "cfg.json", "Layers": [format!("{hex1}/layer.tar")]}]);
        file(&mut b, "manifest.json", manifest.to_string().as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let images = unpack(&b.into_inner().unwrap()[..], dir.path(), &|_| true).unwrap();
        assert_eq!(images[0].layers[0].diff_id, sha(&l1));
    }

    #[test]
    fn a_containerd_store_save_in_the_oci_layout_with_a_gzip_layer_reads_as_diff_ids() {
        // docker save on the containerd store: blobs as stored (a pulled
        // layer gzip, a loaded one plain), OCI index and manifest.json.
        let (l1, l2) = (b"pulled layer".to_vec(), b"loaded layer".to_vec());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&l1).unwrap();
        let gz = gz.finish().unwrap();
        let c = config(&[sha(&l1), sha(&l2)]);
        let blob = |d: &str| format!("blobs/sha256/{}", &d[7..]);
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, &blob(&sha(&gz)), &gz);
        file(&mut b, &blob(&sha(&l2)), &l2);
        file(&mut b, &blob(&sha(&c)), &c);
        file(&mut b, "index.json", b"{}");
        let manifest = serde_json::json!([{"Config": blob(&sha(&c)), "Layers": [blob(&sha(&gz)), blob(&sha(&l2))]}]);
        file(&mut b, "manifest.json", manifest.to_string().as_bytes());
        file(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        let dir = tempfile::tempdir().unwrap();
        let images = unpack(&b.into_inner().unwrap()[..], dir.path(), &|_| true).unwrap();
        let layers = &images[0].layers;
        assert_eq!(layers[0].diff_id, sha(&l1), "checked decompressed");
        assert_eq!(std::fs::read(layers[0].path.as_ref().unwrap()).unwrap(), l1);
        assert_eq!(layers[0].size, l1.len() as u64);
        assert_eq!(layers[1].diff_id, sha(&l2));
        assert_eq!(images[0].config, c);
        // A zstd layer is refused, naming it.
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "z/layer", &[0x28, 0xb5, 0x2f, 0xfd, 0, 0]);
        let err = unpack(&b.into_inner().unwrap()[..], dir.path(), &|_| true).unwrap_err();
        assert!(
            err.to_string().contains("z/layer") && err.to_string().contains("zstd"),
            "{err}"
        );
    }

    #[test]
    fn a_layer_that_is_not_its_diff_id_is_refused() {
        let c = config(&[sha(b"what the config says")]);
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "x/layer.tar", b"something else");
        file(&mut b, "cfg.json", &c);
        let manifest = serde_json::json!([{"Config": "cfg.json", "Layers": ["x/layer.tar"]}]);
        file(&mut b, "manifest.json", manifest.to_string().as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(&b.into_inner().unwrap()[..], dir.path(), &|_| true).unwrap_err();
        assert!(err.to_string().contains("x/layer.tar"), "{err}");
        // No manifest.json at all is refused too.
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "cfg.json", &c);
        let err = unpack(&b.into_inner().unwrap()[..], dir.path(), &|_| true).unwrap_err();
        assert!(err.to_string().contains("manifest.json"), "{err}");
    }

    #[test]
    fn compression_is_the_same_bytes_every_time_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("layer.tar");
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        std::fs::write(&src, &data).unwrap();
        let a = compress(&src, &dir.path().join("a.gz")).unwrap();
        // Another file time, another name: the same blob.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = compress(&src, &dir.path().join("b.gz")).unwrap();
        assert_eq!(a, b);
        let bytes = std::fs::read(dir.path().join("a.gz")).unwrap();
        assert_eq!(sha(&bytes), a.digest);
        assert_eq!(bytes.len() as u64, a.size);
        // gzip header: no mtime (bytes 4..8 zero), no file name flag.
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0]);
        assert_eq!(bytes[3] & 0x08, 0);
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        // An empty layer is one empty member: still a gzip file.
        std::fs::write(&src, b"").unwrap();
        let empty = compress(&src, &dir.path().join("e.gz")).unwrap();
        let bytes = std::fs::read(dir.path().join("e.gz")).unwrap();
        assert_eq!(bytes.len() as u64, empty.size);
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn a_gzip_reader_that_takes_several_members_as_go_and_engines_do_reads_it_whole() {
        // gzip -t / zcat read every member; so does Go's gzip.Reader (the
        // engines' and registries' side). `gzip` is on every test machine.
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("layer.tar");
        let data: Vec<u8> = (0..PIECE as u32)
            .flat_map(|i| (i % 7).to_le_bytes())
            .collect();
        std::fs::write(&src, &data).unwrap();
        compress(&src, &dir.path().join("l.gz")).unwrap();
        let out = std::process::Command::new("gzip")
            .args(["-dc"])
            .arg(dir.path().join("l.gz"))
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }
}
