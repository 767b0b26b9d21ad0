//! The MyVNPost customer-partner API (vnpost-api.md).
//!
//! `wire` holds the pure parts (bodies, answer parsing, classification); this
//! module holds the HTTP calls, the token and the metrics.

mod address_map;
pub mod webhook;
pub mod wire;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use jiff::Timestamp;
use jiff::civil::Date;
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{RequestBuilder, Response};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use self::address_map::AddressMap;
use self::wire::{Answer, History, ListPage, Op, OrderProfile, TransientPatterns, Transport};
use crate::carrier::{
    CallFailure, CancelAnswer, Carrier, CarrierOrder, OrderRequest, TrackingEvent,
};
use crate::config::PostalSettings;
use crate::telemetry::metrics::Metrics;

/// Listing pages read before giving up: a listing that never ends must not
/// pass for "not found".
const MAX_PAGES: u32 = 100;

/// The Vietnam Post adapter: one HTTP client, one cached token.
pub struct VnPostClient {
    http: reqwest::Client,
    base_url: String,
    username: SecretString,
    password: SecretString,
    customer_code: String,
    profile: OrderProfile,
    patterns: TransientPatterns,
    /// The `token` header value, marked sensitive so it never prints.
    token: Mutex<Option<HeaderValue>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for VnPostClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VnPostClient")
            .field("base_url", &self.base_url)
            .field("customer_code", &self.customer_code)
            .field("address_map_entries", &self.profile.address_map.len())
            .finish_non_exhaustive()
    }
}

/// The result of one authorised HTTP exchange.
enum Attempt<T> {
    Done(Result<T, CallFailure>),
    /// 401 or 403: the token was refused.
    Unauthorized(u16),
}

impl VnPostClient {
    /// Builds the client from `[postal]`, loading `postal.address_map` when set.
    pub fn new(settings: &PostalSettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let address_map = match settings.address_map.trim() {
            "" => AddressMap::default(),
            path => AddressMap::load(Path::new(path))?,
        };
        let timeout = Duration::from_millis(settings.timeout_ms);
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            // Shorter than the whole call, so an unreachable host shows as a
            // connect error (never ambiguous) rather than a timeout.
            .connect_timeout(timeout / 2)
            // A redirected POST would be re-sent as a GET; an unexpected 3xx is
            // classified instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("bcci-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client for Vietnam Post")?;
        Ok(Self {
            http,
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            username: settings.username.clone(),
            password: settings.password.clone(),
            customer_code: settings.customer_code.clone(),
            profile: OrderProfile {
                contract_code: settings.contract_code.clone(),
                pickup_fee_addon: settings.pickup_fee_addon.clone(),
                content_note_max_chars: settings.content_note_max_chars,
                address_map,
            },
            patterns: TransientPatterns::new(&settings.transient_errors),
            token: Mutex::new(None),
            metrics,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base_url)
    }

    /// The cached token, logging in when there is none.
    async fn current_token(&self) -> Result<HeaderValue, CallFailure> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            return Ok(token.clone());
        }
        let fresh = self.login().await?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    /// A new token after `refused` was refused, unless another call already
    /// replaced it.
    async fn renew_token(&self, refused: &HeaderValue) -> Result<HeaderValue, CallFailure> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && token != refused
        {
            return Ok(token.clone());
        }
        *cached = None;
        let fresh = self.login().await?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    #[tracing::instrument(skip_all, fields(operation = "token"))]
    async fn login(&self) -> Result<HeaderValue, CallFailure> {
        let body = json!({
            "username": self.username.expose_secret(),
            "password": self.password.expose_secret(),
            "customerCode": self.customer_code,
        });
        let started = Instant::now();
        let result = match self
            .http
            .post(self.url("GetAccessToken"))
            .json(&body)
            .send()
            .await
        {
            Err(e) => Err(transport_failure(Op::Token, &e)),
            Ok(response) => self.read(Op::Token, response, token_answer).await,
        };
        self.record(Op::Token, outcome(&result, |_| "ok"), started);
        result
    }

