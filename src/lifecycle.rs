//! The process's lifecycle as a value every task holds: running, then draining.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

/// Shared drain state: set once on SIGTERM/SIGINT, never cleared.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    draining: Arc<AtomicBool>,
    token: CancellationToken,
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the drain: readiness turns 503, intake answers 503, workers stop
    /// claiming new work.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.token.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Completes when the drain starts.
    pub async fn drained(&self) {
        self.token.cancelled().await;
    }
}
