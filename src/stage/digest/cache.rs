//! The digest cache: a relaunch with the same staged files must not read
//! gigabytes again (issue 22: an unchanged GPU-size launch spent 1.9 s
//! rehashing 2.8 GB of wheels). As git's index does, each file's digests are
//! remembered under what `stat` says of it (device, inode, size, modification
//! and change time in nanoseconds) and used only while all of it is unchanged.
//!
//! What keeps a remembered digest from ever being wrong:
//! - git's racy-timestamp rule: a file whose mtime or ctime is within
//!   [`GRANULARITY`] of the moment it was read could be written again
//!   without either timestamp moving (coarse clocks, file systems that keep
//!   whole seconds); its digests serve this run but are not remembered;
//! - the file is stat'ed through its open descriptor before and after the
//!   read, and remembered only when both agree;
//! - the change time cannot be set back by a user (the modification time
//!   can), so a file rewritten with its size and mtime restored is seen;
//! - a cache that cannot be trusted is ignored, never believed: another
//!   format or digest version, a bad checksum (corrupt or truncated), a
//!   file owned by another user or writable by others, and entries of a
//!   device whose file system is not the one they were made on;
//! - the archive format is part of the key: the staged name decides
//!   whether a file is digested as an archive (`super::ArchiveFormat`).
//!
//! One file per user under the state root (`crate::state::digest_cache`),
//! replaced atomically; past [`MAX_ENTRIES`] the longest unused go first.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::{digest_open, ArchiveFormat, FileDigest, ARCHIVE_DIGEST_VERSION};
use crate::error::{Error, Result};

/// How close to the read a timestamp may be and still be trusted: covers
/// the kernel's coarse clock (a tick, at most 10 ms) and file systems that
/// keep seconds or, like FAT, two.
pub const GRANULARITY: std::time::Duration = std::time::Duration::from_secs(2);

/// Entries kept; about 128 bytes each on disk.
pub const MAX_ENTRIES: usize = 200_000;

const MAGIC: &[u8; 24] = b"prebuilder digest cache\n";
/// Bumped whenever the file layout changes.
const FORMAT_VERSION: u32 = 1;
const RECORD_SIZE: usize = 128;
/// A remembered entry's last use is rewritten at most this often, so an
/// unchanged relaunch does not rewrite the file.
const TOUCH_EVERY: u64 = 86_400;

/// What a file looked like when its digests were taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    dev: u64,
    ino: u64,
    /// 0 bytes, 1 tar, 2 zip: see [`format_byte`].
    format: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    size: u64,
    mtime: (i64, u32),
    ctime: (i64, u32),
}

impl Stat {
    fn of(meta: &Metadata) -> Stat {
        Stat {
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec() as u32),
            ctime: (meta.ctime(), meta.ctime_nsec() as u32),
        }
    }

    /// Whether both timestamps are older than `read_at` by more than
    /// `granularity` nanoseconds (git's racy rule; a time in the future is
    /// racy too: the clocks disagree).
    fn settled(&self, read_at: i128, granularity: i128) -> bool {
        let ns = |(s, n): (i64, u32)| i128::from(s) * 1_000_000_000 + i128::from(n);
        ns(self.mtime) + granularity < read_at && ns(self.ctime) + granularity < read_at
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    stat: Stat,
    sha256: [u8; 32],
    content: [u8; 32],
    /// Seconds since the epoch.
    last_used: u64,
}

fn format_byte(format: Option<ArchiveFormat>) -> u8 {
    match format {
        None => 0,
        Some(ArchiveFormat::Tar) => 1,
        Some(ArchiveFormat::Zip) => 2,
    }
}

/// How many digests came from the cache and how much was read, for the
/// progress lines and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Files whose digests were remembered.
    pub remembered: usize,
    /// Files read (and digested).
    pub read: usize,
    pub read_bytes: u64,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    /// Device → file system id, as recorded with the entries.
    filesystems: HashMap<u64, u64>,
    /// Device → file system id now, asked once per process.
    current: HashMap<u64, Option<u64>>,
    dirty: bool,
    stats: CacheStats,
}

