//! The gateway's domain: pure types and rules, no I/O and no clock of its own.

pub mod callback;
pub mod handoff;
pub mod holidays;
pub mod lunar;
pub mod ownership;
pub mod phone;
pub mod request;
pub mod retry;
pub mod sla;
pub mod state_machine;
pub mod text;
pub mod time;
pub mod xml;

pub use handoff::{
    CarrierInfo, CreateStep, Effect, Handoff, HandoffId, Kind, PostalOrder, Source, Status,
    TimelineEntry,
};
pub use phone::PhoneNumber;
pub use request::{FieldError, HandoffRequest, RequestRules};
