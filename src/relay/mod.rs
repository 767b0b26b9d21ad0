//! The relay: signed callbacks to intake systems, in sequence per handoff,
//! on the durable retry schedule.

pub mod signature;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use secrecy::ExposeSecret;

use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::callback::BodyFormat;
use crate::domain::retry::{Next, RetryPolicy};
use crate::lifecycle::Lifecycle;
use crate::store::{CallbackJob, CallbackOutcome, SharedStore};
use crate::telemetry::Metrics;
pub use crate::worker::Executed;
use signature::SigningKey;

/// Concurrent worker loops per process.
pub const WORKERS: usize = 8;
/// Callbacks a worker claims at once (each the head of its handoff's queue,
/// so never two of one handoff).
const BATCH: u32 = 32;

/// Where a client's callbacks go.
#[derive(Debug, Clone)]
struct Target {
    url: String,
    keys: Vec<SigningKey>,
}

/// The event type of a test callback sent from the console.
pub const TEST_EVENT: &str = "gateway.test";

/// What a client's endpoint answered to a test callback (never its body).
#[derive(Debug, Clone)]
pub struct TestAnswer {
    pub id: String,
    pub url: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub took: Duration,
}

/// The callback worker of one process.
pub struct Relay {
    store: SharedStore,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    targets: HashMap<String, Target>,
    policy: RetryPolicy,
    owner: String,
    lease: Duration,
}

