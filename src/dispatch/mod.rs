//! The postal worker: claims create jobs, calls Vietnam Post through the
//! carrier trait, and commits each outcome with its effects.

pub mod plan;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use jiff::SignedDuration;

use crate::carrier::guard::{CallResult, Permit, PostalGuard};
use crate::carrier::{CallFailure, CancelAnswer, Carrier, CarrierOrder, OrderRequest};
use crate::clock::Clock;
use crate::config::{CallbackFormat, Settings};
use crate::domain::callback::BodyFormat;
use crate::domain::ownership::OrderFate;
use crate::domain::time::vietnam;
use crate::domain::{CreateStep, PostalOrder, Status};
use crate::lifecycle::Lifecycle;
use crate::store::{PostalJob, PostalOperation, PostalOutcome, SharedStore};
use crate::telemetry::Metrics;
pub use crate::worker::Executed;
use plan::{JobView, Observation, Plan, Rules};

/// Concurrent worker loops per process.
pub const WORKERS: usize = 8;
/// Most jobs a worker claims at once.
const MAX_BATCH: u32 = 8;

/// How many jobs a worker claims at once: as many as the rate limit lets the
/// process call within half of what a lease leaves after one call timeout,
/// shared among `workers`, between 1 and `MAX_BATCH`. A batch larger than
/// that would see its last leases run down while its calls wait their turn.
pub fn claim_batch(
    requests_per_second: u32,
    lease: Duration,
    call_timeout: Duration,
    workers: usize,
) -> u32 {
    let spare_s = lease.saturating_sub(call_timeout).as_secs_f64() / 2.0;
    let calls = f64::from(requests_per_second) * spare_s / workers.max(1) as f64;
    (calls.floor() as u32).clamp(1, MAX_BATCH)
}

/// Where a client's orders go and how its callbacks are written.
#[derive(Debug, Clone)]
struct ClientRoute {
    customer_code: String,
    format: BodyFormat,
}

/// The postal worker of one process.
pub struct Dispatcher {
    store: SharedStore,
    carrier: Arc<dyn Carrier>,
    clock: Arc<dyn Clock>,
    guard: Arc<PostalGuard>,
    metrics: Arc<Metrics>,
    owner: String,
    rules: Rules,
    lease: Duration,
    call_timeout: Duration,
    /// Jobs claimed at once (see [`claim_batch`]).
    batch: u32,
    clients: HashMap<String, ClientRoute>,
    default_customer_code: String,
    default_service_code: String,
    lifecycle: Lifecycle,
}

impl Dispatcher {
    pub fn new(
        settings: &Settings,
        store: SharedStore,
        carrier: Arc<dyn Carrier>,
        clock: Arc<dyn Clock>,
        guard: Arc<PostalGuard>,
        metrics: Arc<Metrics>,
        lifecycle: Lifecycle,
    ) -> Self {
        let clients = settings
            .intake
            .clients
            .iter()
            .map(|c| {
                let customer_code = if c.customer_code.is_empty() {
                    settings.postal.customer_code.clone()
                } else {
                    c.customer_code.clone()
                };
                let format = match c.callback_format {
                    CallbackFormat::Json => BodyFormat::Json,
                    CallbackFormat::Xml => BodyFormat::Xml,
                };
                (
                    c.name.clone(),
                    ClientRoute {
                        customer_code,
                        format,
                    },
                )
            })
            .collect();
        Self {
            store,
            carrier,
            clock,
            guard,
            metrics,
            owner: format!("dispatch-{}", ulid::Ulid::new()),
            rules: Rules {
                retry: settings.retry.policy(),
                lookup_delay: Duration::from_secs(settings.postal.lookup_delay_s),
            },
            lease: Duration::from_secs(settings.store.lease_s),
            call_timeout: settings.postal_timeout(),
            batch: claim_batch(
                settings.postal.max_requests_per_second,
                Duration::from_secs(settings.store.lease_s),
                settings.postal_timeout(),
                WORKERS,
            ),
            clients,
            default_customer_code: settings.postal.customer_code.clone(),
            default_service_code: settings.postal.default_service_code.clone(),
            lifecycle,
        }
    }

