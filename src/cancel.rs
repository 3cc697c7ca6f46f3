//! Cancellation passed in from the binary: the first SIGINT, SIGTERM or
//! SIGHUP cancels the running command, which then removes what it created
//! and returns [`crate::Error::Interrupted`]; the binary exits at once on a
//! second signal. Library code never reads signals itself.

use tokio::sync::watch;

/// The signal that cancelled a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
    Hangup,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
            Signal::Hangup => "SIGHUP",
        }
    }

    /// The exit status after clean-up: 128 + the signal's number, as shells
    /// report them (130 for Ctrl-C; it was 2, which CI could not tell from
    /// bad input).
    pub fn exit_code(self) -> i32 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
            Signal::Hangup => 129,
        }
    }
}

/// A cancellation token that says which signal fired.
#[derive(Clone)]
pub struct Cancel(watch::Receiver<Option<Signal>>);

/// The sending half: the binary's signal watcher.
pub type Trigger = watch::Sender<Option<Signal>>;

impl Cancel {
    pub fn new() -> (Trigger, Cancel) {
        let (tx, rx) = watch::channel(None);
        (tx, Cancel(rx))
    }

    /// A token that is never cancelled (tests, library callers without signals).
    pub fn never() -> Cancel {
        let (tx, cancel) = Cancel::new();
        // Keep the sender alive for ever, so the token stays pending.
        std::mem::forget(tx);
        cancel
    }

    /// Resolves with the signal once the command is cancelled.
    pub async fn cancelled(&self) -> Signal {
        let mut rx = self.0.clone();
        loop {
            if let Some(signal) = *rx.borrow_and_update() {
                return signal;
            }
            if rx.changed().await.is_err() {
                // The trigger is gone: no signal can come any more.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_token_says_which_signal_fired() {
        let (tx, cancel) = Cancel::new();
        let waiting = tokio::spawn({
            let cancel = cancel.clone();
            async move { cancel.cancelled().await }
        });
        tx.send(Some(Signal::Terminate)).unwrap();
        assert_eq!(waiting.await.unwrap(), Signal::Terminate);
        assert_eq!(cancel.cancelled().await, Signal::Terminate);
        assert_eq!(Signal::Terminate.exit_code(), 143);
        assert_eq!(Signal::Hangup.exit_code(), 129);
        assert_eq!(Signal::Interrupt.exit_code(), 130);
    }

    #[tokio::test]
    async fn never_stays_pending() {
        let never = Cancel::never();
        let r = tokio::time::timeout(std::time::Duration::from_millis(50), never.cancelled()).await;
        assert!(r.is_err());
    }
}
