//! Digests of staged files: the sha256 a manifest carries, and the content
//! digest the cache key is built from.
//!
//! Beam regenerates the pipeline's sdist on every launch, so its bytes change
//! (timestamps, owners, gzip header) while what pip installs does not. For
//! source archives the content digest therefore covers the sorted entries
//! (path, kind, permission bits, content) and nothing else; for every other
//! file it is the byte sha256. Both digests come from a single read of the
//! file: the archive parser pulls bytes through a reader that hashes them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

mod cache;
pub use cache::{CacheStats, DigestCache};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub size: u64,
    /// Lowercase hex sha256 of the bytes.
    pub sha256: String,
    /// Lowercase hex; equals `sha256` unless the file is a source archive.
    pub content_digest: String,
}

/// Large reads keep syscalls and hasher calls rare enough for SHA-NI speed.
const BUFFER_SIZE: usize = 1 << 20;

/// Bumped whenever the entry encoding changes, so old and new digests never meet.
const ARCHIVE_DIGEST_VERSION: &[u8] = b"prebuilder-archive-v1\0";

/// A zip's central directory is read into memory to learn entry modes; past
/// this size the archive is keyed by its bytes instead.
const MAX_CENTRAL_DIRECTORY: u64 = 64 << 20;

const ZIP_CENTRAL_HEADER: &[u8] = b"PK\x01\x02";
const ZIP_END_OF_CENTRAL_DIRECTORY: &[u8] = b"PK\x05\x06";
/// Enough to see the signature that stopped the streaming zip reader.
const ZIP_HEADER_WINDOW: usize = 64;

/// Digest a file. Archives (`.tar.gz`, `.tgz`, `.tar`, `.zip` by name) get a
/// content digest over their entries; a damaged one is [`Error::Archive`].
pub fn digest_file(path: &Path) -> Result<FileDigest> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    digest_open(file, path, ArchiveFormat::of(path))
}

/// Digest an open file as `format` says (the staged name decides it, which
/// may differ from the name of the file read); `path` names it in errors.
fn digest_open(file: File, path: &Path, format: Option<ArchiveFormat>) -> Result<FileDigest> {
    let mut reader = HashingReader::new(file);
    let mut buf = vec![0u8; BUFFER_SIZE];

    let parsed = match format {
        None => Ok(None),
        Some(ArchiveFormat::Tar) => tar_records(&mut reader, &mut buf).map(Some),
        Some(ArchiveFormat::Zip) => zip_records(&mut reader, &mut buf),
    };
    // The parser sees the file's own read errors as archive errors; report
    // them as what they are.
    if let Some(error) = reader.error.take() {
        return Err(Error::io(path, error));
    }
    let records = parsed.map_err(|reason| Error::Archive {
        path: path.to_path_buf(),
        reason,
    })?;
    // Archives may end before the file does (tar padding, gzip trailer, zip
    // central directory): the byte digest must still cover every byte.
    drain(&mut reader, &mut buf).map_err(|e| Error::io(path, e))?;

    let sha256 = hex::encode(reader.hasher.finalize());
    let content_digest = match records {
        Some(records) => archive_digest(records),
        None => sha256.clone(),
    };
    Ok(FileDigest {
        size: reader.size,
        sha256,
        content_digest,
    })
}

/// Whether a staged name is a source archive, whose content digest covers
/// its entries rather than its bytes.
pub fn is_source_archive(name: &str) -> bool {
    ArchiveFormat::of(Path::new(name)).is_some()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArchiveFormat {
    Tar,
    Zip,
}

impl ArchiveFormat {
    /// Source archives by name. Wheels are zips too, but they are built
    /// artifacts pinned by their bytes (and by pip's hash checking), so they
    /// stay bytes-only.
    fn of(path: &Path) -> Option<ArchiveFormat> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        if [".tar.gz", ".tgz", ".tar"]
            .iter()
            .any(|ext| name.ends_with(ext))
        {
            Some(ArchiveFormat::Tar)
        } else if name.ends_with(".zip") {
            Some(ArchiveFormat::Zip)
        } else {
            None
        }
    }
}

