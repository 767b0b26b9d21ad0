//! Moves every order one status step each `step_interval`.

use std::sync::Arc;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::state::Shared;

/// Steps the orders until `stop`.
#[tracing::instrument(skip_all)]
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let period = shared.config.step_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => shared.step_all(),
        }
    }
}
