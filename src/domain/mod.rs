//! The gateway's domain: pure types and rules, no I/O and no clock of its own.

pub mod handoff;
pub mod phone;
pub mod request;
pub mod retry;
pub mod text;
pub mod time;

pub use handoff::{CarrierInfo, Effect, Handoff, HandoffId, Kind, Source, Status, TimelineEntry};
pub use phone::PhoneNumber;
pub use request::{FieldError, HandoffRequest, RequestRules};