/// One non-directory archive entry, as far as the content digest cares.
/// Field order is the sort order: path first, the rest only breaks ties
/// between duplicate paths so the order never depends on the archive's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Record {
    path: Vec<u8>,
    /// `[class, tar type byte]`; the type byte is 0 except for class `o`.
    kind: [u8; 2],
    /// Permission bits only (`mode & 0o7777`).
    mode: u32,
    /// sha256 of the file content, or of the link target for links.
    payload: [u8; 32],
}

const KIND_FILE: [u8; 2] = [b'f', 0];
const KIND_SYMLINK: [u8; 2] = [b'l', 0];
const KIND_HARDLINK: [u8; 2] = [b'h', 0];

/// Every field is fixed-size or length-prefixed, so two different entry
/// lists never encode to the same bytes.
fn archive_digest(mut records: Vec<Record>) -> String {
    records.sort();
    let mut hasher = Sha256::new();
    hasher.update(ARCHIVE_DIGEST_VERSION);
    hasher.update((records.len() as u64).to_be_bytes());
    for record in &records {
        hasher.update((record.path.len() as u64).to_be_bytes());
        hasher.update(&record.path);
        hasher.update(record.kind);
        hasher.update(record.mode.to_be_bytes());
        hasher.update(record.payload);
    }
    hex::encode(hasher.finalize())
}

/// Hashes every byte that passes through, whoever reads it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
    /// The last error the file itself raised (archive parsers wrap errors,
    /// losing the difference between a bad disk and a bad archive).
    error: Option<io::Error>,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            size: 0,
            error: None,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.size += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.error = Some(io::Error::new(e.kind(), e.to_string()));
                }
                Err(e)
            }
        }
    }
}