impl Inner {
    fn fsid(&mut self, dev: u64, path: &Path) -> Option<u64> {
        *self
            .current
            .entry(dev)
            .or_insert_with(|| rustix::fs::statvfs(path).ok().map(|s| s.f_fsid))
    }

    /// The remembered digests of the file `meta` describes, when its device
    /// still holds the same file system.
    fn lookup(&mut self, key: Key, stat: Stat, path: &Path, now: u64) -> Option<FileDigest> {
        let recorded = *self.filesystems.get(&key.dev)?;
        if self.fsid(key.dev, path) != Some(recorded) {
            return None;
        }
        let entry = self.entries.get_mut(&key)?;
        if entry.stat != stat {
            return None;
        }
        if entry.last_used + TOUCH_EVERY < now {
            entry.last_used = now;
            self.dirty = true;
        }
        Some(FileDigest {
            size: stat.size,
            sha256: hex::encode(entry.sha256),
            content_digest: hex::encode(entry.content),
        })
    }

    fn remember(&mut self, key: Key, entry: Entry, path: &Path) {
        let Some(fsid) = self.fsid(key.dev, path) else {
            return;
        };
        if self.filesystems.get(&key.dev) != Some(&fsid) {
            // Another file system on this device number: its entries are
            // another file system's inodes.
            self.entries.retain(|k, _| k.dev != key.dev);
            self.filesystems.insert(key.dev, fsid);
        }
        self.entries.insert(key, entry);
        self.dirty = true;
    }
}

/// Staged files' digests, remembered across runs (see the module comment).
#[derive(Debug)]
pub struct DigestCache {
    /// `None`: nothing is loaded or saved (no state root, or tests).
    file: Option<PathBuf>,
    granularity_ns: i128,
    inner: Mutex<Inner>,
    /// Why the file on disk was not used, when it was not (for `-v`).
    pub ignored: Option<String>,
}

impl DigestCache {
    /// A cache for this process only: nothing is loaded or saved.
    pub fn in_memory() -> DigestCache {
        DigestCache {
            file: None,
            granularity_ns: GRANULARITY.as_nanos() as i128,
            inner: Mutex::new(Inner::default()),
            ignored: None,
        }
    }

    /// The cache kept in `file`; empty (and replaced on [`save`]) when the
    /// file is missing or cannot be trusted. Never fails.
    ///
    /// [`save`]: DigestCache::save
    pub fn open(file: PathBuf) -> DigestCache {
        let mut cache = DigestCache::in_memory();
        match load(&file) {
            Ok((entries, filesystems)) => {
                let inner = cache.inner.get_mut().unwrap_or_else(|e| e.into_inner());
                inner.entries = entries;
                inner.filesystems = filesystems;
            }
            Err(reason) => cache.ignored = Some(format!("{}: {reason}", file.display())),
        }
        cache.file = Some(file);
        cache
    }

    /// The same cache with another racy window (tests use a short one
    /// instead of sleeping two seconds).
    pub fn with_granularity(mut self, granularity: std::time::Duration) -> DigestCache {
        self.granularity_ns = granularity.as_nanos() as i128;
        self
    }

    /// The digests of `path`, digested as its own name says ([`super::digest_file`]).
    pub fn digest(&self, path: &Path) -> Result<FileDigest> {
        self.digest_as(path, path)
    }

