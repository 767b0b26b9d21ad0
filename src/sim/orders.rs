//! The simulated order book: orders, their status walks on a carrier clock of
//! one-second resolution, and cancellation.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use super::sequences::{self, Sequence};
use super::validate::{NewOrder, Party};
use super::wire;

/// One status an order went through, as the carrier reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusStep {
    pub code: i64,
    pub name: &'static str,
    pub location: &'static str,
    /// Carrier time, whole seconds, strictly increasing per order. May run
    /// ahead of the wall clock when steps come faster than one a second.
    pub at: Timestamp,
}

/// An order as the simulator holds it, without personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderSnapshot {
    pub sale_order_code: String,
    /// `orderHdrID`.
    pub order_hdr_id: String,
    /// `originalID`.
    pub original_id: String,
    /// `itemCode`, UPU S10.
    pub item_code: String,
    pub service_code: String,
    /// The status walk the order follows.
    pub sequence: &'static str,
    /// The latest status code.
    pub status: i64,
    pub history: Vec<StatusStep>,
    /// Cancelled by the customer (status 9), whether at once or after approval.
    pub cancelled: bool,
    /// The `CaseId` of a cancellation that needed approval.
    pub cancel_case_id: Option<String>,
    pub total_fee: i64,
    pub cod_amount: i64,
    pub created_at: Timestamp,
    /// No further status will come.
    pub finished: bool,
}

/// Where a customer's cancellation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cancellation {
    None,
    /// Answered "02": status 9 comes with the next step.
    Pending {
        case_id: String,
    },
    Done {
        case_id: Option<String>,
    },
}

/// An order with the personal data getOrder answers (masked).
pub(crate) struct Order {
    pub order_hdr_id: String,
    pub original_id: String,
    pub item_code: String,
    pub sale_order_code: String,
    pub customer_code: String,
    pub service_code: String,
    pub weight_grams: u64,
    pub total_fee: i64,
    pub cod_amount: i64,
    pub sender: Party,
    pub receiver: Party,
    /// Wall clock of creation, for the listing lag.
    pub created: Instant,
    /// Drawn at creation; added to the listing lag.
    pub listing_delay: Duration,
    pub draft: bool,
    pub history: Vec<StatusStep>,
    sequence: &'static Sequence,
    /// The index in `sequence.codes` of the next status.
    next: usize,
    needs_approval: bool,
    cancellation: Cancellation,
}

impl Order {
    /// The latest status code.
    pub fn status(&self) -> i64 {
        self.history.last().map_or(0, |s| s.code)
    }

    /// When the order was created, carrier time.
    pub fn created_at(&self) -> Timestamp {
        self.history.first().map_or_else(carrier_now, |s| s.at)
    }

    /// The latest status time, carrier time.
    pub fn updated_at(&self) -> Timestamp {
        self.history.last().map_or_else(carrier_now, |s| s.at)
    }

    fn finished(&self) -> bool {
        match self.cancellation {
            Cancellation::Pending { .. } => false,
            Cancellation::Done { .. } => true,
            Cancellation::None => self.draft || self.next >= self.sequence.codes.len(),
        }
    }

    /// Appends a status one carrier second after the previous one at least.
    fn push(&mut self, code: i64) -> &StatusStep {
        let now = carrier_now();
        let at = match self.history.last() {
            Some(last) if last.at >= now => last.at + Duration::from_secs(1),
            _ => now,
        };
        self.history.push(StatusStep {
            code,
            name: sequences::status_name(code),
            location: sequences::location(code),
            at,
        });
        &self.history[self.history.len() - 1]
    }

    /// Takes the next step of the walk, if one is left.
    fn step(&mut self) -> Option<&StatusStep> {
        if let Cancellation::Pending { case_id } = &self.cancellation {
            self.cancellation = Cancellation::Done {
                case_id: Some(case_id.clone()),
            };
            return Some(self.push(9));
        }
        if self.finished() {
            return None;
        }
        let code = self.sequence.codes[self.next];
        self.next += 1;
        Some(self.push(code))
    }

    fn snapshot(&self) -> OrderSnapshot {
        let (cancelled, cancel_case_id) = match &self.cancellation {
            Cancellation::None => (false, None),
            Cancellation::Pending { case_id } => (false, Some(case_id.clone())),
            Cancellation::Done { case_id } => (true, case_id.clone()),
        };
        OrderSnapshot {
            sale_order_code: self.sale_order_code.clone(),
            order_hdr_id: self.order_hdr_id.clone(),
            original_id: self.original_id.clone(),
            item_code: self.item_code.clone(),
            service_code: self.service_code.clone(),
            sequence: self.sequence.name,
            status: self.status(),
            history: self.history.clone(),
            cancelled,
            cancel_case_id,
            total_fee: self.total_fee,
            cod_amount: self.cod_amount,
            created_at: self.created_at(),
            finished: self.finished(),
        }
    }
}