    /// Calls with the token; on 401 or 403 logs in again once and retries once.
    async fn call<T>(
        &self,
        op: Op,
        request: impl Fn(&reqwest::Client) -> RequestBuilder,
        read: impl Fn(&Value) -> Result<T, CallFailure>,
        ok_outcome: fn(&T) -> &'static str,
    ) -> Result<T, CallFailure> {
        let token = self.current_token().await?;
        let status = match self.attempt(op, &token, &request, &read, ok_outcome).await {
            Attempt::Done(result) => return result,
            Attempt::Unauthorized(status) => status,
        };
        tracing::info!(
            operation = op.label(),
            status,
            "Vietnam Post refused the token; logging in again"
        );
        let token = self.renew_token(&token).await?;
        match self.attempt(op, &token, &request, &read, ok_outcome).await {
            Attempt::Done(result) => result,
            Attempt::Unauthorized(status) => {
                tracing::error!(
                    operation = op.label(),
                    status,
                    "Vietnam Post refused a fresh token: check the credentials"
                );
                Err(CallFailure::Transient {
                    ambiguous: false,
                    retry_after: None,
                    detail: format!(
                        "HTTP {status} again after a new login: Vietnam Post refuses the credentials"
                    ),
                    outcome: "transient",
                })
            }
        }
    }

    async fn attempt<T>(
        &self,
        op: Op,
        token: &HeaderValue,
        request: &impl Fn(&reqwest::Client) -> RequestBuilder,
        read: &impl Fn(&Value) -> Result<T, CallFailure>,
        ok_outcome: fn(&T) -> &'static str,
    ) -> Attempt<T> {
        let started = Instant::now();
        let sent = request(&self.http)
            .header("token", token.clone())
            .send()
            .await;
        let result = match sent {
            Err(e) => Err(transport_failure(op, &e)),
            Ok(response) if matches!(response.status().as_u16(), 401 | 403) => {
                self.record(op, "transient", started);
                return Attempt::Unauthorized(response.status().as_u16());
            }
            Ok(response) => self.read(op, response, read).await,
        };
        self.record(op, outcome(&result, ok_outcome), started);
        Attempt::Done(result)
    }

    /// Reads the whole answer and classifies it.
    async fn read<T>(
        &self,
        op: Op,
        response: Response,
        read: impl FnOnce(&Value) -> Result<T, CallFailure>,
    ) -> Result<T, CallFailure> {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| wire::parse_retry_after(v, Timestamp::now()));
        let body = match response.bytes().await {
            Ok(body) => body,
            // The status alone says these never reached the order book.
            Err(_) if matches!(status, 408 | 429) => Default::default(),
            Err(e) => return Err(transport_failure(op, &e)),
        };
        let answer = Answer {
            status,
            retry_after,
            body: &body,
        };
        wire::classify(op, &answer, &self.patterns, read)
    }

    fn record(&self, op: Op, outcome: &'static str, started: Instant) {
        let elapsed = started.elapsed();
        self.metrics
            .postal_request(op.label(), outcome, elapsed.as_secs_f64());
        tracing::debug!(
            operation = op.label(),
            outcome,
            elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            "Vietnam Post call"
        );
    }
}

