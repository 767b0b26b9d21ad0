//! The handoff's identity, kinds, statuses and timeline vocabulary.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The gateway's id of a handoff: `h_` followed by a ULID (28 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandoffId(String);

impl HandoffId {
    /// A new id whose ULID embeds `ms` (Unix milliseconds) and the given randomness.
    pub fn new(ms: u64, random: u128) -> Self {
        let ulid = ulid::Ulid::from_parts(ms, random);
        Self(format!("h_{ulid}"))
    }

    /// Parses an id as it appears in a path; anything else is not a handoff id.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("h_")?;
        let ulid = ulid::Ulid::from_string(rest).ok()?;
        // Canonical spelling only, so one handoff never has two ids.
        (ulid.to_string() == rest).then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HandoffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for HandoffId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The contract's spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($text => Ok($name::$variant),)+ _ => Err(()) }
            }
        }
    };
}

string_enum! {
    /// Which way the dossier travels.
    Kind {
        Pickup => "pickup",
        Return => "return",
    }
}

string_enum! {
    /// A handoff's status; declaration order is the lifecycle rank (domain.md).
    Status {
        Received => "received",
        OrderCreated => "order_created",
        PickingUp => "picking_up",
        PickupAttemptFailed => "pickup_attempt_failed",
        PickedUp => "picked_up",
        InTransit => "in_transit",
        OutForDelivery => "out_for_delivery",
        DeliveryAttemptFailed => "delivery_attempt_failed",
        Returning => "returning",
        Delivered => "delivered",
        Returned => "returned",
        PartiallyDelivered => "partially_delivered",
        PickupFailed => "pickup_failed",
        Cancelled => "cancelled",
        Rejected => "rejected",
        Failed => "failed",
    }
}

impl Status {
    /// Lifecycle rank used to order carrier events with equal times.
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// Terminal statuses absorb carrier events.
    pub fn is_terminal(self) -> bool {
        self >= Status::Delivered
    }

    /// Statuses in which the intake system may still cancel.
    pub fn is_cancellable(self) -> bool {
        matches!(
            self,
            Status::Received
                | Status::OrderCreated
                | Status::PickingUp
                | Status::PickupAttemptFailed
        )
    }
}

string_enum! {
    /// Who reported a timeline event.
    Source {
        Gateway => "gateway",
        Webhook => "webhook",
        Poll => "poll",
        Intake => "intake",
        Operator => "operator",
    }
}

string_enum! {
    /// What a timeline event did to its handoff.
    Effect {
        Applied => "applied",
        Stale => "stale",
        Duplicate => "duplicate",
        Absorbed => "absorbed",
        Annotation => "annotation",
        UnknownCode => "unknown_code",
    }
}

/// A handoff as the store knows it (without its personal details).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    pub id: HandoffId,
    pub client: String,
    pub request_id: String,
    pub kind: Kind,
    pub dossier_code: String,
    pub agency_code: String,
    pub status: Status,
    pub reason: Option<String>,
    pub tracking_number: Option<String>,
    pub postage_vnd: Option<i64>,
    pub cod_amount_vnd: u64,
    pub cod_settled: bool,
    pub created_at: jiff::Timestamp,
    pub updated_at: jiff::Timestamp,
    pub due_at: Option<jiff::Timestamp>,
    pub sla_due_at: Option<jiff::Timestamp>,
}

/// The facts of a postal order a handoff records when it adopts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostalOrder {
    pub order_id: String,
    pub original_id: String,
    pub tracking_number: Option<String>,
    pub postage_vnd: Option<i64>,
}

string_enum! {
    /// The next step of a handoff's create job (domain.md, exactly one order).
    CreateStep {
        /// Send CreateOrder.
        Call => "call",
        /// Send CreateOrder after a lookup found nothing: a refusal must be
        /// confirmed by one more lookup.
        CallAfterLookup => "call_after_lookup",
        /// Look the order up by saleOrderCode after an ambiguous attempt.
        Lookup => "lookup",
        /// Look up once more before accepting a refusal.
        LookupThenReject => "lookup_then_reject",
    }
}

/// What Vietnam Post said about an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierInfo {
    pub code: i64,
    pub text: Option<String>,
    pub location: Option<String>,
}

/// One fact on a handoff's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    /// The callback's sequence when the entry was relayed.
    pub sequence: Option<u64>,
    pub status: Option<Status>,
    pub effect: Effect,
    pub occurred_at: jiff::Timestamp,
    pub source: Source,
    pub carrier: Option<CarrierInfo>,
    pub reason: Option<String>,
    pub operator: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_28_characters_and_round_trip() {
        let id = HandoffId::new(1_764_000_000_000, 42);
        assert_eq!(id.as_str().len(), 28);
        assert_eq!(HandoffId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn ids_in_other_spellings_are_refused() {
        let id = HandoffId::new(1_764_000_000_000, 42);
        assert_eq!(HandoffId::parse(&id.as_str().to_lowercase()), None);
        assert_eq!(HandoffId::parse("h_short"), None);
        assert_eq!(HandoffId::parse(&id.as_str()[2..]), None);
    }

    #[test]
    fn rank_follows_the_contract_table_and_terminals_rank_highest() {
        let ranks: Vec<u8> = Status::ALL.iter().map(|s| s.rank()).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]));
        let terminal: Vec<&str> = Status::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            terminal,
            [
                "delivered",
                "returned",
                "partially_delivered",
                "pickup_failed",
                "cancelled",
                "rejected",
                "failed"
            ]
        );
    }

    #[test]
    fn statuses_parse_from_their_spelling() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>(), Ok(*s));
        }
        assert!("unknown".parse::<Status>().is_err());
    }
}
