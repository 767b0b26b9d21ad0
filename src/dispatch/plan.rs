//! What to do next with a create job: a pure function of the job, what was
//! observed, the clock and randomness (domain.md, exactly one order).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::carrier::{CallFailure, CarrierOrder};
use crate::domain::CreateStep;
use crate::domain::retry::{Next, RetryPolicy};

/// What the create job knows about itself.
#[derive(Debug, Clone)]
pub struct JobView {
    pub step: CreateStep,
    /// Calls made, this one included.
    pub attempts: u32,
    /// Start of the retry deadline.
    pub first_attempt_at: Timestamp,
    pub refusal: Option<String>,
}

/// What happened.
#[derive(Debug, Clone)]
pub enum Observation {
    /// A create attempt was found started but unfinished (crash, lost lease).
    Interrupted {
        started_at: Timestamp,
    },
    Created(CarrierOrder),
    CreateFailed(CallFailure),
    Found(Vec<CarrierOrder>),
    LookupFailed(CallFailure),
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Reschedule {
        step: CreateStep,
        at: Timestamp,
        refusal: Option<String>,
        error: String,
    },
    /// Adopt `order`; cancel the `duplicates`.
    Adopt {
        order: CarrierOrder,
        duplicates: Vec<CarrierOrder>,
    },
    Reject {
        reason: String,
    },
    Fail {
        reason: String,
    },
}

/// Settings the plan depends on.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub retry: RetryPolicy,
    /// `postal.lookup_delay_s`: how long after an ambiguous attempt a lookup may run.
    pub lookup_delay: Duration,
}

