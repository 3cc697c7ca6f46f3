//! Where prebuilder keeps what every process on this machine must share or
//! be able to clean up after another: the per-key locks and each process's
//! scratch directory (the layer's snapshot.tar, layer.tar and image.tar).
//!
//! Both live under one *state root*, chosen the same way whatever `$TMPDIR`
//! is, so two runs with different temporary directories still share a lock
//! (issue 12: four runs with four TMPDIRs did four full builds). Each process
//! writes its temporary files in `<root>/tmp/<host>-<pid>/`; a process that
//! was killed (SIGKILL, OOM) leaves that directory behind, and the next build
//! or `gc` on the same host removes every one whose process is gone.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Overrides the state root (tests, unusual layouts).
pub const STATE_DIR_ENV: &str = "PREBUILDER_STATE_DIR";
/// The machine-wide default.
const SYSTEM_DIR: &str = "/var/lib/prebuilder";

/// Labels on every container prebuilder creates: which process on which host
/// made it, so a later run can tell an orphan (its process is gone) from a
/// container another live run is using.
pub const LABEL_PID: &str = "prebuilder.pid";
pub const LABEL_HOST: &str = "prebuilder.host";

/// The state root and, when it is not shared machine-wide, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub dir: PathBuf,
    /// Set when the root fell back to a per-user temporary directory: locks
    /// are then shared only with runs that use the same one.
    pub warning: Option<String>,
}

/// Choose the state root: `$PREBUILDER_STATE_DIR`, else `/var/lib/prebuilder`
/// when it can be created and written, else `$XDG_RUNTIME_DIR/prebuilder`,
/// else a per-user directory under the temporary directory (with a warning).
pub fn root(settings: &crate::settings::Settings) -> Root {
    let env = |k: &str| settings.var(k).map(PathBuf::from);
    // What `std::env::temp_dir` gives on Unix, from the settings.
    let temp = env("TMPDIR").unwrap_or_else(|| PathBuf::from("/tmp"));
    choose(
        env(STATE_DIR_ENV),
        Path::new(SYSTEM_DIR),
        env("XDG_RUNTIME_DIR"),
        &temp,
        usable,
    )
}

/// [`root`]'s rule, with the environment and the file system passed in.
fn choose(
    explicit: Option<PathBuf>,
    system: &Path,
    runtime: Option<PathBuf>,
    temp: &Path,
    usable: impl Fn(&Path) -> bool,
) -> Root {
    if let Some(dir) = explicit {
        return Root { dir, warning: None };
    }
    if usable(system) {
        return Root {
            dir: system.to_path_buf(),
            warning: None,
        };
    }
    if let Some(dir) = runtime.map(|r| r.join("prebuilder")) {
        if usable(&dir) {
            return Root { dir, warning: None };
        }
    }
    let dir = temp.join(format!("prebuilder-{}", uid()));
    let warning = Some(format!(
        "neither {} nor $XDG_RUNTIME_DIR/prebuilder is writable; locks and temporary files go to {}, so only runs with the same TMPDIR share a lock (set {STATE_DIR_ENV} to a directory every run can write)",
        system.display(),
        dir.display()
    ));
    Root { dir, warning }
}

/// Whether `dir` exists (or can be made) and a file can be created in it.
fn usable(dir: &Path) -> bool {
    if std::fs::create_dir_all(dir).is_err() {
        return false;
    }
    tempfile::tempfile_in(dir).is_ok()
}

fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// Where pushes remember which blob each layer compressed to (see
/// `crate::build::publish`): a cache, safe to delete.
pub fn blob_map_dir(root: &Path) -> PathBuf {
    root.join("blobs")
}

/// The lock directory for one engine: locks are per engine endpoint, since
/// a layer built on one engine is no use to a run on another.
pub fn lock_dir(root: &Path, endpoint: &str) -> PathBuf {
    let digest = hex::encode(Sha256::digest(endpoint.as_bytes()));
    root.join("locks").join(&digest[..16])
}

/// This machine's name, as containers and scratch directories record it.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Whether process `pid` on this host is running. A pid that was reused
/// counts as alive: its leftovers then wait for a later sweep, never the
/// other way round.
pub fn alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// The owner labels of a container this process creates.
pub fn owner_labels() -> [(String, String); 2] {
    [
        (LABEL_PID.to_string(), std::process::id().to_string()),
        (LABEL_HOST.to_string(), host()),
    ]
}

/// Whether a container with these labels is an orphan: made on this host by
/// a process that is gone. Containers of other hosts, or without the labels
/// (made by an older prebuilder), are never touched.
pub fn orphaned(
    labels: &std::collections::BTreeMap<String, String>,
    host: &str,
    alive: impl Fn(u32) -> bool,
) -> bool {
    let pid = labels.get(LABEL_PID).and_then(|p| p.parse::<u32>().ok());
    match (pid, labels.get(LABEL_HOST)) {
        (Some(pid), Some(h)) => h == host && !alive(pid),
        _ => false,
    }
}

