//! The loop every background worker runs: claim a step of work, or sleep a
//! little when there is none, until the drain.

use std::future::Future;
use std::time::Duration;

use crate::lifecycle::Lifecycle;

/// Whether a step found work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executed {
    Worked,
    Idle,
}

/// The first error of a batch's jobs, once all have run; the others are
/// logged, so none goes unseen.
pub fn first_error(name: &'static str, results: Vec<anyhow::Result<()>>) -> anyhow::Result<()> {
    let mut first = None;
    for e in results.into_iter().filter_map(Result::err) {
        if first.is_some() {
            tracing::warn!(worker = name, error = %e, "job failed");
        } else {
            first = Some(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Runs `workers` concurrent loops of `step` until the lifecycle drains; a
/// loop finishes the step it is in before it stops.
pub async fn run_loops<F, Fut>(
    name: &'static str,
    lifecycle: Lifecycle,
    workers: usize,
    poll: Duration,
    step: F,
) where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<Executed>> + Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let step = step.clone();
        let lc = lifecycle.clone();
        tasks.spawn(async move {
            while !lc.is_draining() {
                match step().await {
                    Ok(Executed::Worked) => {}
                    Ok(Executed::Idle) => {
                        tokio::select! {
                            () = tokio::time::sleep(poll) => {}
                            () = lc.drained() => {}
                        }
                    }
                    Err(e) => {
                        tracing::warn!(worker = name, error = %e, "worker step failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}