/// The choices made for a new order, drawn from the seeded RNG.
pub(crate) struct Plan {
    pub sequence: &'static Sequence,
    pub needs_approval: bool,
    pub original_id: String,
    /// Eventual consistency: how much later than the listing lag the order
    /// appears in GetListOrder.
    pub listing_delay: Duration,
}

/// What a cancellation did.
pub(crate) enum CancelOutcome {
    Unknown,
    /// Status 9 now; the webhook record of it.
    Cancelled(Value),
    Pending {
        case_id: String,
    },
    Refused(&'static str),
}

/// Every order, in creation order.
pub(crate) struct OrderBook {
    orders: Vec<Order>,
    next_serial: u32,
    next_hdr: u64,
    next_case: u64,
}

impl OrderBook {
    /// A book whose S10 serials start at `first_serial` (8 digits).
    pub fn new(first_serial: u32, first_hdr: u64) -> Self {
        Self {
            orders: Vec::new(),
            next_serial: first_serial,
            next_hdr: first_hdr,
            next_case: 1,
        }
    }

    /// Creates an order (never deduplicated: Vietnam Post has no idempotency
    /// key) and returns it with the webhook record of its first status.
    pub fn insert(&mut self, customer_code: &str, new: NewOrder, plan: Plan) -> (&Order, Value) {
        let prefix = match new.service_code.as_str() {
            "ETN011" | "ETN013" => "EE",
            _ => "BK",
        };
        let item_code = wire::item_code(prefix, self.next_serial);
        self.next_serial = (self.next_serial + 1) % 100_000_000;
        let order_hdr_id = self.next_hdr.to_string();
        self.next_hdr += 1;
        let weight = i64::try_from(new.weight_grams).unwrap_or(i64::MAX / 10);
        let mut order = Order {
            order_hdr_id,
            original_id: plan.original_id,
            item_code,
            sale_order_code: new.sale_order_code,
            customer_code: customer_code.to_owned(),
            service_code: new.service_code,
            weight_grams: new.weight_grams,
            total_fee: 15_000 + 5 * weight,
            cod_amount: new.cod_amount,
            sender: new.sender,
            receiver: new.receiver,
            created: Instant::now(),
            listing_delay: plan.listing_delay,
            draft: new.draft,
            history: Vec::new(),
            sequence: plan.sequence,
            next: 0,
            needs_approval: plan.needs_approval,
            cancellation: Cancellation::None,
        };
        let record = if order.draft {
            order.push(0);
            Value::Null
        } else {
            match order.step().cloned() {
                Some(step) => wire::webhook_record(&order, &step),
                None => Value::Null,
            }
        };
        self.orders.push(order);
        (&self.orders[self.orders.len() - 1], record)
    }

    /// Moves every unfinished order one step; the webhook records of the steps.
    pub fn step_all(&mut self) -> Vec<Value> {
        let mut records = Vec::new();
        for order in &mut self.orders {
            if let Some(step) = order.step().cloned() {
                records.push(wire::webhook_record(order, &step));
            }
        }
        records
    }

    /// Cancels the order with this `originalID` if it is not yet picked up.
    pub fn cancel(&mut self, original_id: &str) -> CancelOutcome {
        let Some(order) = self
            .orders
            .iter_mut()
            .find(|o| o.original_id == original_id)
        else {
            return CancelOutcome::Unknown;
        };
        match &order.cancellation {
            Cancellation::Pending { .. } => {
                return CancelOutcome::Refused("Đơn hàng đang chờ duyệt hủy");
            }
            Cancellation::Done { .. } => return CancelOutcome::Refused("Đơn hàng đã được hủy"),
            Cancellation::None => {}
        }
        if order.draft || !sequences::cancellable(order.status()) {
            return CancelOutcome::Refused(
                "Đơn hàng đã được bưu tá lấy hoặc đã kết thúc, không thể hủy",
            );
        }
        if order.needs_approval {
            let case_id = format!("CASE{:08}", self.next_case);
            self.next_case += 1;
            order.cancellation = Cancellation::Pending {
                case_id: case_id.clone(),
            };
            return CancelOutcome::Pending { case_id };
        }
        order.cancellation = Cancellation::Done { case_id: None };
        let step = order.push(9).clone();
        CancelOutcome::Cancelled(wire::webhook_record(order, &step))
    }

    /// Every order, in creation order.
    pub fn iter(&self) -> impl Iterator<Item = &Order> {
        self.orders.iter()
    }

    /// The order with this tracking number.
    pub fn by_item_code(&self, item_code: &str) -> Option<&Order> {
        self.orders.iter().find(|o| o.item_code == item_code)
    }

    /// Snapshots of the orders `keep` selects.
    pub fn snapshots(&self, keep: impl Fn(&Order) -> bool) -> Vec<OrderSnapshot> {
        self.orders
            .iter()
            .filter(|o| keep(o))
            .map(Order::snapshot)
            .collect()
    }
}

/// The carrier's clock: the wall clock in whole seconds.
pub(crate) fn carrier_now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}