#[async_trait]
impl Carrier for VnPostClient {
    #[tracing::instrument(skip_all, fields(handoff_id = %order.handoff_id, operation = "create"))]
    async fn create_order(&self, order: &OrderRequest) -> Result<CarrierOrder, CallFailure> {
        let body = wire::create_order_body(order, &self.profile).map_err(|detail| {
            CallFailure::Transient {
                ambiguous: false,
                retry_after: None,
                detail,
                outcome: "transient",
            }
        })?;
        let url = self.url("CreateOrder");
        let result = self
            .call(
                Op::Create,
                |http| http.post(&url).json(&body),
                wire::create_answer,
                |_| "ok",
            )
            .await;
        log_failure(Op::Create, &result);
        result
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %sale_order_code, operation = "lookup"))]
    async fn find_orders(
        &self,
        sale_order_code: &str,
        from: Date,
        to: Date,
    ) -> Result<Vec<CarrierOrder>, CallFailure> {
        let url = self.url("GetListOrder");
        let (from, to) = (wire::query_date(from), wire::query_date(to));
        let mut found = Vec::new();
        for page in 0..MAX_PAGES {
            let page = page.to_string();
            let result = self
                .call(
                    Op::Lookup,
                    |http| {
                        http.get(&url).query(&[
                            ("lastUpdateFrom", from.as_str()),
                            ("lastUpdateTo", to.as_str()),
                            ("type", "GUI"),
                            ("size", "500"),
                            ("page", page.as_str()),
                            ("isInternational", "false"),
                        ])
                    },
                    |v| wire::list_page(v, sale_order_code),
                    |_: &ListPage| "ok",
                )
                .await;
            log_failure(Op::Lookup, &result);
            let ListPage { records, matches } = result?;
            found.extend(matches);
            if records < wire::PAGE_SIZE {
                return Ok(found);
            }
        }
        Err(CallFailure::Transient {
            ambiguous: false,
            retry_after: None,
            detail: format!("the order listing did not end within {MAX_PAGES} pages"),
            outcome: "transient",
        })
    }

    #[tracing::instrument(skip_all, fields(operation = "cancel"))]
    async fn cancel_order(&self, original_id: &str) -> Result<CancelAnswer, CallFailure> {
        let url = self.url("orderCancel");
        let body = json!({"OriginalId": original_id});
        let result = self
            .call(
                Op::Cancel,
                |http| http.post(&url).json(&body),
                wire::cancel_answer,
                |answer| match answer {
                    CancelAnswer::Refused { .. } => "rejected",
                    CancelAnswer::Cancelled | CancelAnswer::Pending { .. } => "ok",
                },
            )
            .await;
        log_failure(Op::Cancel, &result);
        result
    }

    #[tracing::instrument(skip_all, fields(operation = "track"))]
    async fn tracking(&self, tracking_number: &str) -> Result<Vec<TrackingEvent>, CallFailure> {
        let url = self.url("GetStatusHistoryOrder");
        let result = self
            .call(
                Op::Track,
                |http| {
                    http.get(&url)
                        .query(&[("type", "1"), ("code", tracking_number)])
                },
                wire::tracking_history,
                |_: &History| "ok",
            )
            .await;
        log_failure(Op::Track, &result);
        let History { events, unreadable } = result?;
        if unreadable > 0 {
            tracing::warn!(
                unreadable,
                "tracking entries without a readable code or time were skipped"
            );
        }
        Ok(events)
    }
}

/// The `outcome` label of a finished call.
fn outcome<T>(result: &Result<T, CallFailure>, ok: fn(&T) -> &'static str) -> &'static str {
    match result {
        Ok(value) => ok(value),
        Err(CallFailure::Refused { .. }) => "rejected",
        Err(CallFailure::Transient { outcome, .. }) => outcome,
    }
}

/// Logs a failed call without the carrier's words, which may echo personal data.
fn log_failure<T>(op: Op, result: &Result<T, CallFailure>) {
    match result {
        Ok(_) => {}
        Err(CallFailure::Refused { .. }) => {
            tracing::warn!(operation = op.label(), "Vietnam Post refused the request");
        }
        Err(CallFailure::Transient {
            ambiguous,
            detail,
            outcome,
            retry_after,
        }) => tracing::warn!(
            operation = op.label(),
            ambiguous,
            outcome,
            retry_after_s = retry_after.map(|d| d.as_secs()),
            detail,
            "Vietnam Post call failed"
        ),
    }
}

/// The token of a login answer, as a sensitive header value.
pub fn token_answer(value: &Value) -> Result<HeaderValue, CallFailure> {
    let token = value
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && value.get("success") != Some(&Value::Bool(false)));
    let header = token.and_then(|t| HeaderValue::from_str(t).ok());
    match header {
        Some(mut header) => {
            header.set_sensitive(true);
            Ok(header)
        }
        None => Err(CallFailure::Transient {
            ambiguous: false,
            retry_after: None,
            detail: "the login answer holds no usable token".into(),
            outcome: "transient",
        }),
    }
}

/// Classifies a request that got no answer. The description leaves out the
/// URL, whose query may carry a tracking number.
fn transport_failure(op: Op, e: &reqwest::Error) -> CallFailure {
    let kind = if e.is_connect() {
        Transport::Connect
    } else if e.is_timeout() {
        Transport::Timeout
    } else {
        Transport::Other
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    let detail = if causes.is_empty() {
        "no further cause".to_owned()
    } else {
        causes.join(": ")
    };
    wire::transport_failure(op, kind, &detail)
}