impl Relay {
    pub fn new(
        settings: &Settings,
        store: SharedStore,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let targets = settings
            .intake
            .clients
            .iter()
            .map(|c| {
                let keys = c
                    .callback_secrets
                    .iter()
                    .filter_map(|s| SigningKey::parse(s.expose_secret()))
                    .collect();
                (
                    c.name.clone(),
                    Target {
                        url: c.callback_url.clone(),
                        keys,
                    },
                )
            })
            .collect();
        Ok(Self {
            store,
            clock,
            metrics,
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(settings.intake.timeout_ms))
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            targets,
            policy: settings.retry.policy(),
            owner: format!("relay-{}", ulid::Ulid::new()),
            lease: Duration::from_secs(settings.store.lease_s),
        })
    }

    /// The name this worker pool's leases are held under.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Claims a batch of deliverable callbacks in one transaction and
    /// attempts them concurrently.
    pub async fn try_execute(&self) -> anyhow::Result<Executed> {
        let jobs = self
            .store
            .claim_callbacks(&self.owner, self.clock.now(), self.lease, BATCH)
            .await?;
        if jobs.is_empty() {
            return Ok(Executed::Idle);
        }
        let results = join_all(jobs.iter().map(|job| self.attempt(job))).await;
        crate::worker::first_error("callback", results)?;
        Ok(Executed::Worked)
    }

    /// Delivers one callback and commits the outcome.
    async fn attempt(&self, job: &CallbackJob) -> anyhow::Result<()> {
        let outcome = self.deliver(job).await;
        let held = self
            .store
            .finish_callback(job, &self.owner, self.clock.now(), outcome)
            .await?;
        if !held {
            tracing::warn!(handoff_id = %job.handoff_id, "callback lease lost; outcome not committed");
        }
        Ok(())
    }

    /// Works until no callback is deliverable now.
    pub async fn run_until_idle(&self) -> anyhow::Result<()> {
        while self.try_execute().await? == Executed::Worked {}
        Ok(())
    }

    /// Runs `workers` concurrent workers until the lifecycle drains.
    pub async fn run(self: Arc<Self>, lifecycle: Lifecycle, workers: usize, poll: Duration) {
        let step = move || {
            let me = self.clone();
            async move { me.try_execute().await }
        };
        crate::worker::run_loops("callback", lifecycle, workers, poll, step).await;
    }

    fn count(&self, job: &CallbackJob, outcome: &'static str) {
        self.metrics.callback(self.client_label(job), outcome);
    }

    /// The `client` label: a configured client's name, so the label set
    /// stays bounded by the configuration (a client removed since its
    /// callbacks were queued counts as `unconfigured`).
    fn client_label<'a>(&self, job: &'a CallbackJob) -> &'a str {
        if self.targets.contains_key(&job.client) {
            &job.client
        } else {
            "unconfigured"
        }
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %job.handoff_id, sequence = job.sequence))]
    async fn deliver(&self, job: &CallbackJob) -> CallbackOutcome {
        let Some(target) = self.targets.get(&job.client) else {
            return self.retry_or_die(
                job,
                None,
                None,
                "the client is no longer configured".into(),
                "retry",
            );
        };
        let started = Instant::now();
        let sent = self
            .post(target, &job.id, &job.content_type, job.body.clone())
            .await;
        self.metrics
            .callback_took(self.client_label(job), started.elapsed().as_secs_f64());
        match sent {
            Ok(r) if r.status().is_success() => {
                self.count(job, "delivered");
                CallbackOutcome::Delivered
            }
            Ok(r) => {
                let status = r.status().as_u16();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                // The intake system may be mid-deploy: 4xx is retried too,
                // but counted apart (once: this attempt's only count).
                let label = if (400..500).contains(&status) && status != 408 && status != 429 {
                    "rejected_4xx"
                } else {
                    "retry"
                };
                self.retry_or_die(
                    job,
                    Some(status),
                    retry_after,
                    format!("answered {status}"),
                    label,
                )
            }
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out"
                } else {
                    "could not connect or send"
                };
                self.retry_or_die(job, None, None, what.into(), "retry")
            }
        }
    }

    /// Posts one signed callback (Standard Webhooks headers).
    async fn post(
        &self,
        target: &Target,
        id: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::Result<reqwest::Response> {
        let timestamp = self.clock.now().as_second();
        let signature = signature::sign(&target.keys, id, timestamp, &body);
        self.http
            .post(&target.url)
            .header("content-type", content_type)
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
    }

    /// Sends a client one signed test callback (`type` `gateway.test`), now,
    /// outside the queue: nothing is stored and nothing is retried. `None`
    /// when the client is not configured.
    pub async fn send_test(&self, client: &str, format: BodyFormat) -> Option<TestAnswer> {
        let target = self.targets.get(client)?;
        let id = format!("msg_test_{}", ulid::Ulid::new());
        let at = crate::domain::time::format_vietnam(self.clock.now());
        let (content_type, body) = match format {
            BodyFormat::Json => (
                "application/json",
                serde_json::json!({"type": TEST_EVENT, "timestamp": at, "data": {}}).to_string(),
            ),
            BodyFormat::Xml => (
                "application/xml",
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><event><type>{TEST_EVENT}</type><timestamp>{at}</timestamp></event>"
                ),
            ),
        };
        let started = Instant::now();
        let sent = self
            .post(target, &id, content_type, body.into_bytes())
            .await;
        let took = started.elapsed();
        Some(match sent {
            Ok(r) => TestAnswer {
                id,
                url: target.url.clone(),
                status: Some(r.status().as_u16()),
                error: None,
                took,
            },
            Err(e) => TestAnswer {
                id,
                url: target.url.clone(),
                status: None,
                error: Some(if e.is_timeout() {
                    "timed out".into()
                } else {
                    "could not connect or send".into()
                }),
                took,
            },
        })
    }

    /// Schedules the next attempt, counted as `retry_label`, or gives up
    /// (counted `dead`): one count per attempt.
    fn retry_or_die(
        &self,
        job: &CallbackJob,
        status: Option<u16>,
        retry_after: Option<Duration>,
        error: String,
        retry_label: &'static str,
    ) -> CallbackOutcome {
        match self.policy.next(
            job.attempts + 1,
            job.head_since,
            self.clock.now(),
            retry_after,
            rand::random(),
        ) {
            Next::RetryAt(at) => {
                self.count(job, retry_label);
                CallbackOutcome::Retry { at, status, error }
            }
            Next::GiveUp => {
                self.count(job, "dead");
                tracing::warn!(error = %error, "callback dead after its retry deadline");
                CallbackOutcome::Dead { status, error }
            }
        }
    }
}
