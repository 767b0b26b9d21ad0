//! Reconciliation: handoffs Vietnam Post has been quiet about are polled
//! (GetStatusHistoryOrder), and what the webhooks missed goes through the
//! same state machine with source `poll`.

use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;

use super::EventsState;
use crate::carrier::guard::{CallResult, PostalGuard};
use crate::carrier::{CallFailure, Carrier, CarrierOrder};
use crate::domain::ownership::OrderFate;
use crate::domain::state_machine::CarrierEvent;
use crate::domain::time::vietnam;
use crate::domain::{CarrierInfo, PostalOrder, Source};
use crate::lifecycle::Lifecycle;
use crate::store::{IncomingCarrierEvent, QuietHandoff};

/// Handoffs polled per round.
const BATCH: u32 = 50;

/// The reconciliation poller of one process.
pub struct Poller {
    state: EventsState,
    carrier: Arc<dyn Carrier>,
    guard: Arc<PostalGuard>,
    /// `postal.reconcile_after_s`.
    quiet_for: Duration,
    /// `postal.cod_settle_days`: how long a delivered COD return is polled
    /// for Vietnam Post's code 21.
    cod_settle: Duration,
}

impl Poller {
    pub fn new(
        state: EventsState,
        carrier: Arc<dyn Carrier>,
        guard: Arc<PostalGuard>,
        quiet_for: Duration,
        cod_settle: Duration,
    ) -> Self {
        Self {
            state,
            carrier,
            guard,
            quiet_for,
            cod_settle,
        }
    }

    /// Polls every handoff that is quiet now; returns how many were polled.
    pub async fn poll_quiet(&self) -> anyhow::Result<usize> {
        let mut polled = 0;
        loop {
            let now = self.state.clock.now();
            let quiet_since = now - SignedDuration::try_from(self.quiet_for)?;
            let cod_since = now - SignedDuration::try_from(self.cod_settle)?;
            let quiet = self
                .state
                .store
                .quiet_handoffs(quiet_since, cod_since, BATCH)
                .await?;
            if quiet.is_empty() {
                return Ok(polled);
            }
            for handoff in quiet {
                match (&handoff.tracking_number, &handoff.original_id) {
                    (Some(tracking_number), _) => {
                        self.poll_one(&handoff.id, tracking_number).await?
                    }
                    (None, Some(original_id)) => self.look_up(&handoff, original_id).await?,
                    (None, None) => {}
                }
                // Quiet again from now: the next poll comes one period later.
                let now = self.state.clock.now();
                self.state.store.mark_polled(&handoff.id, now).await?;
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
                        original_id: None,
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
                        cod_amount: None,
                    })
                    .collect();
                if !incoming.is_empty() {
                    let outcomes = self
                        .state
                        .store
                        .apply_carrier_events(incoming, &self.state.context, now)
                        .await?;
                    for o in outcomes {
                        super::count_outcome(&self.state, "poll", o);
                    }
                }
            }
            Err(failure) => {
                tracing::warn!(
                    %failure,
                    "tracking poll failed; trying again after the quiet period"
                );
            }
        }
        Ok(())
    }

    /// An order created without an item code: looks the handoff's orders up
    /// by saleOrderCode, recognises its own by originalID to learn the item
    /// code (then polls its history at once), and has any other one
    /// cancelled as a duplicate.
    #[tracing::instrument(skip_all, fields(handoff_id = %handoff.id))]
    async fn look_up(&self, handoff: &QuietHandoff, original_id: &str) -> anyhow::Result<()> {
        let permit = self.guard.permit().await;
        let from = handoff.created_at.to_zoned(vietnam()).date();
        let to = self.state.clock.now().to_zoned(vietnam()).date();
        let found = self
            .carrier
            .find_orders(handoff.id.as_str(), from, to)
            .await;
        permit.record(match &found {
            Err(f @ CallFailure::Transient { .. }) => CallResult::Failed {
                retry_after: f.retry_after(),
            },
            _ => CallResult::Answered,
        });
        let orders = match found {
            Ok(orders) => orders,
            Err(failure) => {
                tracing::warn!(
                    %failure,
                    "order lookup failed; trying again after the quiet period"
                );
                return Ok(());
            }
        };
        let orders: Vec<PostalOrder> = orders.iter().map(CarrierOrder::postal_order).collect();
        let format = self
            .state
            .context
            .formats
            .get(&handoff.client)
            .copied()
            .unwrap_or_default();
        let now = self.state.clock.now();
        let settled = self
            .state
            .store
            .settle_orders(&handoff.id, &orders, format, now)
            .await?;
        for s in &settled {
            if s.fate == OrderFate::Duplicate && s.cancel_queued {
                self.state.metrics.duplicate_orders.inc();
                tracing::error!("a second order was listed for the handoff; cancelling it");
            }
        }
        let own = orders
            .iter()
            .find(|o| o.original_id == original_id)
            .and_then(|o| o.tracking_number.as_deref());
        if let Some(tracking_number) = own {
            self.poll_one(&handoff.id, tracking_number).await?;
        }
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
