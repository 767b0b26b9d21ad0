//! Carriers: the trait the dispatcher calls, and the Vietnam Post adapter.
//!
//! Every Vietnam Post detail (paths, field spellings, status codes) stays in
//! `vnpost`; a second carrier would be a sibling module.

pub mod guard;
pub mod vnpost;

use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use jiff::civil::Date;

use crate::domain::request::{Address, HandoffRequest};
use crate::domain::{HandoffId, Kind};

/// What the gateway asks the carrier to pick up and deliver.
#[derive(Debug, Clone)]
pub struct OrderRequest {
    /// Sent as `saleOrderCode`: the one reference that ties an order to its handoff.
    pub handoff_id: HandoffId,
    /// The carrier customer the order is billed to.
    pub customer_code: String,
    pub kind: Kind,
    pub request: HandoffRequest,
    /// The service to use (`request.service_code` or the configured default).
    pub service_code: String,
}

impl OrderRequest {
    /// The sender's address: the citizen for a pickup, the agency for a return.
    pub fn sender_address(&self) -> &Address {
        match self.kind {
            Kind::Pickup => &self.request.citizen.address,
            Kind::Return => &self.request.agency.address,
        }
    }
}

/// An order as the carrier reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierOrder {
    /// `orderHdrID`.
    pub order_id: String,
    /// `originalID`, used to cancel.
    pub original_id: String,
    /// `itemCode`: the tracking number; may be missing on a fresh order.
    pub tracking_number: Option<String>,
    /// `saleOrderCode` as listed (the handoff id when the gateway created it).
    pub sale_order_code: Option<String>,
    /// `totalFee`, integer VND.
    pub postage_vnd: Option<i64>,
    /// When the carrier created it, when it says (orders the duplicates).
    pub created_at: Option<Timestamp>,
    /// The carrier's status code, when listed.
    pub status_code: Option<i64>,
}

impl CarrierOrder {
    /// The facts of this order a handoff records when it owns it.
    pub fn postal_order(&self) -> crate::domain::PostalOrder {
        crate::domain::PostalOrder {
            order_id: self.order_id.clone(),
            original_id: self.original_id.clone(),
            tracking_number: self.tracking_number.clone(),
            postage_vnd: self.postage_vnd,
        }
    }
}

/// How a call to the carrier failed. Its `Debug` and `Display` leave the
/// carrier's refusal text out: it may echo a citizen's name or address
/// (domain.md, personal data), so a log line never carries it.
#[derive(Clone, PartialEq, Eq)]
pub enum CallFailure {
    /// The carrier answered with a permanent refusal and this message
    /// (an HTTP 400, or `success: false` with a message that is not one of
    /// `postal.transient_errors`).
    Refused { message: String },
    /// A transient failure. `ambiguous` is false only when the request
    /// provably never reached the carrier: the connection failed before the
    /// request was written, or the answer was 401, 403, 408 or 429.
    Transient {
        ambiguous: bool,
        /// `Retry-After` of a 429 or 503, when given.
        retry_after: Option<Duration>,
        /// What happened, for the timeline and logs (never personal data).
        detail: String,
        /// The `outcome` label of `bcci_postal_requests_total`:
        /// `transient`, `ambiguous` or `timeout`.
        outcome: &'static str,
    },
}

impl std::fmt::Debug for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallFailure::Refused { message } => f
                .debug_struct("Refused")
                .field(
                    "message",
                    &format_args!("<{} characters>", message.chars().count()),
                )
                .finish(),
            CallFailure::Transient {
                ambiguous,
                retry_after,
                detail,
                outcome,
            } => f
                .debug_struct("Transient")
                .field("ambiguous", ambiguous)
                .field("retry_after", retry_after)
                .field("detail", detail)
                .field("outcome", outcome)
                .finish(),
        }
    }
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallFailure::Refused { .. } => f.write_str("refused by Vietnam Post"),
            CallFailure::Transient { detail, .. } => f.write_str(detail),
        }
    }
}

impl CallFailure {
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallFailure::Transient { retry_after, .. } => *retry_after,
            CallFailure::Refused { .. } => None,
        }
    }
}

/// The answer to an order cancellation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelAnswer {
    /// `"00"`: cancelled.
    Cancelled,
    /// `"02"`: pending the carrier's approval; `case_id` is its reference.
    Pending { case_id: Option<String> },
    /// Any other type: refused, with the carrier's message.
    Refused { message: String },
}

/// One status report from the carrier's tracking history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingEvent {
    pub code: i64,
    pub text: Option<String>,
    pub location: Option<String>,
    pub occurred_at: Timestamp,
}

/// A carrier the dispatcher can create, find and cancel orders with.
#[async_trait]
pub trait Carrier: Send + Sync + 'static {
    /// Creates the order. The carrier has no idempotency key: a
    /// `Transient { ambiguous: true, .. }` answer must be followed by
    /// [`Carrier::find_orders`] before another create.
    async fn create_order(&self, order: &OrderRequest) -> Result<CarrierOrder, CallFailure>;

    /// Every order whose `saleOrderCode` is `sale_order_code`, listed between
    /// the Vietnam-time days `from` and `to` (inclusive), in the order the
    /// carrier lists them.
    async fn find_orders(
        &self,
        sale_order_code: &str,
        from: Date,
        to: Date,
    ) -> Result<Vec<CarrierOrder>, CallFailure>;

    /// Cancels an order not yet picked up.
    async fn cancel_order(&self, original_id: &str) -> Result<CancelAnswer, CallFailure>;

    /// The order's status history, oldest first.
    async fn tracking(&self, tracking_number: &str) -> Result<Vec<TrackingEvent>, CallFailure>;
}