    /// The name this worker pool's leases are held under.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Claims a batch of due jobs in one transaction and carries them out
    /// concurrently; their writes share commits (see the store).
    pub async fn try_execute(&self) -> anyhow::Result<Executed> {
        // Wait out a pause or an open breaker before claiming, so no lease
        // runs down while Vietnam Post cannot be called; a drain ends the wait.
        tokio::select! {
            () = self.guard.ready() => {}
            () = self.lifecycle.drained() => return Ok(Executed::Idle),
        }
        let now = self.clock.now();
        let jobs = self
            .store
            .claim_postal_jobs(&self.owner, now, self.lease, self.batch)
            .await?;
        if jobs.is_empty() {
            return Ok(Executed::Idle);
        }
        let results = join_all(jobs.into_iter().map(|job| self.execute(job))).await;
        crate::worker::first_error("postal", results)?;
        Ok(Executed::Worked)
    }

    async fn execute(&self, job: PostalJob) -> anyhow::Result<()> {
        match job.operation {
            PostalOperation::Create => self.create(job).await,
            PostalOperation::CancelDuplicate => self.cancel_duplicate(job).await,
            PostalOperation::Cancel => self.cancel(job).await,
        }
    }

    /// Works until no job is due (tests drive time themselves).
    pub async fn run_until_idle(&self) -> anyhow::Result<()> {
        while self.try_execute().await? == Executed::Worked {}
        Ok(())
    }

    /// Runs `workers` concurrent workers until the lifecycle drains; each
    /// finishes the call it is making.
    pub async fn run(self: Arc<Self>, lifecycle: Lifecycle, workers: usize, poll: Duration) {
        let step = move || {
            let me = self.clone();
            async move { me.try_execute().await }
        };
        crate::worker::run_loops("postal", lifecycle, workers, poll, step).await;
    }

    fn route(&self, client: &str) -> ClientRoute {
        self.clients.get(client).cloned().unwrap_or(ClientRoute {
            customer_code: self.default_customer_code.clone(),
            format: BodyFormat::Json,
        })
    }

    async fn finish(&self, job: &PostalJob, outcome: PostalOutcome) -> anyhow::Result<()> {
        self.try_finish(job, outcome).await.map(|_| ())
    }

    /// Commits the outcome; false when the lease was lost and nothing was.
    async fn try_finish(&self, job: &PostalJob, outcome: PostalOutcome) -> anyhow::Result<bool> {
        let held = self
            .store
            .finish_postal_job(job, &self.owner, self.clock.now(), outcome)
            .await?;
        if !held {
            tracing::warn!(handoff_id = %job.handoff.id, "lease lost; the outcome was not committed");
        }
        Ok(held)
    }

    /// Settles orders Vietnam Post holds for the handoff outside a job's
    /// outcome (see [`crate::store::Store::settle_orders`]) and counts the
    /// duplicates it queues for cancellation.
    async fn settle(
        &self,
        job: &PostalJob,
        orders: &[CarrierOrder],
        format: BodyFormat,
    ) -> anyhow::Result<Vec<crate::store::SettledOrder>> {
        let orders: Vec<PostalOrder> = orders.iter().map(CarrierOrder::postal_order).collect();
        let settled = self
            .store
            .settle_orders(&job.handoff.id, &orders, format, self.clock.now())
            .await?;
        let duplicates = settled
            .iter()
            .filter(|s| s.fate == OrderFate::Duplicate && s.cancel_queued)
            .count();
        self.count_duplicates(duplicates);
        if settled.iter().any(|s| s.fate == OrderFate::Unowned) {
            tracing::warn!(
                handoff_id = %job.handoff.id,
                "an order was found for a handoff that can no longer take it; cancelling it"
            );
        }
        Ok(settled)
    }

    fn count_duplicates(&self, count: usize) {
        if count > 0 {
            self.metrics.duplicate_orders.inc_by(count as u64);
            tracing::error!(
                count,
                "duplicate Vietnam Post orders found; cancelling them"
            );
        }
    }

