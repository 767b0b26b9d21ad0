//! Whether the store answers, as last seen. Intake answers 503 before any
//! other check while it does not (intake-api.md: 503 comes first), so a bad
//! body sent during an outage is not judged by a gateway that could not
//! store a good one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::StoreError;

/// The store's last known health, shared by intake, readiness and the
/// watcher that pings the store.
#[derive(Debug, Clone)]
pub struct StoreHealth(Arc<AtomicBool>);

impl Default for StoreHealth {
    fn default() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
}

impl StoreHealth {
    /// Whether the store answered when last asked.
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The store could not be reached.
    pub fn set_down(&self) {
        self.0.store(false, Ordering::Relaxed);
    }

    /// Takes what a store call found: an answer means up, an unreachable
    /// store down; unreadable data says nothing about reachability.
    pub fn record<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Ok(_) => self.0.store(true, Ordering::Relaxed),
            Err(StoreError::Unavailable(_)) => self.set_down(),
            Err(StoreError::Corrupt(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_store_is_down_until_it_answers_again() {
        let health = StoreHealth::default();
        assert!(health.is_up());
        health.record::<()>(&Err(StoreError::from(sqlx::Error::PoolTimedOut)));
        assert!(!health.is_up());
        health.record::<()>(&Err(StoreError::Corrupt("x".into())));
        assert!(
            !health.is_up(),
            "unreadable data says nothing of reachability"
        );
        health.record(&Ok(()));
        assert!(health.is_up());
    }
}