/// This process's scratch directory, removed when dropped (on every exit
/// path the process itself survives; the next sweep takes it otherwise).
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// `<root>/tmp/<host>-<pid>`, created (emptied first: a directory with
    /// this name belongs to a dead process whose pid was reused).
    pub fn create(root: &Path) -> std::io::Result<Scratch> {
        let dir = root
            .join("tmp")
            .join(format!("{}-{}", host(), std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // A blocking writer of an interrupted build may still add a file
        // while the tree is removed: one retry, then the next sweep.
        if std::fs::remove_dir_all(&self.dir).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(
                        "could not remove {}: {e}; the next build or `prebuilder gc` removes it",
                        self.dir.display()
                    );
                }
            }
        }
    }
}

/// Scratch directories under `root` left by processes of this host that are
/// gone: removed (or only listed, `dry_run`). Their paths.
pub fn sweep_scratch(root: &Path, dry_run: bool) -> Vec<PathBuf> {
    sweep_scratch_with(root, &host(), alive, dry_run)
}

fn sweep_scratch_with(
    root: &Path,
    host: &str,
    alive: impl Fn(u32) -> bool,
    dry_run: bool,
) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root.join("tmp")) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((h, pid)) = name.rsplit_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if h != host || alive(pid) {
            continue;
        }
        let path = entry.path();
        if dry_run || std::fs::remove_dir_all(&path).is_ok() {
            swept.push(path);
        }
    }
    swept.sort();
    swept
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_root_is_the_same_whatever_tmpdir_is() {
        let system = tempfile::tempdir().unwrap();
        let a = choose(None, system.path(), None, Path::new("/tmp/a"), |_| true);
        let b = choose(None, system.path(), None, Path::new("/tmp/b"), |_| true);
        assert_eq!(a, b);
        assert_eq!(a.dir, system.path());
        assert!(a.warning.is_none());
    }

    #[test]
    fn the_root_falls_back_to_the_runtime_dir_then_tmp_with_a_warning() {
        let sys = Path::new("/nonexistent/system");
        let run = PathBuf::from("/run/user/1000");
        let r = choose(None, sys, Some(run.clone()), Path::new("/tmp"), |p| {
            p.starts_with("/run")
        });
        assert_eq!(r.dir, run.join("prebuilder"));
        assert!(r.warning.is_none());
        let r = choose(None, sys, Some(run), Path::new("/tmp/x"), |_| false);
        assert!(r.dir.starts_with("/tmp/x"), "{r:?}");
        let w = r.warning.unwrap();
        assert!(
            w.contains("/nonexistent/system") && w.contains(STATE_DIR_ENV),
            "{w}"
        );
        let r = choose(Some("/e".into()), sys, None, Path::new("/tmp"), |_| false);
        assert_eq!(r.dir, Path::new("/e"));
    }

    #[test]
    fn locks_are_per_engine_endpoint() {
        let root = Path::new("/r");
        let a = lock_dir(root, "unix:///var/run/docker.sock");
        assert_eq!(a, lock_dir(root, "unix:///var/run/docker.sock"));
        assert_ne!(a, lock_dir(root, "tcp://127.0.0.1:2375"));
        assert!(a.starts_with("/r/locks"));
    }

    #[test]
    fn only_containers_of_dead_processes_on_this_host_are_orphans() {
        let labels = |pid: &str, host: &str| {
            BTreeMap::from([
                (LABEL_PID.to_string(), pid.to_string()),
                (LABEL_HOST.to_string(), host.to_string()),
            ])
        };
        let alive = |pid| pid == 10;
        assert!(orphaned(&labels("11", "h"), "h", alive));
        assert!(!orphaned(&labels("10", "h"), "h", alive), "alive");
        assert!(!orphaned(&labels("11", "other"), "h", alive), "other host");
        assert!(!orphaned(&labels("x", "h"), "h", alive), "bad pid");
        assert!(!orphaned(&BTreeMap::new(), "h", alive), "no labels");
    }

    #[test]
    fn scratch_is_removed_on_drop_and_dead_ones_are_swept() {
        let root = tempfile::tempdir().unwrap();
        let scratch = Scratch::create(root.path()).unwrap();
        std::fs::write(scratch.path().join("layer.tar"), "x").unwrap();
        let mine = scratch.path().to_path_buf();
        let dead = root.path().join("tmp/h-999999");
        let live = root.path().join("tmp/h-10");
        let other = root.path().join("tmp/g-999999");
        for d in [&dead, &live, &other] {
            std::fs::create_dir_all(d.join("sub")).unwrap();
        }
        let alive = |pid| pid == 10;
        assert_eq!(
            sweep_scratch_with(root.path(), "h", alive, true),
            vec![dead.clone()]
        );
        assert!(dead.exists(), "a dry run removes nothing");
        assert_eq!(
            sweep_scratch_with(root.path(), "h", alive, false),
            vec![dead.clone()]
        );
        assert!(!dead.exists() && live.exists() && other.exists());
        assert!(mine.exists());
        drop(scratch);
        assert!(!mine.exists());
    }
}