    /// The digests of `path`, digested as the staged name `name` says
    /// (a copy's original may be named otherwise): remembered, else read.
    pub fn digest_as(&self, path: &Path, name: &Path) -> Result<FileDigest> {
        let format = ArchiveFormat::of(name);
        if let Some(found) = self.remembered_as(path, name) {
            return Ok(found);
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let before = file.metadata().map_err(|e| Error::io(path, e))?;
        let read_at = now_ns();
        let digest = digest_open(
            file.try_clone().map_err(|e| Error::io(path, e))?,
            path,
            format,
        )?;
        let after = file.metadata().map_err(|e| Error::io(path, e))?;
        let mut inner = self.lock();
        inner.stats.read += 1;
        inner.stats.read_bytes += digest.size;
        let stat = Stat::of(&before);
        if before.is_file()
            && stat == Stat::of(&after)
            && before.dev() == after.dev()
            && before.ino() == after.ino()
            && stat.size == digest.size
            && stat.settled(read_at, self.granularity_ns)
        {
            if let (Some(sha256), Some(content)) =
                (decode(&digest.sha256), decode(&digest.content_digest))
            {
                let key = Key {
                    dev: before.dev(),
                    ino: before.ino(),
                    format: format_byte(format),
                };
                let entry = Entry {
                    stat,
                    sha256,
                    content,
                    last_used: (read_at / 1_000_000_000) as u64,
                };
                inner.remember(key, entry, path);
            }
        }
        Ok(digest)
    }

    /// The remembered digests of `path` as the staged name `name` says,
    /// without reading it; `None` when they are not remembered or the file
    /// changed (or cannot be stat'ed).
    pub fn remembered_as(&self, path: &Path, name: &Path) -> Option<FileDigest> {
        let meta = std::fs::metadata(path).ok().filter(Metadata::is_file)?;
        let key = Key {
            dev: meta.dev(),
            ino: meta.ino(),
            format: format_byte(ArchiveFormat::of(name)),
        };
        let now = (now_ns() / 1_000_000_000) as u64;
        let mut inner = self.lock();
        let found = inner.lookup(key, Stat::of(&meta), path, now);
        if found.is_some() {
            inner.stats.remembered += 1;
        }
        found
    }

    pub fn stats(&self) -> CacheStats {
        self.lock().stats
    }

    /// Write the cache back when it changed: a temporary file beside it,
    /// renamed over it. `Ok(false)` when there was nothing to write.
    pub fn save(&self) -> io::Result<bool> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let mut inner = self.lock();
        if !inner.dirty {
            return Ok(false);
        }
        let dir = file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut entries: Vec<(Key, Entry)> = inner.entries.iter().map(|(k, e)| (*k, *e)).collect();
        if entries.len() > MAX_ENTRIES {
            entries.sort_by_key(|e| std::cmp::Reverse(e.1.last_used));
            entries.truncate(MAX_ENTRIES);
        }
        let bytes = encode(&entries, &inner.filesystems);
        let mut tmp = tempfile::Builder::new()
            .prefix(".digests-")
            .tempfile_in(dir)?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
        tmp.write_all(&bytes)?;
        tmp.persist(file).map_err(|e| e.error)?;
        inner.dirty = false;
        Ok(true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it left plain data behind: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

fn decode(hex_digest: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut out).ok()?;
    Some(out)
}

/// The header: magic, layout version, and the archive digest's version
/// (a remembered content digest is only good for the encoding it was made with).
fn header() -> Vec<u8> {
    let mut h = Vec::with_capacity(64);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&(ARCHIVE_DIGEST_VERSION.len() as u32).to_le_bytes());
    h.extend_from_slice(ARCHIVE_DIGEST_VERSION);
    h
}

/// header, file systems (count, then device and id each), entries (count,
/// then fixed-size records), and the sha256 of everything before it.
fn encode(entries: &[(Key, Entry)], filesystems: &HashMap<u64, u64>) -> Vec<u8> {
    let mut out = header();
    let mut fs: Vec<(&u64, &u64)> = filesystems.iter().collect();
    fs.sort();
    out.extend_from_slice(&(fs.len() as u32).to_le_bytes());
    for (dev, id) in fs {
        out.extend_from_slice(&dev.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    out.reserve(entries.len() * RECORD_SIZE + 32);
    for (k, e) in entries {
        let start = out.len();
        out.extend_from_slice(&k.dev.to_le_bytes());
        out.extend_from_slice(&k.ino.to_le_bytes());
        out.push(k.format);
        out.extend_from_slice(&[0u8; 7]);
        out.extend_from_slice(&e.stat.size.to_le_bytes());
        out.extend_from_slice(&e.stat.mtime.0.to_le_bytes());
        out.extend_from_slice(&e.stat.mtime.1.to_le_bytes());
        out.extend_from_slice(&e.stat.ctime.1.to_le_bytes());
        out.extend_from_slice(&e.stat.ctime.0.to_le_bytes());
        out.extend_from_slice(&e.last_used.to_le_bytes());
        out.extend_from_slice(&e.sha256);
        out.extend_from_slice(&e.content);
        debug_assert_eq!(out.len() - start, RECORD_SIZE);
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

type Loaded = (HashMap<Key, Entry>, HashMap<u64, u64>);

/// The cache in `file`, or why it cannot be trusted.
fn load(file: &Path) -> std::result::Result<Loaded, String> {
    let mut f = match File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok((HashMap::new(), HashMap::new()))
        }
        Err(e) => return Err(e.to_string()),
    };
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(format!("owned by uid {}, not this user", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "writable by others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    decode_file(&bytes)
}

fn decode_file(bytes: &[u8]) -> std::result::Result<Loaded, String> {
    let head = header();
    if bytes.len() < head.len() + 32 || !bytes.starts_with(MAGIC) {
        return Err("not a digest cache".into());
    }
    if !bytes.starts_with(&head) {
        return Err("written by another version".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err("checksum mismatch (corrupt or truncated)".into());
    }
    let mut r = Reader {
        bytes: body,
        at: head.len(),
    };
    let short = || "truncated".to_string();
    let fs_count = r.u32().ok_or_else(short)?;
    let mut filesystems = HashMap::new();
    for _ in 0..fs_count {
        let dev = r.u64().ok_or_else(short)?;
        let id = r.u64().ok_or_else(short)?;
        filesystems.insert(dev, id);
    }
    let count = r.u64().ok_or_else(short)? as usize;
    if body.len() - r.at != count.saturating_mul(RECORD_SIZE) {
        return Err("entry count does not match the file's size".into());
    }
    let mut entries = HashMap::with_capacity(count);
    for _ in 0..count {
        let rec = r.take(RECORD_SIZE).ok_or_else(short)?;
        let mut f = Reader { bytes: rec, at: 0 };
        let (dev, ino) = (f.u64().ok_or_else(short)?, f.u64().ok_or_else(short)?);
        let format = f.take(8).ok_or_else(short)?[0];
        let size = f.u64().ok_or_else(short)?;
        let mtime_s = f.u64().ok_or_else(short)? as i64;
        let mtime_ns = f.u32().ok_or_else(short)?;
        let ctime_ns = f.u32().ok_or_else(short)?;
        let ctime_s = f.u64().ok_or_else(short)? as i64;
        let last_used = f.u64().ok_or_else(short)?;
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(f.take(32).ok_or_else(short)?);
        let mut content = [0u8; 32];
        content.copy_from_slice(f.take(32).ok_or_else(short)?);
        if !filesystems.contains_key(&dev) {
            return Err(format!(
                "an entry names device {dev}, which has no file system id"
            ));
        }
        entries.insert(
            Key { dev, ino, format },
            Entry {
                stat: Stat {
                    size,
                    mtime: (mtime_s, mtime_ns),
                    ctime: (ctime_s, ctime_ns),
                },
                sha256,
                content,
                last_used,
            },
        );
    }
    Ok((entries, filesystems))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SHORT: Duration = Duration::from_millis(20);

    /// A file whose timestamps are settled for a cache with [`SHORT`].
    fn settled_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::thread::sleep(SHORT * 2);
        path
    }

    fn cache_in(dir: &Path) -> DigestCache {
        DigestCache::open(dir.join("state/digests")).with_granularity(SHORT)
    }

    #[test]
    fn a_relaunch_reads_nothing_and_gets_the_same_digests() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = settled_file(dir.path(), "a-1.0-py3-none-any.whl", &[7u8; 5000]);
        let first = cache_in(dir.path());
        let d1 = first.digest(&wheel).unwrap();
        assert_eq!(d1, super::super::digest_file(&wheel).unwrap());
        assert_eq!(first.stats().read, 1);
        assert!(first.save().unwrap());
        assert!(!first.save().unwrap(), "nothing new: nothing written");

        let second = cache_in(dir.path());
        assert!(second.ignored.is_none(), "{:?}", second.ignored);
        let d2 = second.digest(&wheel).unwrap();
        assert_eq!(d1, d2);
        assert_eq!(
            second.stats(),
            CacheStats {
                remembered: 1,
                read: 0,
                read_bytes: 0
            }
        );
    }

    /// Issue 22's test: the same size and mtime, other bytes; only the
    /// change time tells, and it is enough.
    #[test]
    fn a_file_rewritten_with_its_size_and_mtime_kept_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = settled_file(dir.path(), "r.txt", b"numpy==2.0.0\n");
        let cache = cache_in(dir.path());
        let before = cache.digest(&path).unwrap();
        cache.save().unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, b"numpy==2.0.1\n").unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.modified().unwrap(), mtime, "mtime restored");
        assert_eq!(meta.len(), 13, "size kept");
        std::thread::sleep(SHORT * 2);

        let again = cache_in(dir.path());
        let after = again.digest(&path).unwrap();
        assert_ne!(before.sha256, after.sha256);
        assert_eq!(after, super::super::digest_file(&path).unwrap());
        assert_eq!(again.stats().read, 1);
    }

    #[test]
    fn a_file_changed_within_the_granularity_is_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fresh.whl");
        std::fs::write(&path, b"just written").unwrap();
        let cache =
            DigestCache::open(dir.path().join("d")).with_granularity(Duration::from_secs(60));
        cache.digest(&path).unwrap();
        cache.digest(&path).unwrap();
        assert_eq!(cache.stats().read, 2, "racy: read every time");
        assert!(!cache.save().unwrap(), "nothing to remember");
    }