fn after(ts: Timestamp, d: Duration) -> Timestamp {
    ts.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// Decides the next step of a create job.
pub fn plan(
    job: &JobView,
    observed: Observation,
    now: Timestamp,
    rules: &Rules,
    unit_random: f64,
) -> Plan {
    let retry = |step: CreateStep,
                 failure: &CallFailure,
                 earliest: Option<Timestamp>,
                 refusal: Option<String>| {
        match rules.retry.next(
            job.attempts,
            job.first_attempt_at,
            now,
            failure.retry_after(),
            unit_random,
        ) {
            Next::RetryAt(at) => {
                let at = earliest.map_or(at, |e| at.max(e));
                if at > after(job.first_attempt_at, rules.retry.deadline) {
                    give_up(failure)
                } else {
                    Plan::Reschedule {
                        step,
                        at,
                        refusal,
                        error: describe(failure),
                    }
                }
            }
            Next::GiveUp => give_up(failure),
        }
    };
    match observed {
        Observation::Interrupted { started_at } => {
            let at = now.max(after(started_at, rules.lookup_delay));
            if at > after(job.first_attempt_at, rules.retry.deadline) {
                Plan::Fail {
                    reason: "no Vietnam Post order could be confirmed before the retry deadline"
                        .into(),
                }
            } else {
                Plan::Reschedule {
                    step: CreateStep::Lookup,
                    at,
                    refusal: None,
                    error: "a create attempt was interrupted; looking the order up".into(),
                }
            }
        }
        Observation::Created(order) => Plan::Adopt {
            order,
            duplicates: Vec::new(),
        },
        Observation::CreateFailed(CallFailure::Refused { message }) => {
            if job.step == CreateStep::CallAfterLookup {
                // The refusal may mean the order exists but was not yet listed.
                Plan::Reschedule {
                    step: CreateStep::LookupThenReject,
                    at: after(now, rules.lookup_delay),
                    refusal: Some(message),
                    error: "refused after an ambiguous attempt; confirming with a lookup".into(),
                }
            } else {
                Plan::Reject { reason: message }
            }
        }
        Observation::CreateFailed(
            failure @ CallFailure::Transient {
                ambiguous: true, ..
            },
        ) => retry(
            CreateStep::Lookup,
            &failure,
            Some(after(now, rules.lookup_delay)),
            None,
        ),
        Observation::CreateFailed(failure) => retry(job.step, &failure, None, None),
        Observation::Found(orders) if !orders.is_empty() => {
            let mut orders = orders;
            earliest_first(&mut orders);
            let order = orders.remove(0);
            Plan::Adopt {
                order,
                duplicates: orders,
            }
        }
        Observation::Found(_) => match job.step {
            CreateStep::LookupThenReject => Plan::Reject {
                reason: job
                    .refusal
                    .clone()
                    .unwrap_or_else(|| "refused by Vietnam Post".into()),
            },
            _ => Plan::Reschedule {
                step: CreateStep::CallAfterLookup,
                at: now,
                refusal: None,
                error: "no order found after an ambiguous attempt; creating it".into(),
            },
        },
        Observation::LookupFailed(failure) => retry(job.step, &failure, None, job.refusal.clone()),
    }
}

/// Orders the orders found for one handoff as the rule adopts them: the
/// earliest created first; unknown creation times last, keeping the
/// carrier's listing order among equals.
pub fn earliest_first(orders: &mut [CarrierOrder]) {
    orders.sort_by_key(|o| o.created_at.map_or((1, Timestamp::MAX), |t| (0, t)));
}

/// The job's `last_error` (logged too): never the carrier's refusal text.
fn describe(failure: &CallFailure) -> String {
    failure.to_string()
}

fn give_up(failure: &CallFailure) -> Plan {
    Plan::Fail {
        reason: format!(
            "no Vietnam Post order within the retry deadline; last error: {}",
            describe(failure)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            retry: RetryPolicy {
                initial: Duration::from_secs(5),
                max: Duration::from_secs(3600),
                deadline: Duration::from_secs(172_800),
            },
            lookup_delay: Duration::from_secs(60),
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_764_000_000 + s).unwrap()
    }

    fn job(step: CreateStep) -> JobView {
        JobView {
            step,
            attempts: 1,
            first_attempt_at: t(0),
            refusal: None,
        }
    }

    fn order(id: &str, created: Option<i64>) -> CarrierOrder {
        CarrierOrder {
            order_id: id.into(),
            original_id: format!("orig-{id}"),
            tracking_number: Some(format!("BK{id}VN")),
            sale_order_code: None,
            postage_vnd: Some(23_000),
            created_at: created.map(t),
            status_code: Some(1),
        }
    }

    fn transient(ambiguous: bool) -> CallFailure {
        CallFailure::Transient {
            ambiguous,
            retry_after: None,
            detail: "x".into(),
            outcome: "transient",
        }
    }

    #[test]
    fn a_refused_lookup_is_retried_without_the_carriers_words_in_its_error() {
        let words = "Người nhận Trần Thị Bí Mật không có nhà";
        let refused = CallFailure::Refused {
            message: words.into(),
        };
        let p = plan(
            &job(CreateStep::Lookup),
            Observation::LookupFailed(refused.clone()),
            t(10),
            &rules(),
            0.0,
        );
        match p {
            Plan::Reschedule { step, error, .. } => {
                assert_eq!(step, CreateStep::Lookup);
                assert!(!error.contains(words), "{error}");
            }
            other => panic!("{other:?}"),
        }
        // Nor in what a log line would print of the failure itself.
        for shown in [format!("{refused}"), format!("{refused:?}")] {
            assert!(
                !shown.contains(words) && !shown.contains("Bí Mật"),
                "{shown}"
            );
        }
    }

    #[test]
    fn an_ambiguous_create_is_followed_by_a_lookup_no_earlier_than_the_delay() {
        let p = plan(
            &job(CreateStep::Call),
            Observation::CreateFailed(transient(true)),
            t(10),
            &rules(),
            0.0,
        );
        match p {
            Plan::Reschedule { step, at, .. } => {
                assert_eq!(step, CreateStep::Lookup);
                assert!(at >= t(70));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_create_that_never_reached_vietnam_post_is_simply_retried() {
        let p = plan(
            &job(CreateStep::Call),
            Observation::CreateFailed(transient(false)),
            t(10),
            &rules(),
            0.5,
        );
        assert!(
            matches!(
                p,
                Plan::Reschedule {
                    step: CreateStep::Call,
                    ..
                }
            ),
            "{p:?}"
        );
    }

    #[test]
    fn a_refusal_is_final_unless_it_follows_an_ambiguous_attempt() {
        let refused = || {
            Observation::CreateFailed(CallFailure::Refused {
                message: "Sai địa chỉ".into(),
            })
        };
        assert_eq!(
            plan(&job(CreateStep::Call), refused(), t(1), &rules(), 0.0),
            Plan::Reject {
                reason: "Sai địa chỉ".into()
            }
        );
        let p = plan(
            &job(CreateStep::CallAfterLookup),
            refused(),
            t(1),
            &rules(),
            0.0,
        );
        assert_eq!(
            p,
            Plan::Reschedule {
                step: CreateStep::LookupThenReject,
                at: t(61),
                refusal: Some("Sai địa chỉ".into()),
                error: "refused after an ambiguous attempt; confirming with a lookup".into(),
            }
        );
        let confirm = JobView {
            refusal: Some("Sai địa chỉ".into()),
            ..job(CreateStep::LookupThenReject)
        };
        assert_eq!(
            plan(&confirm, Observation::Found(vec![]), t(61), &rules(), 0.0),
            Plan::Reject {
                reason: "Sai địa chỉ".into()
            }
        );
        assert!(matches!(
            plan(
                &confirm,
                Observation::Found(vec![order("1", None)]),
                t(61),
                &rules(),
                0.0
            ),
            Plan::Adopt { .. }
        ));
    }

    #[test]
    fn a_lookup_that_finds_nothing_allows_a_new_create_at_once() {
        let p = plan(
            &job(CreateStep::Lookup),
            Observation::Found(vec![]),
            t(70),
            &rules(),
            0.0,
        );
        assert!(
            matches!(p, Plan::Reschedule { step: CreateStep::CallAfterLookup, at, .. } if at == t(70))
        );
    }

    #[test]
    fn the_earliest_of_several_orders_is_adopted_and_the_rest_cancelled() {
        let found = vec![order("b", Some(20)), order("c", None), order("a", Some(10))];
        match plan(
            &job(CreateStep::Lookup),
            Observation::Found(found),
            t(70),
            &rules(),
            0.0,
        ) {
            Plan::Adopt { order, duplicates } => {
                assert_eq!(order.order_id, "a");
                let rest: Vec<_> = duplicates.iter().map(|o| o.order_id.as_str()).collect();
                assert_eq!(rest, ["b", "c"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_interrupted_attempt_is_looked_up() {
        let p = plan(
            &job(CreateStep::Call),
            Observation::Interrupted { started_at: t(5) },
            t(6),
            &rules(),
            0.0,
        );
        assert!(matches!(p, Plan::Reschedule { step: CreateStep::Lookup, at, .. } if at == t(65)));
    }

    #[test]
    fn past_the_deadline_the_handoff_fails() {
        let late = t(172_800);
        let p = plan(
            &job(CreateStep::Call),
            Observation::CreateFailed(transient(false)),
            late,
            &rules(),
            0.9,
        );
        assert!(matches!(p, Plan::Fail { .. }), "{p:?}");
        let p = plan(
            &job(CreateStep::Call),
            Observation::CreateFailed(transient(true)),
            t(172_790),
            &rules(),
            0.0,
        );
        assert!(
            matches!(p, Plan::Fail { .. }),
            "a lookup after the deadline is not made: {p:?}"
        );
    }
}
