//! One exclusive lock per layer key, shared by every prebuilder process that
//! uses the same lock directory (one per engine under the machine-wide state
//! root, `crate::state`, whatever `$TMPDIR` is): a concurrent run with the
//! same inputs waits for the first, then finds its image instead of building
//! it again.

use std::fs::File;
use std::path::Path;

use crate::progress::{Event, Reporter};

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
    // Polled, not a blocking `lock()` on a thread: dropping this future (a
    // signal) then stops the wait at once instead of holding the process.
    loop {
        tokio::time::sleep(POLL).await;
        match file.try_lock() {
            Ok(()) => return Some(file),
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::warn!("cannot lock {}: {e}; building without it", path.display());
                return None;
            }
        }
    }
}

/// How often a waiting run tries the lock again.
const POLL: std::time::Duration = std::time::Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;

    #[tokio::test]
    async fn a_second_holder_waits_and_the_wait_can_be_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path(), "k", &Silent).await.unwrap();
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            acquire(dir.path(), "k", &Silent),
        )
        .await;
        assert!(
            waiting.is_err(),
            "the second waits while the first holds it"
        );
        drop(held);
        let again = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            acquire(dir.path(), "k", &Silent),
        )
        .await
        .unwrap();
        assert!(again.is_some(), "free once the holder is gone");
    }
}
