//! Group commit of intake writes, for both backends.
//!
//! Every commit of a durable store waits for its log to reach the disk
//! (SQLite's WAL fsync with `synchronous=FULL`, PostgreSQL's WAL flush), which
//! caps single-handoff transactions at a few thousand per second. Intake
//! requests arriving together are therefore written by one task in one
//! transaction: whatever is queued when the previous commit ends forms the
//! next group (no timer, so a lone request waits for nothing). Each request
//! is answered only after the commit that holds it.
//!
//! A backend writes a group with a few multi-row statements. Requests
//! repeating a `(client, request_id)` of the same group are resolved before
//! writing, exactly as if they had come one after the other: the first is
//! inserted, the later ones find it. If a multi-row statement fails, the
//! group is written again one request per savepoint, so one request's
//! failure fails that request alone.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::shared::new_handoff_record;
use super::{CreateOutcome, NewHandoff, StoreError};
use crate::domain::Handoff;

/// Most requests one transaction carries (bounds the size of a statement's
/// arguments and the time the first of them waits).
pub(super) const MAX_GROUP: usize = 512;
/// Requests waiting for the writer before callers wait to queue.
const QUEUE: usize = 4096;

/// One intake request waiting for its group's commit.
pub(super) struct Pending {
    pub(super) new: NewHandoff,
    pub(super) reply: oneshot::Sender<Result<CreateOutcome, StoreError>>,
}

impl Pending {
    /// A request for the writer, and where its answer will come.
    pub(super) fn new(
        new: NewHandoff,
    ) -> (Self, oneshot::Receiver<Result<CreateOutcome, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        (Pending { new, reply }, answer)
    }

    pub(super) fn key(&self) -> (&str, &str) {
        (&self.new.client, &self.new.request.request_id)
    }
}

/// How a backend writes a group.
#[async_trait]
pub(super) trait GroupWriter: Send + 'static {
    /// Writes the group in one transaction and returns each request's
    /// outcome, in order. An `Err` means nothing was committed.
    async fn write(
        &mut self,
        group: &[Pending],
    ) -> Result<Vec<Result<CreateOutcome, StoreError>>, StoreError>;
}

/// The queue of the intake writer.
pub(super) struct IntakeQueue {
    queue: mpsc::Sender<Pending>,
}

impl IntakeQueue {
    /// Starts the writer's task; it ends once the queue is dropped and empty.
    pub(super) fn start(writer: impl GroupWriter) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(writer, rx));
        Self { queue }
    }

    /// Records the handoff in the next group; answers once it is committed.
    pub(super) async fn create(&self, new: NewHandoff) -> Result<CreateOutcome, StoreError> {
        let (pending, answer) = Pending::new(new);
        self.queue
            .send(pending)
            .await
            .map_err(|_| StoreError::gone("the intake writer has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::gone("the intake writer dropped a request"))?
    }
}

async fn run(mut writer: impl GroupWriter, mut rx: mpsc::Receiver<Pending>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let written = writer.write(&group).await;
        answer(&mut group, written);
    }
}

/// Answers every request of a written group (and empties it).
pub(super) fn answer(
    group: &mut Vec<Pending>,
    written: Result<Vec<Result<CreateOutcome, StoreError>>, StoreError>,
) {
    let size = group.len();
    match written {
        Ok(outcomes) => {
            for (pending, outcome) in group.drain(..).zip(outcomes) {
                // A caller that went away (its client hung up) still had
                // its handoff committed; nothing to tell it.
                let _ = pending.reply.send(outcome);
            }
            tracing::debug!(size, "intake group committed");
        }
        Err(e) => {
            tracing::error!(error = %e, size, "intake group could not be committed");
            let text = e.to_string();
            for pending in group.drain(..) {
                let _ = pending
                    .reply
                    .send(Err(StoreError::Unavailable(text.clone().into())));
            }
        }
    }
}

/// What became of one request in the group, before reading stored rows.
pub(super) enum Slot {
    /// Inserted now.
    Created,
    /// Not inserted: the handoff stored under its key answers it.
    Existing,
    /// Failed alone (slow path only).
    Failed(StoreError),
}

/// The requests of a group that may insert: the first of each key.
pub(super) fn firsts(group: &[Pending]) -> impl Iterator<Item = &Pending> {
    let mut keys: HashSet<(&str, &str)> = HashSet::with_capacity(group.len());
    group.iter().filter(move |p| keys.insert(p.key()))
}

/// Slots from the ids a multi-row insert returned: ids are new for every
/// request, so only the request that inserted its handoff finds its id.
pub(super) fn slots(group: &[Pending], created: &HashSet<&str>) -> Vec<Slot> {
    group
        .iter()
        .map(|p| {
            if created.contains(p.new.id.as_str()) {
                Slot::Created
            } else {
                Slot::Existing
            }
        })
        .collect()
}

/// The requests whose stored handoff must be read.
pub(super) fn not_inserted<'g>(
    group: &'g [Pending],
    slots: &[Slot],
) -> impl Iterator<Item = &'g Pending> {
    group
        .iter()
        .zip(slots.iter())
        .filter(|(_, s)| matches!(s, Slot::Existing))
        .map(|(p, _)| p)
}

/// Stored handoffs by `(client, request_id)`, with their request hash.
pub(super) type Existing = HashMap<(String, String), (Handoff, Vec<u8>)>;

/// Each request's answer, in order.
pub(super) fn outcomes(
    group: &[Pending],
    slots: Vec<Slot>,
    existing: &Existing,
) -> Vec<Result<CreateOutcome, StoreError>> {
    group
        .iter()
        .zip(slots)
        .map(|(p, slot)| match slot {
            Slot::Created => Ok(CreateOutcome::Created(new_handoff_record(&p.new))),
            Slot::Failed(e) => Err(e),
            Slot::Existing => {
                let key = (p.new.client.clone(), p.new.request.request_id.clone());
                match existing.get(&key) {
                    Some((handoff, sha)) => Ok(CreateOutcome::Existing {
                        handoff: handoff.clone(),
                        same_request: sha[..] == p.new.request_sha256[..],
                    }),
                    None => Err(StoreError::Corrupt(
                        "a handoff not inserted is not stored either".into(),
                    )),
                }
            }
        })
        .collect()
}