    /// Waits for the guard, then checks that the lease still covers a call.
    async fn may_call(&self, job: &PostalJob) -> Option<Permit<'_>> {
        let permit = self.guard.permit().await;
        let remaining = job.lease_expires_at.duration_since(self.clock.now());
        (remaining >= SignedDuration::try_from(self.call_timeout).unwrap_or(SignedDuration::MAX))
            .then_some(permit)
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %job.handoff.id, step = %job.step))]
    async fn create(&self, job: PostalJob) -> anyhow::Result<()> {
        let now = self.clock.now();
        let route = self.route(&job.handoff.client);
        if job.cancel_requested {
            // The cancel job owns the handoff's order from here: it looks up
            // whatever an earlier attempt may have made.
            let note = Some("stopped by a cancel".to_owned());
            return self.finish(&job, PostalOutcome::Complete { note }).await;
        }
        let view = JobView {
            step: job.step,
            attempts: job.attempts,
            first_attempt_at: job.first_attempt_at.unwrap_or(now),
            refusal: job.refusal.clone(),
        };
        if let Some(started_at) = job.interrupted_at {
            let decided = plan::plan(
                &view,
                Observation::Interrupted { started_at },
                now,
                &self.rules,
                rand::random(),
            );
            return self.finish(&job, self.outcome(decided, route.format)).await;
        }
        if !matches!(job.handoff.status, Status::Received | Status::Failed) {
            // The order was adopted another way (a webhook revealed it).
            let note = Some(format!("handoff already {}", job.handoff.status));
            return self.finish(&job, PostalOutcome::Complete { note }).await;
        }
        let Some(request) = job.request.clone() else {
            let reason =
                "the handoff's personal data was erased before an order was created".to_owned();
            return self
                .finish(
                    &job,
                    PostalOutcome::Fail {
                        reason,
                        format: route.format,
                    },
                )
                .await;
        };
        let Some(permit) = self.may_call(&job).await else {
            let outcome = PostalOutcome::Reschedule {
                step: job.step,
                at: self.clock.now(),
                refusal: job.refusal.clone(),
                last_error: None,
            };
            return self.finish(&job, outcome).await;
        };
        let started = self.clock.now();
        if !self
            .store
            .start_postal_attempt(&job, &self.owner, started, self.call_timeout)
            .await?
        {
            tracing::warn!("lease lost before the call; not calling");
            return Ok(());
        }
        let view = JobView {
            attempts: job.attempts + 1,
            first_attempt_at: job.first_attempt_at.unwrap_or(started),
            ..view
        };
        let observed = match job.step {
            CreateStep::Call | CreateStep::CallAfterLookup => {
                let order = OrderRequest {
                    handoff_id: job.handoff.id.clone(),
                    customer_code: route.customer_code.clone(),
                    kind: job.handoff.kind,
                    service_code: request
                        .service_code
                        .clone()
                        .unwrap_or_else(|| self.default_service_code.clone()),
                    request,
                };
                match self.carrier.create_order(&order).await {
                    Ok(o) => Observation::Created(o),
                    Err(f) => Observation::CreateFailed(f),
                }
            }
            CreateStep::Lookup | CreateStep::LookupThenReject => {
                let first = job
                    .first_create_at
                    .or(job.first_attempt_at)
                    .unwrap_or(started);
                let from = first.to_zoned(vietnam()).date();
                let to = self.clock.now().to_zoned(vietnam()).date();
                match self
                    .carrier
                    .find_orders(job.handoff.id.as_str(), from, to)
                    .await
                {
                    Ok(found) => Observation::Found(found),
                    Err(f) => Observation::LookupFailed(f),
                }
            }
        };
        permit.record(match &observed {
            Observation::CreateFailed(f @ CallFailure::Transient { .. })
            | Observation::LookupFailed(f @ CallFailure::Transient { .. }) => CallResult::Failed {
                retry_after: f.retry_after(),
            },
            _ => CallResult::Answered,
        });
        let decided = plan::plan(
            &view,
            observed,
            self.clock.now(),
            &self.rules,
            rand::random(),
        );
        if let Plan::Reschedule { error, .. } = &decided {
            tracing::info!(error = %error, "postal job rescheduled");
        }
        let found = match &decided {
            Plan::Adopt { order, duplicates } => Some(
                std::iter::once(order)
                    .chain(duplicates)
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        };
        if self
            .try_finish(&job, self.outcome(decided, route.format))
            .await?
        {
            if let Some(found) = found {
                self.count_duplicates(found.len() - 1);
                let received = job.handoff.created_at;
                self.metrics.leg(
                    job.handoff.kind.as_str(),
                    "order",
                    self.clock.now().duration_since(received).as_secs_f64(),
                );
            }
        } else if let Some(found) = found {
            // Another worker or a webhook settled the handoff meanwhile: the
            // orders this call made or found still need an owner, or a cancel.
            self.settle(&job, &found, route.format).await?;
        }
        Ok(())
    }

    fn outcome(&self, decided: Plan, format: BodyFormat) -> PostalOutcome {
        match decided {
            Plan::Reschedule {
                step,
                at,
                refusal,
                error,
            } => PostalOutcome::Reschedule {
                step,
                at,
                refusal,
                last_error: Some(error),
            },
            Plan::Adopt { order, duplicates } => PostalOutcome::Adopt {
                order: order.postal_order(),
                duplicates: duplicates.into_iter().map(|o| o.original_id).collect(),
                format,
            },
            Plan::Reject { reason } => PostalOutcome::Reject { reason, format },
            Plan::Fail { reason } => PostalOutcome::Fail { reason, format },
        }
    }

    /// Cancels the handoff's order at the intake system's request. When the
    /// order is unknown after a create was attempted, the job first waits
    /// `postal.lookup_delay_s` (an uncertain create's order may not be listed
    /// yet), then looks up: the earliest order found becomes the handoff's
    /// and is cancelled here, every other one is cancelled as a duplicate.
    #[tracing::instrument(skip_all, fields(handoff_id = %job.handoff.id))]
    async fn cancel(&self, job: PostalJob) -> anyhow::Result<()> {
        let now = self.clock.now();
        let format = self.route(&job.handoff.client).format;
        if job.handoff.status.is_terminal() {
            let note = Some(format!("handoff already {}", job.handoff.status));
            return self.finish(&job, PostalOutcome::Complete { note }).await;
        }
        let later = |at, step| PostalOutcome::Reschedule {
            step,
            at,
            refusal: None,
            last_error: None,
        };
        if job.create_in_flight {
            // Wait for the create call's outcome before deciding.
            return self
                .finish(&job, later(now + SignedDuration::from_secs(1), job.step))
                .await;
        }
        let uncertain = job.original_id.is_none() && job.create_started_at.is_some();
        if uncertain && job.step != CreateStep::Lookup {
            // No create runs any more (it stops once a cancel is asked), so an
            // order it made is listed by the time this lookup runs.
            let at = now + SignedDuration::try_from(self.rules.lookup_delay)?;
            return self.finish(&job, later(at, CreateStep::Lookup)).await;
        }
        let Some(permit) = self.may_call(&job).await else {
            return self.finish(&job, later(self.clock.now(), job.step)).await;
        };
        if !self
            .store
            .start_postal_attempt(&job, &self.owner, now, self.call_timeout)
            .await?
        {
            return Ok(());
        }
        let (original_id, permit) = match &job.original_id {
            Some(o) => (o.clone(), permit),
            None => {
                let first = job.create_started_at.unwrap_or(job.handoff.created_at);
                let from = first.to_zoned(vietnam()).date();
                let to = self.clock.now().to_zoned(vietnam()).date();
                let listed = self
                    .carrier
                    .find_orders(job.handoff.id.as_str(), from, to)
                    .await;
                permit.record(guard_result(listed.as_ref().err()));
                let mut orders = match listed {
                    Ok(orders) => orders,
                    Err(failure) => {
                        let outcome = self.cancel_retry(&job, &failure, format);
                        return self.finish(&job, outcome).await;
                    }
                };
                if orders.is_empty() {
                    let outcome = PostalOutcome::Cancelled { format };
                    return self.finish(&job, outcome).await;
                }
                plan::earliest_first(&mut orders);
                let settled = self.settle(&job, &orders, format).await?;
                let own = orders
                    .iter()
                    .zip(&settled)
                    .find(|(_, s)| matches!(s.fate, OrderFate::Adopt | OrderFate::Own));
                match own {
                    Some((order, _)) => (order.original_id.clone(), self.guard.permit().await),
                    None => {
                        // The handoff took an order meanwhile: cancel that one.
                        return self.finish(&job, later(self.clock.now(), job.step)).await;
                    }
                }
            }
        };
        let answer = self.carrier.cancel_order(&original_id).await;
        permit.record(guard_result(answer.as_ref().err()));
        let outcome = match answer {
            Ok(CancelAnswer::Cancelled) => PostalOutcome::Cancelled { format },
            Ok(CancelAnswer::Pending { case_id }) => PostalOutcome::CancelPending { case_id },
            Ok(CancelAnswer::Refused { message }) | Err(CallFailure::Refused { message }) => {
                PostalOutcome::CancelRefused {
                    // Vietnam Post's words may name the citizen: not kept
                    // for a handoff whose personal data is already erased.
                    reason: if job.request.is_some() {
                        message
                    } else {
                        crate::domain::callback::PURGED_TEXT.to_owned()
                    },
                    format,
                }
            }
            Err(failure) => self.cancel_retry(&job, &failure, format),
        };
        self.finish(&job, outcome).await
    }

    fn cancel_retry(
        &self,
        job: &PostalJob,
        failure: &CallFailure,
        format: BodyFormat,
    ) -> PostalOutcome {
        let now = self.clock.now();
        match self.rules.retry.next(
            job.attempts + 1,
            job.first_attempt_at.unwrap_or(now),
            now,
            failure.retry_after(),
            rand::random(),
        ) {
            crate::domain::retry::Next::RetryAt(at) => PostalOutcome::Reschedule {
                step: job.step,
                at,
                refusal: None,
                last_error: Some(format!("{failure:?}")),
            },
            crate::domain::retry::Next::GiveUp => PostalOutcome::CancelRefused {
                reason: "no answer from Vietnam Post before the retry deadline".into(),
                format,
            },
        }
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %job.handoff.id))]
    async fn cancel_duplicate(&self, job: PostalJob) -> anyhow::Result<()> {
        let now = self.clock.now();
        let Some(permit) = self.may_call(&job).await else {
            let outcome = PostalOutcome::Reschedule {
                step: job.step,
                at: self.clock.now(),
                refusal: None,
                last_error: None,
            };
            return self.finish(&job, outcome).await;
        };
        if !self
            .store
            .start_postal_attempt(&job, &self.owner, now, self.call_timeout)
            .await?
        {
            return Ok(());
        }
        let answer = self.carrier.cancel_order(&job.target).await;
        permit.record(match &answer {
            Err(f @ CallFailure::Transient { .. }) => CallResult::Failed {
                retry_after: f.retry_after(),
            },
            _ => CallResult::Answered,
        });
        let outcome = match answer {
            Ok(answer) => PostalOutcome::Complete {
                note: Some(format!("duplicate order cancel: {answer:?}")),
            },
            Err(CallFailure::Refused { message }) => PostalOutcome::Complete {
                note: Some(format!("duplicate order cancel refused: {message}")),
            },
            Err(failure) => {
                let first = job.first_attempt_at.unwrap_or(now);
                match self.rules.retry.next(
                    job.attempts + 1,
                    first,
                    self.clock.now(),
                    failure.retry_after(),
                    rand::random(),
                ) {
                    crate::domain::retry::Next::RetryAt(at) => PostalOutcome::Reschedule {
                        step: job.step,
                        at,
                        refusal: None,
                        last_error: Some(format!("{failure:?}")),
                    },
                    crate::domain::retry::Next::GiveUp => PostalOutcome::Fail {
                        reason: "could not cancel a duplicate order".into(),
                        format: BodyFormat::Json,
                    },
                }
            }
        };
        self.finish(&job, outcome).await
    }
}

/// How a call went, for the breaker.
fn guard_result(failure: Option<&CallFailure>) -> CallResult {
    match failure {
        Some(f @ CallFailure::Transient { .. }) => CallResult::Failed {
            retry_after: f.retry_after(),
        },
        _ => CallResult::Answered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_claim_batch_fits_the_rate_limit_within_a_lease() {
        // Defaults: 20 calls/s, 60 s lease, 10 s timeout, 8 workers.
        assert_eq!(claim_batch(20, S(60), S(10), 8), MAX_BATCH);
        // 2 calls/s: 25 s of spare lease lets the process make 50 calls,
        // 6 for each of 8 workers.
        assert_eq!(claim_batch(2, S(60), S(10), 8), 6);
        // Never less than one job, whatever the limits.
        assert_eq!(claim_batch(1, S(30), S(10), 8), 1);
        assert_eq!(claim_batch(1, S(10), S(10), 8), 1);
    }
}
