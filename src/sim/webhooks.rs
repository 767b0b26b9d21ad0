//! Posts status records to the webhook URL the way Vietnam Post does: batched,
//! resent while the receiver fails, and, as faults ask, duplicated, reordered
//! or with other key spellings.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::state::Shared;
use super::wire;

/// Longest wait for one webhook answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Sends the records from `records` until `stop`.
#[tracing::instrument(skip_all)]
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut records: UnboundedReceiver<Value>,
    stop: CancellationToken,
) {
    let Some(url) = shared.config.webhook_url.clone() else {
        return;
    };
    let http = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; no webhooks");
            return;
        }
    };
    let sender = Sender {
        shared,
        http,
        url,
        stop,
    };
    sender.serve(&mut records).await;
}

struct Sender {
    shared: Arc<Shared>,
    http: reqwest::Client,
    url: String,
    stop: CancellationToken,
}

impl Sender {
    #[tracing::instrument(skip_all)]
    async fn serve(&self, records: &mut UnboundedReceiver<Value>) {
        // A record held back by the reorder fault, sent after the next POST.
        let mut held: Option<Value> = None;
        // A held record is let go on its own if nothing follows it soon.
        let hold_for = (self.shared.config.step_interval * 2).max(Duration::from_millis(50));
        loop {
            let first = tokio::select! {
                () = self.stop.cancelled() => return,
                r = records.recv() => match r {
                    Some(r) => r,
                    None => return,
                },
                () = tokio::time::sleep(hold_for), if held.is_some() => {
                    if let Some(h) = held.take() {
                        self.post(vec![h]).await;
                    }
                    continue;
                }
            };
            let faults = self.shared.faults();
            let mut batch = vec![first];
            while batch.len() < faults.batch_size {
                match records.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            if !faults.webhooks_enabled {
                let dropped = batch.len() + usize::from(held.take().is_some());
                self.shared.count(|s| s.webhooks_dropped += dropped as u64);
                continue;
            }
            let release = match held.take() {
                None if self.shared.chance(faults.reorder_webhook_rate) => {
                    held = Some(batch.remove(0));
                    self.shared.count(|s| s.reorders_injected += 1);
                    None
                }
                other => other,
            };
            if !batch.is_empty() {
                self.post(batch).await;
            }
            if let Some(h) = release {
                self.post(vec![h]).await;
            }
        }
    }

    /// One POST of `records`, resent until accepted, and sent once more when
    /// the duplicate fault strikes.
    #[tracing::instrument(skip_all)]
    async fn post(&self, mut records: Vec<Value>) {
        let faults = self.shared.faults();
        for record in &mut records {
            if self.shared.chance(faults.key_variant_rate) {
                wire::vary_keys(record);
                self.shared.count(|s| s.key_variants_injected += 1);
            }
        }
        let body = wire::webhook_body(records, Timestamp::now());
        if !self.deliver(&body).await {
            return;
        }
        if self
            .shared
            .chance(self.shared.faults().duplicate_webhook_rate)
        {
            self.shared.count(|s| s.duplicates_injected += 1);
            self.deliver(&body).await;
        }
    }

    /// POSTs `body` until a 2xx, with doubling waits. False when stopped or
    /// when webhooks were switched off meanwhile.
    #[tracing::instrument(skip_all)]
    async fn deliver(&self, body: &Value) -> bool {
        let records = body["data"].as_array().map_or(0, Vec::len) as u64;
        let config = &self.shared.config;
        let mut wait = config.webhook_retry_initial;
        loop {
            if !self.shared.faults().webhooks_enabled {
                self.shared.count(|s| s.webhooks_dropped += records);
                return false;
            }
            self.shared.count(|s| s.webhook_posts += 1);
            match self.http.post(&self.url).json(body).send().await {
                Ok(answer) if answer.status().is_success() => {
                    self.shared.count(|s| s.webhook_records += records);
                    return true;
                }
                Ok(answer) => {
                    tracing::debug!(status = answer.status().as_u16(), "webhook refused");
                }
                // The URL holds the receiver's secret key: never logged.
                Err(e) => tracing::debug!(error = %e.without_url(), "webhook not delivered"),
            }
            self.shared.count(|s| s.webhook_failures += 1);
            tokio::select! {
                () = self.stop.cancelled() => return false,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(config.webhook_retry_max);
        }
    }
}
