//! One exclusive lock per layer key, shared by every prebuilder process that
//! uses the same lock directory: a concurrent run with the same inputs waits
//! for the first, then finds its image instead of building it again.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::progress::{Event, Reporter};

/// The default lock directory.
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join("prebuilder-locks")
}

/// Lock `key`, waiting for another holder. `None` (build anyway, with a
/// warning) when the lock file cannot be made or locked: a lock only saves
/// work, it is never needed for a correct result.
pub async fn acquire(dir: &Path, key: &str, reporter: &dyn Reporter) -> Option<File> {
    let path = dir.join(format!("{key}.lock"));
    let file = std::fs::create_dir_all(dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
    });
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(
                "cannot create lock {}: {e}; building without it",
                path.display()
            );
            return None;
        }
    };
    if let Ok(()) = file.try_lock() {
        return Some(file);
    }
    reporter.event(Event::WaitingForLock);
    match tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await {
        Ok(Ok(f)) => Some(f),
        Ok(Err(e)) => {
            tracing::warn!("cannot lock {}: {e}; building without it", path.display());
            None
        }
        Err(_) => None,
    }
}