fn drain(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<()> {
    loop {
        match reader.read(buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// sha256 and length of everything left in `reader`.
fn hash_stream(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<([u8; 32], u64)> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        match reader.read(buf) {
            Ok(0) => return Ok((hasher.finalize().into(), size)),
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Entries of a tar, gzip'd or not. Gzip is recognised by its magic bytes,
/// not the name: Beam stages a gzip'd SDK tarball as `dataflow_python_sdk.tar`.
fn tar_records(reader: impl Read, buf: &mut [u8]) -> Result<Vec<Record>, String> {
    let mut buffered = BufReader::with_capacity(BUFFER_SIZE, reader);
    let head = buffered.fill_buf().map_err(|e| e.to_string())?;
    if head.starts_with(&[0x1f, 0x8b]) {
        // Multi-member: `cat a.gz b.gz` is one valid gzip stream to gzip and Python.
        read_tar(tar::Archive::new(MultiGzDecoder::new(buffered)), buf)
    } else {
        read_tar(tar::Archive::new(buffered), buf)
    }
}

fn read_tar(mut archive: tar::Archive<impl Read>, buf: &mut [u8]) -> Result<Vec<Record>, String> {
    use tar::EntryType;

    let mut records = Vec::new();
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let entry_type = entry.header().entry_type();
        let kind = match entry_type {
            // Directories carry no content; global pax headers carry metadata
            // (git archive puts the commit id there), not files.
            EntryType::Directory
            | EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => continue,
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => KIND_FILE,
            EntryType::Symlink => KIND_SYMLINK,
            EntryType::Link => KIND_HARDLINK,
            other => [b'o', other.as_byte()],
        };
        let path = entry.path_bytes().into_owned();
        let name = || String::from_utf8_lossy(&path).into_owned();
        let mode = entry
            .header()
            .mode()
            .map_err(|e| format!("entry {}: {e}", name()))?
            & 0o7777;
        let payload = if kind == KIND_SYMLINK || kind == KIND_HARDLINK {
            let target = entry.link_name_bytes().unwrap_or_default();
            Sha256::digest(&target).into()
        } else {
            let expected = entry.size();
            let (payload, size) =
                hash_stream(&mut entry, buf).map_err(|e| format!("entry {}: {e}", name()))?;
            // A truncated stream just ends early; the tar reader does not notice.
            if size != expected && entry_type != EntryType::GNUSparse {
                return Err(format!(
                    "entry {} is truncated: {size} of {expected} bytes",
                    name()
                ));
            }
            payload
        };
        records.push(Record {
            path,
            kind,
            mode,
            payload,
        });
    }
    Ok(records)
}

/// Remembers the first bytes read after [`Recorder::open_window`], so the
/// signature that ended the streaming zip reader can be recovered.
struct Recorder<R> {
    inner: R,
    window: Vec<u8>,
    limit: usize,
}

impl<R> Recorder<R> {
    fn open_window(&mut self, limit: usize) {
        self.window.clear();
        self.limit = limit;
    }
}

impl<R: Read> Read for Recorder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let room = self.limit.saturating_sub(self.window.len());
        self.window.extend_from_slice(&buf[..n.min(room)]);
        Ok(n)
    }
}

/// Entries of a zip, read front to back (local headers), with modes taken
/// from the central directory at the end because local headers lack them.
/// `Ok(None)` for valid zips this reader cannot stream (data descriptors,
/// other compression methods, encryption): those are keyed by their bytes.
fn zip_records(reader: impl Read, buf: &mut [u8]) -> Result<Option<Vec<Record>>, String> {
    use zip::result::ZipError;

    let mut stream = Recorder {
        inner: BufReader::with_capacity(BUFFER_SIZE, reader),
        window: Vec::new(),
        limit: 0,
    };
    let mut locals: Vec<(Vec<u8>, [u8; 32])> = Vec::new();
    loop {
        stream.open_window(ZIP_HEADER_WINDOW);
        let failure = match zip::read::read_zipfile_from_stream(&mut stream) {
            Ok(Some(mut file)) => {
                let name = file.name_raw().to_vec();
                if !name.ends_with(b"/") {
                    let expected = file.size();
                    let (payload, size) = hash_stream(&mut file, buf)
                        .map_err(|e| format!("entry {}: {e}", String::from_utf8_lossy(&name)))?;
                    if size != expected {
                        return Err(format!(
                            "entry {} is truncated: {size} of {expected} bytes",
                            String::from_utf8_lossy(&name)
                        ));
                    }
                    locals.push((name, payload));
                }
                continue;
            }
            Ok(None) => break,
            Err(e) => e,
        };
        return match failure {
            ZipError::UnsupportedArchive(_) => Ok(None),
            // An empty zip is only an end-of-central-directory record.
            _ if locals.is_empty() && stream.window.starts_with(ZIP_END_OF_CENTRAL_DIRECTORY) => {
                Ok(Some(Vec::new()))
            }
            e => Err(e.to_string()),
        };
    }

    // The reader stopped on a central directory header; it is in the window.
    let mut central = std::mem::take(&mut stream.window);
    stream.open_window(0);
    let read = (&mut stream)
        .take(MAX_CENTRAL_DIRECTORY)
        .read_to_end(&mut central)
        .map_err(|e| e.to_string())?;
    if read as u64 >= MAX_CENTRAL_DIRECTORY {
        return Ok(None);
    }
    let attributes = parse_central_directory(&central)?;

    let mut records = Vec::with_capacity(locals.len());
    for (path, payload) in locals {
        let &(system, external) = attributes.get(&path).ok_or_else(|| {
            format!(
                "entry {} is missing from the central directory",
                String::from_utf8_lossy(&path)
            )
        })?;
        // Only zips made on Unix (system 3) carry a st_mode in the high half.
        let st_mode = if system == 3 { external >> 16 } else { 0 };
        let kind = match st_mode & 0o170000 {
            0o040000 => continue,
            0o120000 => KIND_SYMLINK,
            _ => KIND_FILE,
        };
        records.push(Record {
            path,
            kind,
            mode: st_mode & 0o7777,
            payload,
        });
    }
    Ok(Some(records))
}

/// Map each central directory entry's raw name to (creator system, external attributes).
fn parse_central_directory(bytes: &[u8]) -> Result<HashMap<Vec<u8>, (u8, u32)>, String> {
    let truncated = || "truncated central directory".to_string();
    let mut attributes = HashMap::new();
    let mut pos = 0usize;
    while bytes.get(pos..pos + 4) == Some(ZIP_CENTRAL_HEADER) {
        let fixed = bytes.get(pos..pos + 46).ok_or_else(truncated)?;
        let u16_at = |at: usize| usize::from(u16::from_le_bytes([fixed[at], fixed[at + 1]]));
        // "version made by" is little-endian; its high byte names the system.
        let system = fixed[5];
        let (name_len, extra_len, comment_len) = (u16_at(28), u16_at(30), u16_at(32));
        let external = u32::from_le_bytes([fixed[38], fixed[39], fixed[40], fixed[41]]);
        let name = bytes
            .get(pos + 46..pos + 46 + name_len)
            .ok_or_else(truncated)?;
        attributes.insert(name.to_vec(), (system, external));
        pos += 46 + name_len + extra_len + comment_len;
    }
    Ok(attributes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    use flate2::write::GzEncoder;
    use flate2::{Compression, GzBuilder};

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).unwrap();
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    /// How a test tarball varies in what the content digest must ignore.
    #[derive(Clone, Copy)]
    struct Noise {
        mtime: u64,
        uid: u64,
        user: &'static str,
        gzip_mtime: u32,
        gzip_name: Option<&'static str>,
    }

    const QUIET: Noise = Noise {
        mtime: 1_000_000_000,
        uid: 0,
        user: "",
        gzip_mtime: 0,
        gzip_name: None,
    };

    const LOUD: Noise = Noise {
        mtime: 1_700_000_000,
        uid: 1000,
        user: "alice",
        gzip_mtime: 1_700_000_000,
        gzip_name: Some("pkg-1.0.tar"),
    };

    /// (path, mode, content); a content starting with "->" makes a symlink.
    type Spec<'a> = &'a [(&'a str, u32, &'a str)];

    const PKG: Spec = &[
        (
            "pkg-1.0/setup.py",
            0o644,
            "from setuptools import setup\nsetup()\n",
        ),
        ("pkg-1.0/pkg/__init__.py", 0o644, "x = 1\n"),
        ("pkg-1.0/bin/run", 0o755, "#!/bin/sh\n"),
        ("pkg-1.0/link", 0o777, "->pkg/__init__.py"),
    ];

    fn tar_bytes(spec: Spec, noise: Noise, reverse: bool) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut entries: Vec<_> = spec.to_vec();
        if reverse {
            entries.reverse();
        }
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_mtime(noise.mtime);
        dir.set_size(0);
        builder
            .append_data(&mut dir, "pkg-1.0/", io::empty())
            .unwrap();
        for (path, mode, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(mode);
            header.set_mtime(noise.mtime);
            header.set_uid(noise.uid);
            header.set_gid(noise.uid);
            header.set_username(noise.user).unwrap();
            if let Some(target) = content.strip_prefix("->") {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            } else {
                header.set_size(content.len() as u64);
                builder
                    .append_data(&mut header, path, content.as_bytes())
                    .unwrap();
            }
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8], noise: Noise, level: u32) -> Vec<u8> {
        let mut builder = GzBuilder::new().mtime(noise.gzip_mtime);
        if let Some(name) = noise.gzip_name {
            builder = builder.filename(name);
        }
        let mut encoder = builder.write(Vec::new(), Compression::new(level));
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn tar_gz(spec: Spec, noise: Noise) -> Vec<u8> {
        gzip(&tar_bytes(spec, noise, false), noise, 6)
    }

    fn zip_bytes(spec: Spec, year: u16, reverse: bool) -> Vec<u8> {
        use zip::write::SimpleFileOptions;
        let mut writer = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let time = zip::DateTime::from_date_and_time(year, 1, 2, 3, 4, 6).unwrap();
        let mut entries: Vec<_> = spec.to_vec();
        if reverse {
            entries.reverse();
        }
        writer
            .add_directory(
                "pkg-1.0/",
                SimpleFileOptions::default().last_modified_time(time),
            )
            .unwrap();
        for (path, mode, content) in entries {
            let options = SimpleFileOptions::default()
                .last_modified_time(time)
                .unix_permissions(mode);
            if let Some(target) = content.strip_prefix("->") {
                writer.add_symlink(path, target, options).unwrap();
            } else {
                writer.start_file(path, options).unwrap();
                writer.write_all(content.as_bytes()).unwrap();
            }
        }
        writer.finish().unwrap().into_inner()
    }

    fn digest_of(dir: &Path, name: &str, bytes: &[u8]) -> FileDigest {
        let path = dir.join(name);
        write(&path, bytes);
        digest_file(&path).unwrap()
    }

    fn with_spec(
        change: impl Fn(&mut Vec<(&'static str, u32, &'static str)>),
    ) -> Vec<(&'static str, u32, &'static str)> {
        let mut spec = PKG.to_vec();
        change(&mut spec);
        spec
    }

    #[test]
    fn plain_file_digest_is_its_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let d = digest_of(dir.path(), "requirements.txt", b"numpy==2.0.0\n");
        assert_eq!(d.size, 13);
        assert_eq!(d.sha256, sha256_hex(b"numpy==2.0.0\n"));
        assert_eq!(d.content_digest, d.sha256);
        assert_eq!(d.sha256.len(), 64);
        assert!(d
            .sha256
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    }

    #[test]
    fn same_bytes_same_digest_one_byte_changed_differs() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..3 * BUFFER_SIZE + 17).map(|i| (i % 251) as u8).collect();
        let a = digest_of(dir.path(), "a.bin", &big);
        let b = digest_of(dir.path(), "b.bin", &big);
        assert_eq!(a, b);
        assert_eq!(a.sha256, sha256_hex(&big));
        assert_eq!(a.size, big.len() as u64);
        let mut changed = big.clone();
        changed[2 * BUFFER_SIZE + 5] ^= 1;
        let c = digest_of(dir.path(), "c.bin", &changed);
        assert_ne!(a.sha256, c.sha256);
        assert_ne!(a.content_digest, c.content_digest);
    }

    #[test]
    fn empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = digest_of(dir.path(), "empty", b"");
        assert_eq!(d.size, 0);
        assert_eq!(d.sha256, sha256_hex(b""));
    }

    #[test]
    fn rebuilt_sdist_keeps_its_content_digest() {
        let dir = tempfile::tempdir().unwrap();
        let first_bytes = tar_gz(PKG, QUIET);
        // Different mtimes, owners, gzip header, compression level and entry order.
        let second_bytes = gzip(&tar_bytes(PKG, LOUD, true), LOUD, 9);
        assert_ne!(first_bytes, second_bytes);
        let first = digest_of(dir.path(), "pkg-1.0.tar.gz", &first_bytes);
        let second = digest_of(dir.path(), "workflow.tar.gz", &second_bytes);
        assert_ne!(first.sha256, second.sha256);
        assert_eq!(first.sha256, sha256_hex(&first_bytes));
        assert_eq!(second.sha256, sha256_hex(&second_bytes));
        assert_eq!(first.size, first_bytes.len() as u64);
        assert_eq!(first.content_digest, second.content_digest);
        assert_ne!(first.content_digest, first.sha256);
        // .tgz and plain .tar name the same content.
        let tgz = digest_of(dir.path(), "pkg-1.0.tgz", &first_bytes);
        let plain = digest_of(dir.path(), "pkg-1.0.tar", &tar_bytes(PKG, LOUD, false));
        assert_eq!(tgz.content_digest, first.content_digest);
        assert_eq!(plain.content_digest, first.content_digest);
    }

    #[test]
    fn gzipped_tar_named_tar_is_read() {
        // Beam stages a gzip'd SDK sdist as dataflow_python_sdk.tar.
        let dir = tempfile::tempdir().unwrap();
        let bytes = tar_gz(PKG, QUIET);
        let staged = digest_of(dir.path(), "dataflow_python_sdk.tar", &bytes);
        let original = digest_of(dir.path(), "apache-beam-2.77.0.tar.gz", &bytes);
        assert_eq!(staged, original);
        assert_ne!(staged.content_digest, staged.sha256);
    }

    #[test]
    fn changed_content_or_mode_or_name_changes_content_digest() {
        let dir = tempfile::tempdir().unwrap();
        let base = digest_of(dir.path(), "a.tar.gz", &tar_gz(PKG, QUIET)).content_digest;
        let variants = [
            with_spec(|s| s[1].2 = "x = 2\n"),
            with_spec(|s| s[0].1 = 0o755),
            with_spec(|s| s[1].0 = "pkg-1.0/pkg/__main__.py"),
            with_spec(|s| s[3].2 = "->setup.py"),
            with_spec(|s| {
                s.pop();
            }),
            with_spec(|s| s.push(("pkg-1.0/extra", 0o644, ""))),
        ];
        let mut seen = vec![base];
        for (i, spec) in variants.iter().enumerate() {
            let d = digest_of(dir.path(), &format!("v{i}.tar.gz"), &tar_gz(spec, QUIET));
            assert!(!seen.contains(&d.content_digest), "variant {i}");
            seen.push(d.content_digest);
        }
    }

    #[test]
    fn entry_boundaries_cannot_be_shifted() {
        // Without length prefixes, ("ab", "c") and ("a", "bc") could collide.
        let dir = tempfile::tempdir().unwrap();
        let a = digest_of(
            dir.path(),
            "a.tar",
            &tar_bytes(&[("ab", 0o644, "c")], QUIET, false),
        );
        let b = digest_of(
            dir.path(),
            "b.tar",
            &tar_bytes(&[("a", 0o644, "bc")], QUIET, false),
        );
        assert_ne!(a.content_digest, b.content_digest);
    }

    #[test]
    fn empty_tar_has_a_content_digest() {
        let dir = tempfile::tempdir().unwrap();
        let empty = tar::Builder::new(Vec::new()).into_inner().unwrap();
        let d = digest_of(dir.path(), "empty.tar", &empty);
        assert_eq!(d.size, 1024);
        assert_ne!(d.content_digest, d.sha256);
    }

    #[test]
    fn trailing_bytes_after_the_archive_count_in_sha256_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = tar_bytes(PKG, QUIET, false);
        let a = digest_of(dir.path(), "a.tar", &bytes);
        bytes.extend_from_slice(&[0u8; 4096]);
        let b = digest_of(dir.path(), "b.tar", &bytes);
        assert_eq!(b.sha256, sha256_hex(&bytes));
        assert_eq!(b.size, bytes.len() as u64);
        assert_ne!(a.sha256, b.sha256);
        assert_eq!(a.content_digest, b.content_digest);
    }

    #[test]
    fn large_entry_streams_through() {
        let dir = tempfile::tempdir().unwrap();
        let big: String = "0123456789abcdef".repeat(200_000);
        let spec: Vec<(&str, u32, &str)> = vec![("pkg/big.txt", 0o644, &big)];
        let bytes = tar_gz(&spec, QUIET);
        let d = digest_of(dir.path(), "big.tar.gz", &bytes);
        assert_eq!(d.sha256, sha256_hex(&bytes));
        let again = digest_of(
            dir.path(),
            "again.tar.gz",
            &gzip(&tar_bytes(&spec, LOUD, false), LOUD, 1),
        );
        assert_eq!(d.content_digest, again.content_digest);
    }

    #[test]
    fn long_names_are_part_of_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let long_a = format!("pkg/{}/a.py", "d".repeat(150));
        let long_b = format!("pkg/{}/b.py", "d".repeat(150));
        let a = digest_of(
            dir.path(),
            "a.tar",
            &tar_bytes(&[(&long_a, 0o644, "x")], QUIET, false),
        );
        let b = digest_of(
            dir.path(),
            "b.tar",
            &tar_bytes(&[(&long_b, 0o644, "x")], QUIET, false),
        );
        assert_ne!(a.content_digest, b.content_digest);
    }

    #[test]
    fn corrupt_archives_are_archive_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = tar_gz(PKG, QUIET);
        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xff;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "garbage.tar.gz",
                b"\x1f\x8b\x08\x00this is not deflate data at all".to_vec(),
            ),
            ("truncated.tar.gz", good[..good.len() / 2].to_vec()),
            ("flipped.tar.gz", flipped),
            ("text.tar", b"hello, I am not a tar archive\n".repeat(40)),
            ("text.zip", b"hello, I am not a zip archive\n".repeat(40)),
            ("truncated.zip", zip_bytes(PKG, 2020, false)[..200].to_vec()),
        ];
        for (name, bytes) in cases {
            let path = dir.path().join(name);
            write(&path, &bytes);
            match digest_file(&path) {
                Err(Error::Archive { path: p, reason }) => {
                    assert_eq!(p, path);
                    assert!(!reason.is_empty());
                }
                other => panic!("{name}: expected an Archive error, got {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_tar_entry_is_an_archive_error() {
        let dir = tempfile::tempdir().unwrap();
        let content = "y".repeat(2000);
        let bytes = tar_bytes(&[("pkg/a", 0o644, &content)], QUIET, false);
        // Header (512) + part of the content: the stream ends inside the entry.
        let path = dir.path().join("cut.tar");
        write(&path, &bytes[..512 + 700]);
        assert!(matches!(digest_file(&path), Err(Error::Archive { .. })));
    }

    #[test]
    fn wheel_is_bytes_only() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = zip_bytes(PKG, 2020, false);
        let d = digest_of(dir.path(), "pkg-1.0-py3-none-any.whl", &bytes);
        assert_eq!(d.content_digest, d.sha256);
        // Even garbage named .whl is just bytes.
        let g = digest_of(dir.path(), "bad-1.0-py3-none-any.whl", b"not a zip");
        assert_eq!(g.content_digest, g.sha256);
    }

    #[test]
    fn rebuilt_zip_keeps_its_content_digest() {
        let dir = tempfile::tempdir().unwrap();
        let first_bytes = zip_bytes(PKG, 2020, false);
        let second_bytes = zip_bytes(PKG, 2024, true);
        assert_ne!(first_bytes, second_bytes);
        let first = digest_of(dir.path(), "pkg-1.0.zip", &first_bytes);
        let second = digest_of(dir.path(), "other.zip", &second_bytes);
        assert_ne!(first.sha256, second.sha256);
        assert_eq!(first.sha256, sha256_hex(&first_bytes));
        assert_eq!(first.size, first_bytes.len() as u64);
        assert_eq!(first.content_digest, second.content_digest);
        assert_ne!(first.content_digest, first.sha256);
        // The same entries as a tarball give the same content digest.
        let tarball = digest_of(dir.path(), "pkg-1.0.tar.gz", &tar_gz(PKG, QUIET));
        assert_eq!(tarball.content_digest, first.content_digest);
    }

    #[test]
    fn zip_content_and_mode_changes_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let base = digest_of(dir.path(), "a.zip", &zip_bytes(PKG, 2020, false)).content_digest;
        let content = digest_of(
            dir.path(),
            "b.zip",
            &zip_bytes(&with_spec(|s| s[1].2 = "x = 2\n"), 2020, false),
        );
        let mode = digest_of(
            dir.path(),
            "c.zip",
            &zip_bytes(&with_spec(|s| s[0].1 = 0o755), 2020, false),
        );
        let link = digest_of(
            dir.path(),
            "d.zip",
            &zip_bytes(&with_spec(|s| s[3].2 = "->setup.py"), 2020, false),
        );
        assert_ne!(base, content.content_digest);
        assert_ne!(base, mode.content_digest);
        assert_ne!(base, link.content_digest);
        assert_ne!(mode.content_digest, content.content_digest);
    }

    #[test]
    fn empty_zip_has_a_content_digest() {
        let dir = tempfile::tempdir().unwrap();
        let empty = zip::ZipWriter::new(io::Cursor::new(Vec::new()))
            .finish()
            .unwrap()
            .into_inner();
        assert_eq!(empty.len(), 22);
        let d = digest_of(dir.path(), "empty.zip", &empty);
        assert_eq!(d.size, 22);
        assert_ne!(d.content_digest, d.sha256);
    }

    #[test]
    fn zip_with_data_descriptors_falls_back_to_bytes() {
        // Zips written to a pipe set flag bit 3 and put the sizes after the
        // data, which a single forward pass cannot rely on.
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = zip_bytes(PKG, 2020, false);
        assert_eq!(&bytes[..4], b"PK\x03\x04");
        bytes[6] |= 0x08;
        let d = digest_of(dir.path(), "streamed.zip", &bytes);
        assert_eq!(d.sha256, sha256_hex(&bytes));
        assert_eq!(d.content_digest, d.sha256);
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let path = PathBuf::from("/nonexistent/prebuilder/x.tar.gz");
        match digest_file(&path) {
            Err(Error::Io { path: p, .. }) => assert_eq!(p, path),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(digest_file(dir.path()), Err(Error::Io { .. })));
    }

    #[test]
    fn hashing_reader_counts_every_byte() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut reader = HashingReader::new(&data[..]);
        let mut small = [0u8; 7];
        let _ = reader.read(&mut small).unwrap();
        drain(&mut reader, &mut [0u8; 100]).unwrap();
        assert_eq!(reader.size, 10_000);
        assert_eq!(hex::encode(reader.hasher.finalize()), sha256_hex(&data));
    }

    /// Throughput check, run by hand in release mode:
    /// `cargo test --release --lib stage::digest -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        let chunk: Vec<u8> = (0..BUFFER_SIZE).map(|i| (i * 7 % 256) as u8).collect();
        let mut file = std::fs::File::create(&path).unwrap();
        for _ in 0..1024 {
            file.write_all(&chunk).unwrap();
        }
        drop(file);
        // Once to warm the page cache, once to measure.
        digest_file(&path).unwrap();
        let start = std::time::Instant::now();
        let d = digest_file(&path).unwrap();
        let secs = start.elapsed().as_secs_f64();
        eprintln!("plain: {:.0} MB/s", d.size as f64 / secs / 1e6);

        let tgz = dir.path().join("big.tar.gz");
        let mut builder = tar::Builder::new(GzEncoder::new(
            std::fs::File::create(&tgz).unwrap(),
            Compression::fast(),
        ));
        builder.append_path_with_name(&path, "big.bin").unwrap();
        builder.into_inner().unwrap().finish().unwrap();
        let start = std::time::Instant::now();
        let d = digest_file(&tgz).unwrap();
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "tar.gz: {:.0} MB/s of content ({} bytes of archive)",
            (1u64 << 30) as f64 / secs / 1e6,
            d.size
        );
    }
}
