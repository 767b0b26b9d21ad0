//! bcci-gateway: relays dossier handoffs between one-stop-shop intake systems
//! and Vietnam Post's public postal service (bưu chính công ích, BCCI).
//!
//! Data flows one way around a loop through the store: `intake` records
//! handoffs, `dispatch` creates postal orders, `events` applies Vietnam Post's
//! statuses, `relay` sends signed callbacks. See `docs/architecture.md`.

pub mod admin;
pub mod app;
pub mod carrier;
pub mod cli;
pub mod clock;
pub mod config;
#[cfg(feature = "sim")]
pub mod demo;
pub mod dispatch;
pub mod domain;
pub mod events;
pub mod http;
pub mod intake;
pub mod lifecycle;
pub mod probes;
pub mod relay;
#[cfg(feature = "sim")]
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod web;
pub mod worker;
