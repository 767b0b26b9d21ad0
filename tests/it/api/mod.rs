//! Integration tests: the real application on port 0 with a real store.

mod idempotency;
mod intake_errors;
mod probes;
mod reads;
mod test_app;
