//! The store: the only hand-off between the gateway's steps.
//!
//! Every method is one transaction. The trait is the whole contract between
//! the workers and a backend; `sqlite` and (later) `postgres` implement it.

pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::domain::{Handoff, HandoffId, HandoffRequest, TimelineEntry};

/// A store that cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed; the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Stored data the gateway cannot read back: a bug or a manual edit.
    #[error("store holds unreadable data: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e)
    }
}

/// A handoff to record, with its postal create job, in one transaction.
#[derive(Debug, Clone)]
pub struct NewHandoff {
    pub id: HandoffId,
    pub client: String,
    pub request: HandoffRequest,
    pub request_sha256: [u8; 32],
    pub now: Timestamp,
}

/// What recording a new handoff did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Stored now, with its postal job.
    Created(Handoff),
    /// The client used this `request_id` before; `same_request` tells whether
    /// the canonical requests are equal.
    Existing {
        handoff: Handoff,
        same_request: bool,
    },
}

/// Which handoffs a list asks for.
#[derive(Debug, Clone, Default)]
pub struct HandoffFilter {
    /// Restricts to one client's handoffs (`None`: across clients, for operators).
    pub client: Option<String>,
    pub dossier_code: Option<String>,
    pub request_id: Option<String>,
    pub status: Option<crate::domain::Status>,
    pub tracking_number: Option<String>,
}

/// A page of handoffs, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<Handoff>,
    /// Pass back as `cursor` to read the next page.
    pub next_cursor: Option<String>,
}

/// The gateway's durable state.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the store can serve requests.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Records a handoff and its postal create job, or finds the one the client
    /// created before with the same `request_id`.
    async fn create_handoff(&self, new: NewHandoff) -> Result<CreateOutcome, StoreError>;

    /// One handoff; `client` restricts the search to that client's handoffs.
    async fn handoff(
        &self,
        client: Option<&str>,
        id: &HandoffId,
    ) -> Result<Option<Handoff>, StoreError>;

    /// The handoff's timeline, oldest first.
    async fn timeline(&self, id: &HandoffId) -> Result<Vec<TimelineEntry>, StoreError>;

    /// Handoffs matching the filter, newest first.
    async fn list_handoffs(
        &self,
        filter: &HandoffFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page, StoreError>;

    /// Counts the number of handoffs in total (tests and stats).
    async fn count_handoffs(&self) -> Result<u64, StoreError>;

    /// Counts pending postal jobs (tests and metrics).
    async fn count_pending_postal_jobs(&self) -> Result<u64, StoreError>;

    /// Releases what this process holds (leases, locks) before exit.
    async fn close(&self);
}

/// A shared store handle.
pub type SharedStore = Arc<dyn Store>;

/// Opens the store named by `store.url`, running its migrations.
pub async fn open(
    url: &str,
    settings: &crate::config::StoreSettings,
) -> anyhow::Result<SharedStore> {
    if url.starts_with("sqlite:") {
        let store = sqlite::SqliteStore::open(url, settings).await?;
        Ok(Arc::new(store))
    } else {
        anyhow::bail!("store.url {url:?}: only sqlite:// is supported in this build")
    }
}

pub(crate) fn ms(ts: Timestamp) -> i64 {
    ts.as_millisecond()
}

pub(crate) fn from_ms(ms: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millisecond(ms).map_err(|e| StoreError::Corrupt(format!("time {ms}: {e}")))
}