    #[test]
    fn the_staged_name_decides_the_format_and_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        builder.append_data(&mut h, "pkg/x", &b"abc"[..]).unwrap();
        let bytes = builder.into_inner().unwrap();
        let original = settled_file(dir.path(), "original.bin", &bytes);
        let cache = cache_in(dir.path());
        let as_bytes = cache.digest(&original).unwrap();
        let as_tar = cache
            .digest_as(&original, Path::new("workflow.tar"))
            .unwrap();
        assert_eq!(as_bytes.sha256, as_tar.sha256);
        assert_eq!(as_bytes.content_digest, as_bytes.sha256);
        assert_ne!(as_tar.content_digest, as_tar.sha256);
        assert_eq!(cache.stats().read, 2);
        assert_eq!(
            cache
                .digest_as(&original, Path::new("workflow.tar"))
                .unwrap(),
            as_tar
        );
        assert_eq!(cache.digest(&original).unwrap(), as_bytes);
        assert_eq!(cache.stats().remembered, 2);
    }

    fn saved(dir: &Path) -> (PathBuf, FileDigest) {
        let wheel = settled_file(dir, "w.whl", b"wheel bytes");
        let cache = cache_in(dir);
        let d = cache.digest(&wheel).unwrap();
        cache.save().unwrap();
        (wheel, d)
    }

    #[test]
    fn a_corrupt_truncated_or_foreign_cache_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (wheel, good) = saved(dir.path());
        let file = dir.path().join("state/digests");
        let bytes = std::fs::read(&file).unwrap();
        let mut flipped = bytes.clone();
        let at = flipped.len() - 40;
        flipped[at] ^= 1;
        let mut other_version = bytes.clone();
        other_version[MAGIC.len()] ^= 0xff;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("flipped", flipped),
            ("truncated", bytes[..bytes.len() - 10].to_vec()),
            ("other version", other_version),
            ("garbage", b"not a cache at all, not even close".to_vec()),
            ("empty", Vec::new()),
        ];
        for (what, content) in cases {
            std::fs::write(&file, &content).unwrap();
            let cache = cache_in(dir.path());
            assert!(cache.ignored.is_some(), "{what}");
            assert_eq!(cache.digest(&wheel).unwrap(), good, "{what}");
            assert_eq!(cache.stats().read, 1, "{what}: never believed");
        }
        // A forged entry with a valid checksum but a lie for a digest
        // would be believed: what guards it is who may write the file.
        std::fs::write(&file, &bytes).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let cache = cache_in(dir.path());
        assert!(
            cache
                .ignored
                .as_deref()
                .unwrap()
                .contains("writable by others"),
            "{:?}",
            cache.ignored
        );
        cache.digest(&wheel).unwrap();
        assert_eq!(cache.stats().read, 1);
    }

    #[test]
    fn entries_of_another_file_system_on_the_same_device_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (wheel, _) = saved(dir.path());
        let file = dir.path().join("state/digests");
        let (entries, mut filesystems) = decode_file(&std::fs::read(&file).unwrap()).unwrap();
        for id in filesystems.values_mut() {
            *id ^= 1;
        }
        let entries: Vec<(Key, Entry)> = entries.into_iter().collect();
        std::fs::write(&file, encode(&entries, &filesystems)).unwrap();
        let cache = cache_in(dir.path());
        assert!(cache.ignored.is_none());
        cache.digest(&wheel).unwrap();
        assert_eq!(cache.stats().read, 1, "another file system's inode");
        cache.save().unwrap();
        let (entries, _) = decode_file(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(
            entries.len(),
            1,
            "the old file system's entries are dropped"
        );
        let cache = cache_in(dir.path());
        cache.digest(&wheel).unwrap();
        assert_eq!(cache.stats().remembered, 1);
    }

    #[test]
    fn the_file_round_trips_and_drops_the_longest_unused_past_the_bound() {
        let key = |ino| Key {
            dev: 5,
            ino,
            format: 1,
        };
        let entry = |used| Entry {
            stat: Stat {
                size: 9,
                mtime: (-3, 4),
                ctime: (1_700_000_000, 999_999_999),
            },
            sha256: [1; 32],
            content: [2; 32],
            last_used: used,
        };
        let fs = HashMap::from([(5u64, 77u64)]);
        let entries = vec![(key(1), entry(10)), (key(2), entry(20))];
        let (back, back_fs) = decode_file(&encode(&entries, &fs)).unwrap();
        assert_eq!(back_fs, fs);
        assert_eq!(back.len(), 2);
        assert_eq!(back[&key(1)].stat, entries[0].1.stat);
        assert_eq!(back[&key(2)].last_used, 20);
        assert_eq!(back[&key(2)].sha256, [1; 32]);

        let dir = tempfile::tempdir().unwrap();
        let cache = DigestCache::open(dir.path().join("d"));
        {
            let mut inner = cache.lock();
            inner.filesystems = fs;
            for i in 0..(MAX_ENTRIES as u64 + 3) {
                inner.entries.insert(key(i), entry(i));
            }
            inner.dirty = true;
        }
        cache.save().unwrap();
        let (kept, _) = decode_file(&std::fs::read(dir.path().join("d")).unwrap()).unwrap();
        assert_eq!(kept.len(), MAX_ENTRIES);
        assert!(!kept.contains_key(&key(0)) && !kept.contains_key(&key(2)));
        assert!(kept.contains_key(&key(3)) && kept.contains_key(&key(MAX_ENTRIES as u64 + 2)));
    }

    #[test]
    fn an_in_memory_cache_saves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = settled_file(dir.path(), "w.whl", b"x");
        let cache = DigestCache::in_memory().with_granularity(SHORT);
        cache.digest(&wheel).unwrap();
        assert!(!cache.save().unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_file_is_an_io_error_naming_it() {
        let cache = DigestCache::in_memory();
        let path = Path::new("/nonexistent/prebuilder/x.whl");
        match cache.digest(path) {
            Err(Error::Io { path: p, .. }) => assert_eq!(p, path),
            other => panic!("{other:?}"),
        }
        assert!(cache.remembered_as(path, path).is_none());
    }
}
