//! Reconciliation: handoffs Vietnam Post has been quiet about are polled
//! (GetStatusHistoryOrder), and what the webhooks missed goes through the
//! same state machine with source `poll`.

use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;

use super::EventsState;
use crate::carrier::{CallFailure, Carrier};
use crate::dispatch::guard::{CallResult, PostalGuard};
use crate::domain::state_machine::CarrierEvent;
use crate::domain::{CarrierInfo, Source};
use crate::lifecycle::Lifecycle;
use crate::store::{EventOutcome, IncomingCarrierEvent};

/// Handoffs polled per round.
const BATCH: u32 = 50;

/// The reconciliation poller of one process.
pub struct Poller {
    state: EventsState,
    carrier: Arc<dyn Carrier>,
    guard: Arc<PostalGuard>,
    /// `postal.reconcile_after_s`.
    quiet_for: Duration,
}

impl Poller {
    pub fn new(
        state: EventsState,
        carrier: Arc<dyn Carrier>,
        guard: Arc<PostalGuard>,
        quiet_for: Duration,
    ) -> Self {
        Self {
            state,
            carrier,
            guard,
            quiet_for,
        }
    }

    /// Polls every handoff that is quiet now; returns how many were polled.
    pub async fn poll_quiet(&self) -> anyhow::Result<usize> {
        let mut polled = 0;
        loop {
            let now = self.state.clock.now();
            let quiet_since = now - SignedDuration::try_from(self.quiet_for)?;
            let quiet = self.state.store.quiet_handoffs(quiet_since, BATCH).await?;
            if quiet.is_empty() {
                return Ok(polled);
            }
            for (id, tracking_number) in quiet {
                self.poll_one(&id, &tracking_number).await?;
                polled += 1;
            }
        }
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %id))]
    async fn poll_one(
        &self,
        id: &crate::domain::HandoffId,
        tracking_number: &str,
    ) -> anyhow::Result<()> {
        let permit = self.guard.permit().await;
        let history = self.carrier.tracking(tracking_number).await;
        permit.record(match &history {
            Err(f @ CallFailure::Transient { .. }) => CallResult::Failed {
                retry_after: f.retry_after(),
            },
            _ => CallResult::Answered,
        });
        let now = self.state.clock.now();
        match history {
            Ok(events) => {
                let incoming: Vec<IncomingCarrierEvent> = events
                    .into_iter()
                    .map(|e| IncomingCarrierEvent {
                        sale_order_code: Some(id.to_string()),
                        tracking_number: Some(tracking_number.to_owned()),
                        order: None,
                        event: CarrierEvent {
                            source: Source::Poll,
                            code: e.code,
                            occurred_at: e.occurred_at,
                        },
                        carrier: CarrierInfo {
                            code: e.code,
                            text: e.text,
                            location: e.location,
                        },
                        raw: None,
                    })
                    .collect();
                if !incoming.is_empty() {
                    let outcomes = self
                        .state
                        .store
                        .apply_carrier_events(incoming, &self.state.context, now)
                        .await?;
                    for o in outcomes {
                        let label = match o {
                            EventOutcome::UnknownOrder => "unknown_order",
                            EventOutcome::Recorded { effect, legs, .. } => {
                                for (kind, stage, seconds) in legs {
                                    self.state.metrics.leg(kind.as_str(), stage, seconds);
                                }
                                effect.as_str()
                            }
                        };
                        self.state.metrics.postal_event("poll", label);
                    }
                }
            }
            Err(failure) => {
                tracing::warn!(
                    ?failure,
                    "tracking poll failed; trying again after the quiet period"
                );
            }
        }
        // Quiet again from now: the next poll comes one period later.
        self.state.store.mark_polled(id, now).await?;
        Ok(())
    }

    /// Polls every `interval` until the drain.
    pub async fn run(self: Arc<Self>, lifecycle: Lifecycle, interval: Duration) {
        while !lifecycle.is_draining() {
            if let Err(e) = self.poll_quiet().await {
                tracing::warn!(error = %e, "reconciliation round failed");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = lifecycle.drained() => {}
            }
        }
    }
}
