//! What the simulator's server, walker and webhook sender share: the order
//! book, tokens, faults, counters and one seeded RNG.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use super::SimConfig;
use super::faults::{AnswerFault, Faults, SimStats};
use super::orders::{CancelOutcome, OrderBook, Plan};
use super::sequences::{self, APPROVAL_MARKER, COD_SEQUENCE, Sequence};
use super::validate::NewOrder;
use super::wire;

/// The simulator's state. Locks are taken one at a time, except the order
/// book, which may be held while a leaf lock (RNG, stats) is taken.
pub(crate) struct Shared {
    pub config: SimConfig,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
    book: Mutex<OrderBook>,
    stats: Mutex<SimStats>,
    /// Token → when it was issued.
    tokens: Mutex<HashMap<String, Instant>>,
    /// Webhook records, in the order the statuses happened; `None` when no
    /// webhook URL is configured.
    webhooks: Option<UnboundedSender<Value>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(config: SimConfig, webhooks: Option<UnboundedSender<Value>>) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let book = OrderBook::new(
            rng.random_range(10_000_000..90_000_000),
            rng.random_range(100_000_000..900_000_000),
        );
        Self {
            faults: Mutex::new(config.faults.clone().normalized()),
            rng: Mutex::new(rng),
            book: Mutex::new(book),
            stats: Mutex::new(SimStats::default()),
            tokens: Mutex::new(HashMap::new()),
            webhooks,
            config,
        }
    }

    pub fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.faults) = faults.normalized();
    }

    /// True with probability `rate`.
    pub fn chance(&self, rate: f64) -> bool {
        rate > 0.0 && lock(&self.rng).random::<f64>() < rate
    }

    /// The latency to add to an answer now.
    pub fn latency(&self) -> Duration {
        let f = self.faults();
        let jitter = match f.latency_jitter_ms {
            0 => 0,
            max => lock(&self.rng).random_range(0..=max),
        };
        Duration::from_millis(f.latency_ms + jitter)
    }

    /// The way this call's answer is spoilt, if it is.
    pub fn answer_fault(&self) -> Option<AnswerFault> {
        let f = self.faults();
        if self.chance(f.reset_rate) {
            Some(AnswerFault::Reset)
        } else if self.chance(f.half_answer_rate) {
            Some(AnswerFault::HalfAnswer)
        } else if self.chance(f.garbage_answer_rate) {
            Some(AnswerFault::Garbage)
        } else if self.chance(f.slow_answer_rate) {
            Some(AnswerFault::Slow(f.slow_answer()))
        } else {
            None
        }
    }

    pub fn count(&self, update: impl FnOnce(&mut SimStats)) {
        update(&mut lock(&self.stats));
    }

    pub fn stats(&self) -> SimStats {
        lock(&self.stats).clone()
    }

    pub fn book(&self) -> MutexGuard<'_, OrderBook> {
        lock(&self.book)
    }

    /// A new token for a login body, or `None` for wrong credentials.
    pub fn login(&self, body: &Value) -> Option<String> {
        let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
        let credentials_ok = self
            .config
            .credentials
            .as_ref()
            .is_none_or(|c| c.username == field("username") && c.password == field("password"));
        let customer_ok = self
            .config
            .customer_code
            .as_deref()
            .is_none_or(|c| c == field("customerCode"));
        if !(credentials_ok && customer_ok) {
            return None;
        }
        let token = format!("{:032x}", lock(&self.rng).random::<u128>());
        let ttl = self.faults().token_ttl();
        let mut tokens = lock(&self.tokens);
        tokens.retain(|_, issued| issued.elapsed() < ttl);
        tokens.insert(token.clone(), Instant::now());
        Some(token)
    }

    /// Whether a token was issued and has not expired.
    pub fn token_valid(&self, token: &str) -> bool {
        let ttl = self.faults().token_ttl();
        lock(&self.tokens)
            .get(token)
            .is_some_and(|issued| issued.elapsed() < ttl)
    }

    /// Creates the order; its record as CreateOrder answers it.
    pub fn create(&self, customer_code: &str, new: NewOrder) -> Value {
        let plan = self.plan(&new);
        let delayed = !plan.listing_delay.is_zero();
        let mut book = self.book();
        let (order, first) = book.insert(customer_code, new, plan);
        let record = wire::record(order);
        drop(book);
        self.count(|s| {
            s.orders_created += 1;
            s.listing_delays_injected += u64::from(delayed);
        });
        self.emit(first);
        record
    }

    fn plan(&self, new: &NewOrder) -> Plan {
        let marked = sequences::marked(&new.content_note)
            .or_else(|| sequences::marked(&new.sale_order_code));
        let mut sequence = marked.unwrap_or_else(|| self.weighted_sequence());
        if marked.is_none() && sequence.name == "delivered" && new.cod_amount > 0 {
            sequence = sequences::sequence(COD_SEQUENCE).unwrap_or(sequence);
        }
        let needs_approval = new.content_note.contains(APPROVAL_MARKER)
            || new.sale_order_code.contains(APPROVAL_MARKER)
            || self.chance(self.config.cancel_approval_rate);
        let original_id = format!("{:032X}", lock(&self.rng).random::<u128>());
        let listing_delay = match self.faults().listing_delay_ms {
            0 => Duration::ZERO,
            max => Duration::from_millis(lock(&self.rng).random_range(0..=max)),
        };
        Plan {
            sequence,
            needs_approval,
            original_id,
            listing_delay,
        }
    }

    fn weighted_sequence(&self) -> &'static Sequence {
        let weights: Vec<(&'static Sequence, u32)> = self
            .config
            .sequence_weights
            .iter()
            .filter_map(|(name, w)| sequences::sequence(name).map(|s| (s, *w)))
            .filter(|(_, w)| *w > 0)
            .collect();
        let total: u32 = weights.iter().map(|(_, w)| w).sum();
        let fallback = &sequences::SEQUENCES[0];
        if total == 0 {
            return fallback;
        }
        let mut pick = lock(&self.rng).random_range(0..total);
        for (sequence, weight) in weights {
            if pick < weight {
                return sequence;
            }
            pick -= weight;
        }
        fallback
    }

    /// Moves every unfinished order one step and queues the webhooks.
    pub fn step_all(&self) {
        let records = self.book().step_all();
        for record in records {
            self.emit(record);
        }
    }

    pub fn cancel(&self, original_id: &str) -> CancelOutcome {
        let outcome = self.book().cancel(original_id);
        if let CancelOutcome::Cancelled(record) = &outcome {
            self.emit(record.clone());
        }
        outcome
    }

    fn emit(&self, record: Value) {
        if let Some(webhooks) = &self.webhooks
            && !record.is_null()
        {
            // Closed only after shutdown, when nothing is sent any more.
            let _ = webhooks.send(record);
        }
    }
}
