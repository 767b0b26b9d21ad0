//! One store test suite, run against both backends: every test below is
//! generated twice by `on_both_backends!`, once on SQLite and once on a fresh
//! PostgreSQL database. The tests speak only through the `Store` traits
//! (but for one injected failure, at the end).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{Backend, TestStore};
use bcci_gateway::config::StoreSettings;
use bcci_gateway::domain::callback::BodyFormat;
use bcci_gateway::domain::request::{Origin, RequestRules};
use bcci_gateway::domain::state_machine::CarrierEvent;
use bcci_gateway::domain::{
    CarrierInfo, CreateStep, Effect, HandoffId, HandoffRequest, PostalOrder, Source, Status,
};
use bcci_gateway::store::admin::{AdminOutcome, CallbackReplay, CallbackState, Resolution};
use bcci_gateway::store::{
    CallbackOutcome, CancelRequest, CreateOutcome, EventContext, EventOutcome,
    IncomingCarrierEvent, NewHandoff, PostalJob, PostalOutcome, SharedStore,
};
use jiff::{SignedDuration, Timestamp};

const CLIENT: &str = "motcua";
const LEASE: Duration = Duration::from_secs(60);

on_both_backends!(
    workers = 2, via = run;
    a_request_id_is_stored_once_and_answered_again,
    racing_duplicates_store_one_handoff,
    claims_never_hand_one_job_to_two_owners,
    concurrent_attempt_starts_are_each_recorded,
    an_expired_lease_is_taken_over_and_its_unfinished_create_is_looked_up,
    no_call_starts_when_less_than_one_call_timeout_of_lease_is_left,
    released_leases_are_taken_at_once_and_their_create_looked_up_first,
    an_adopted_order_and_carrier_events_are_relayed_in_sequence,
    a_batch_of_carrier_events_records_what_they_record_one_by_one,
    callbacks_are_claimed_head_first_per_handoff_across_owners,
    concurrent_callback_outcomes_are_each_recorded_once,
    a_dead_callback_holds_the_queue_until_replayed,
    a_cancel_before_any_call_cancels_at_once,
    an_event_for_an_unknown_order_changes_nothing,
    a_carrier_event_is_matched_by_the_key_it_trusts_most,
    a_breach_is_recorded_once,
    the_purge_clears_old_terminal_handoffs_once,
    concurrent_webhooks_keep_every_sequence_contiguous,
    a_failed_handoff_replayed_by_an_operator_begins_with_a_lookup,
    a_partial_delivery_is_resolved_once_and_relayed,
    an_erasure_clears_personal_data_once,
    a_purge_and_an_erasure_clear_vietnam_posts_refusal_texts,
    an_erasure_clears_a_refusal_still_awaiting_its_confirming_lookup,
    retention_runs_from_the_later_of_the_terminal_time_and_the_sla_due_date,
    statistics_count_the_handoffs_of_the_days_asked,
);

type TestFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn run(backend: Backend, test: impl FnOnce(SharedStore) -> TestFuture) {
    let Some(place) = TestStore::new(backend).await else {
        return;
    };
    let store = open(&place).await;
    test(store.clone()).await;
    store.close().await;
    drop(place);
}

/// The store at `place`, migrated.
async fn open(place: &TestStore) -> SharedStore {
    let settings = StoreSettings {
        url: place.url.clone(),
        lease_s: LEASE.as_secs(),
    };
    bcci_gateway::store::open(&place.url, &settings)
        .await
        .expect("open the store")
}

fn start() -> Timestamp {
    Timestamp::from_second(1_764_057_600).unwrap()
}

fn request(request_id: &str) -> HandoffRequest {
    let mut doc: serde_json::Value = crate::common::fixture_json("valid/return-cod.json");
    doc["request_id"] = serde_json::json!(request_id);
    let rules = RequestRules {
        service_codes: vec!["CTN009".into(), "ETN011".into(), "ETN013".into()],
        pickup_fees_allowed: false,
    };
    HandoffRequest::parse(&doc, Origin::Json, &rules).expect("the fixture is valid")
}

fn new_handoff(request: HandoffRequest, now: Timestamp) -> NewHandoff {
    NewHandoff::new(
        HandoffId::new(now.as_millisecond() as u64, rand::random()),
        CLIENT.into(),
        request,
        now,
    )
}

async fn created(store: &SharedStore, request_id: &str, now: Timestamp) -> HandoffId {
    match store
        .create_handoff(new_handoff(request(request_id), now))
        .await
        .unwrap()
    {
        CreateOutcome::Created(h) => h.id,
        other => panic!("expected a new handoff, got {other:?}"),
    }
}

async fn claim_one(store: &SharedStore, owner: &str, now: Timestamp) -> PostalJob {
    let mut jobs = store.claim_postal_jobs(owner, now, LEASE, 1).await.unwrap();
    assert_eq!(jobs.len(), 1, "one due job for {owner}");
    jobs.remove(0)
}

fn order_for(id: &HandoffId) -> PostalOrder {
    PostalOrder {
        order_id: format!("HDR-{id}"),
        original_id: format!("ORIG-{id}"),
        tracking_number: Some(format!("EB{}VN", &id.as_str()[id.as_str().len() - 12..])),
        postage_vnd: Some(25_000),
    }
}

/// Creates a handoff and has its create job adopt an order; returns its id
/// and tracking number.
async fn with_order(store: &SharedStore, request_id: &str, now: Timestamp) -> (HandoffId, String) {
    let id = created(store, request_id, now).await;
    let owner = format!("w-{request_id}");
    let mut jobs = store
        .claim_postal_jobs(&owner, now, LEASE, 50)
        .await
        .unwrap();
    let job = jobs
        .iter()
        .position(|j| j.handoff.id == id)
        .map(|i| jobs.remove(i))
        .expect("the new handoff's create job is due");
    assert!(
        store
            .start_postal_attempt(&job, &owner, now, Duration::ZERO)
            .await
            .unwrap()
    );
    let order = order_for(&id);
    let outcome = PostalOutcome::Adopt {
        order: order.clone(),
        duplicates: Vec::new(),
        format: BodyFormat::Json,
    };
    assert!(
        store
            .finish_postal_job(&job, &owner, now, outcome)
            .await
            .unwrap()
    );
    for other in jobs {
        // Give back what this helper claimed by the way.
        let back = PostalOutcome::Reschedule {
            step: other.step,
            at: now,
            refusal: None,
            last_error: None,
        };
        store
            .finish_postal_job(&other, &owner, now, back)
            .await
            .unwrap();
    }
    (id, order.tracking_number.unwrap())
}

fn event(tracking: &str, code: i64, at: Timestamp) -> IncomingCarrierEvent {
    IncomingCarrierEvent {
        sale_order_code: None,
        tracking_number: Some(tracking.to_owned()),
        original_id: None,
        order: None,
        event: CarrierEvent {
            source: Source::Webhook,
            code,
            occurred_at: at,
        },
        carrier: CarrierInfo {
            code,
            text: Some(format!("code {code}")),
            location: None,
        },
        raw: Some(format!("{{\"itemCode\":\"{tracking}\",\"status\":{code}}}")),
        cod_amount: None,
    }
}

async fn apply(
    store: &SharedStore,
    events: Vec<IncomingCarrierEvent>,
    now: Timestamp,
) -> Vec<EventOutcome> {
    store
        .apply_carrier_events(events, &EventContext::default(), now)
        .await
        .unwrap()
}

/// Runs `calls` concurrently; their answers, in order.
async fn at_once<T, E: std::fmt::Debug>(
    calls: Vec<impl std::future::Future<Output = Result<T, E>>>,
) -> Vec<T> {
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

fn effect_of(outcome: &EventOutcome) -> Effect {
    match outcome {
        EventOutcome::Recorded { effect, .. } => *effect,
        EventOutcome::UnknownOrder => panic!("the event found no handoff"),
        EventOutcome::DuplicateOrder { .. } => panic!("the event is another order's"),
    }
}

async fn sequences(store: &SharedStore, id: &HandoffId) -> Vec<u64> {
    store
        .callbacks_of(id)
        .await
        .unwrap()
        .into_iter()
        .map(|(s, _, _)| s)
        .collect()
}

async fn status(store: &SharedStore, id: &HandoffId) -> Status {
    store.handoff(None, id).await.unwrap().unwrap().status
}

// ---------------------------------------------------------------- intake

async fn a_request_id_is_stored_once_and_answered_again(store: SharedStore) {
    let now = start();
    let id = created(&store, "R-1", now).await;
    let again = store
        .create_handoff(new_handoff(request("R-1"), now))
        .await
        .unwrap();
    assert!(
        matches!(&again, CreateOutcome::Existing { handoff, same_request: true } if handoff.id == id),
        "{again:?}"
    );
    let mut changed = request("R-1");
    changed.dossier_code.push('X');
    let different = store
        .create_handoff(new_handoff(changed, now))
        .await
        .unwrap();
    assert!(
        matches!(
            &different,
            CreateOutcome::Existing {
                same_request: false,
                ..
            }
        ),
        "{different:?}"
    );
    assert_eq!(store.count_handoffs().await.unwrap(), 1);
    assert_eq!(store.count_pending_postal_jobs().await.unwrap(), 1);
    let stored = store.handoff(Some(CLIENT), &id).await.unwrap().unwrap();
    assert_eq!(stored.status, Status::Received);
    assert!(store.handoff(Some("other"), &id).await.unwrap().is_none());
}

async fn racing_duplicates_store_one_handoff(store: SharedStore) {
    let now = start();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_handoff(new_handoff(request("RACE"), now))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            CreateOutcome::Created(_) => created += 1,
            CreateOutcome::Existing { same_request, .. } => assert!(same_request),
        }
    }
    assert_eq!(created, 1, "exactly one racer creates the handoff");
    assert_eq!(store.count_handoffs().await.unwrap(), 1);
    assert_eq!(store.count_pending_postal_jobs().await.unwrap(), 1);
}

// ---------------------------------------------------------------- postal jobs

async fn claims_never_hand_one_job_to_two_owners(store: SharedStore) {
    let now = start();
    for i in 0..40 {
        created(&store, &format!("C-{i}"), now).await;
    }
    let owners: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let owner = format!("owner-{w}");
                let mut mine = Vec::new();
                loop {
                    let jobs = store
                        .claim_postal_jobs(&owner, now, LEASE, 3)
                        .await
                        .unwrap();
                    if jobs.is_empty() {
                        break mine;
                    }
                    mine.extend(jobs.into_iter().map(|j| j.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for o in owners {
        all.extend(o.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().copied().collect();
    assert_eq!(all.len(), 40, "every job claimed once: {all:?}");
    assert_eq!(unique.len(), 40);
}

async fn concurrent_attempt_starts_are_each_recorded(store: SharedStore) {
    let now = start();
    for i in 0..6 {
        created(&store, &format!("S-{i}"), now).await;
    }
    let jobs = store.claim_postal_jobs("a", now, LEASE, 10).await.unwrap();
    assert_eq!(jobs.len(), 6);
    // Every start at once: the first job twice, the second by an owner
    // without its lease, the third asking for more lease than is left.
    let mut starts = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let owner = if i == 1 { "b" } else { "a" };
        let must_remain = if i == 2 { LEASE * 2 } else { Duration::ZERO };
        starts.push(store.start_postal_attempt(job, owner, now, must_remain));
    }
    starts.push(store.start_postal_attempt(&jobs[0], "a", now, Duration::ZERO));
    let started = at_once(starts).await;
    assert_eq!(started, vec![true, false, false, true, true, true, true]);
    // Given back, the jobs show what was recorded: two attempts for the
    // first (each start counts), none for the refused ones.
    store.release_leases(&["a"]).await.unwrap();
    let again = store.claim_postal_jobs("c", now, LEASE, 10).await.unwrap();
    let attempts = |id: i64| again.iter().find(|j| j.id == id).unwrap().attempts;
    assert_eq!(attempts(jobs[0].id), 2);
    assert_eq!(attempts(jobs[1].id), 0);
    assert_eq!(attempts(jobs[2].id), 0);
    assert!(jobs[3..].iter().all(|j| attempts(j.id) == 1));
}

async fn an_expired_lease_is_taken_over_and_its_unfinished_create_is_looked_up(store: SharedStore) {
    let now = start();
    let id = created(&store, "L-1", now).await;
    let short = Duration::from_millis(500);
    let mut jobs = store.claim_postal_jobs("a", now, short, 1).await.unwrap();
    let job = jobs.remove(0);
    assert_eq!(job.step, CreateStep::Call);
    assert!(job.interrupted_at.is_none());
    // `a` commits the start of its create call, then dies.
    assert!(
        store
            .start_postal_attempt(&job, "a", now, Duration::ZERO)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_postal_jobs("b", now, LEASE, 1)
            .await
            .unwrap()
            .is_empty(),
        "a held lease is not taken"
    );
    tokio::time::sleep(short + Duration::from_millis(300)).await;
    let later = now + SignedDuration::from_secs(1);
    let taken = claim_one(&store, "b", later).await;
    assert_eq!(taken.handoff.id, id);
    assert!(
        taken.interrupted_at.is_some(),
        "the interrupted create is known to be ambiguous (a lookup comes first)"
    );
    // `a` wakes up: its lease is gone, so nothing it does counts.
    assert!(
        !store
            .start_postal_attempt(&job, "a", later, Duration::ZERO)
            .await
            .unwrap()
    );
    let adopt = PostalOutcome::Adopt {
        order: order_for(&id),
        duplicates: Vec::new(),
        format: BodyFormat::Json,
    };
    assert!(
        !store
            .finish_postal_job(&job, "a", later, adopt.clone())
            .await
            .unwrap()
    );
    assert_eq!(status(&store, &id).await, Status::Received);
    assert!(
        store
            .finish_postal_job(&taken, "b", later, adopt)
            .await
            .unwrap()
    );
    assert_eq!(status(&store, &id).await, Status::OrderCreated);
    assert_eq!(sequences(&store, &id).await, vec![1]);
}

async fn no_call_starts_when_less_than_one_call_timeout_of_lease_is_left(store: SharedStore) {
    let now = start();
    created(&store, "T-1", now).await;
    let mut jobs = store
        .claim_postal_jobs("a", now, Duration::from_secs(5), 1)
        .await
        .unwrap();
    let job = jobs.remove(0);
    assert!(
        !store
            .start_postal_attempt(&job, "a", now, Duration::from_secs(10))
            .await
            .unwrap(),
        "a 10 s call does not fit in a 5 s lease"
    );
    assert!(
        store
            .start_postal_attempt(&job, "a", now, Duration::from_secs(1))
            .await
            .unwrap()
    );
}

async fn released_leases_are_taken_at_once_and_their_create_looked_up_first(store: SharedStore) {
    let now = start();
    let (id, tracking) = with_order(&store, "R-0", now).await;
    apply(&store, vec![event(&tracking, 2, now)], now).await;
    created(&store, "R-1", now).await;
    let job = claim_one(&store, "a", now).await;
    assert!(
        store
            .start_postal_attempt(&job, "a", now, Duration::ZERO)
            .await
            .unwrap()
    );
    let callback = store.claim_callbacks("a", now, LEASE, 1).await.unwrap();
    assert_eq!(callback.len(), 1);
    assert_eq!(callback[0].handoff_id, id);
    // `a` shuts down with a call cut short: it gives its leases back.
    assert_eq!(store.release_leases(&["a", "nobody"]).await.unwrap(), 2);
    let taken = claim_one(&store, "b", now).await;
    assert_eq!(taken.id, job.id);
    assert!(
        taken.interrupted_at.is_some(),
        "the cut-short create is ambiguous: a lookup comes first"
    );
    let again = store.claim_callbacks("b", now, LEASE, 1).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, callback[0].id);
}

// ---------------------------------------------------------------- events and callbacks

async fn an_adopted_order_and_carrier_events_are_relayed_in_sequence(store: SharedStore) {
    let now = start();
    let (id, tracking) = with_order(&store, "E-1", now).await;
    assert_eq!(status(&store, &id).await, Status::OrderCreated);
    let t1 = now + SignedDuration::from_mins(10);
    let t2 = now + SignedDuration::from_mins(20);
    let outcomes = apply(
        &store,
        vec![
            event(&tracking, 2, t1),
            event(&tracking, 6, t2),
            event(&tracking, 6, t2),
            event(&tracking, 3, t1),
        ],
        t2,
    )
    .await;
    let effects: Vec<_> = outcomes.iter().map(effect_of).collect();
    assert_eq!(
        effects,
        vec![
            Effect::Applied,
            Effect::Applied,
            Effect::Duplicate,
            Effect::Stale
        ]
    );
    assert_eq!(status(&store, &id).await, Status::PickedUp);
    assert_eq!(sequences(&store, &id).await, vec![1, 2, 3]);
    let timeline = store.timeline(&id).await.unwrap();
    assert!(timeline.iter().any(|e| e.effect == Effect::Stale));
}

/// The events of [`a_batch_of_carrier_events_records_what_they_record_one_by_one`]
/// for a handoff `id` without an order yet.
fn life_of(id: &HandoffId, t: Timestamp) -> Vec<IncomingCarrierEvent> {
    let order = order_for(id);
    let tracking = order.tracking_number.clone().unwrap();
    let at = |mins| t + SignedDuration::from_mins(mins);
    let mut revealing = event(&tracking, 2, at(1));
    revealing.sale_order_code = Some(id.to_string());
    revealing.original_id = Some(order.original_id.clone());
    revealing.order = Some(order);
    let mut cod = event(&tracking, 21, at(40));
    cod.cod_amount = Some(48_000);
    let mut other = event("EB000000000VN", 3, at(50));
    other.sale_order_code = Some(id.to_string());
    other.original_id = Some(format!("OTHER-{id}"));
    vec![
        revealing,
        event(&tracking, 6, at(20)),
        event(&tracking, 6, at(20)),
        event(&tracking, 12, at(30)),
        cod,
        event(&tracking, 14, at(45)),
        other.clone(),
        other,
    ]
}

/// What a handoff's events left, with its own ids taken out so two
/// handoffs' records compare.
async fn record_of(store: &SharedStore, id: &HandoffId, outcomes: &[EventOutcome]) -> String {
    let h = store.handoff(None, id).await.unwrap().unwrap();
    let timeline = store.timeline(id).await.unwrap();
    let callbacks: Vec<(u64, String, String)> = store
        .callbacks_of(id)
        .await
        .unwrap()
        .into_iter()
        .map(|(s, t, body)| (s, t, String::from_utf8(body).unwrap()))
        .collect();
    let tracking = h.tracking_number.clone().unwrap_or_default();
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?}\n{timeline:#?}\n{callbacks:#?}\n{outcomes:#?}",
        h.status, h.postage_vnd, h.cod_settled, h.sla_due_at, h.updated_at, h.reason
    )
    .replace(id.as_str(), "<id>")
    .replace(&h.request_id, "<request>")
    .replace(&tracking, "<tracking>")
}

async fn a_batch_of_carrier_events_records_what_they_record_one_by_one(store: SharedStore) {
    let now = start();
    let batched = created(&store, "B-1", now).await;
    let single = created(&store, "B-2", now).await;
    let t = now + SignedDuration::from_mins(5);
    let at = t + SignedDuration::from_hours(1);
    let together = apply(&store, life_of(&batched, t), at).await;
    let mut alone = Vec::new();
    for e in life_of(&single, t) {
        alone.extend(apply(&store, vec![e], at).await);
    }
    assert_eq!(
        record_of(&store, &batched, &together).await,
        record_of(&store, &single, &alone).await
    );
    // The batch did what the walk asks: adopted, delivered, the COD
    // report held until delivery relayed after it, the other order's
    // cancel queued once.
    assert_eq!(status(&store, &batched).await, Status::Delivered);
    assert!(
        store
            .handoff(None, &batched)
            .await
            .unwrap()
            .unwrap()
            .cod_settled
    );
    assert_eq!(sequences(&store, &batched).await, vec![1, 2, 3, 4, 5, 6]);
    let cancels: Vec<bool> = together
        .iter()
        .filter_map(|o| match o {
            EventOutcome::DuplicateOrder { cancel_queued, .. } => Some(*cancel_queued),
            _ => None,
        })
        .collect();
    assert_eq!(cancels, vec![true, false]);
    let timeline = store.timeline(&batched).await.unwrap();
    let held = timeline
        .iter()
        .find(|e| e.carrier.as_ref().is_some_and(|c| c.code == 21))
        .expect("the COD report is on the timeline");
    assert_eq!(
        held.sequence,
        Some(6),
        "the held COD report names its callback"
    );
}

async fn callbacks_are_claimed_head_first_per_handoff_across_owners(store: SharedStore) {
    let now = start();
    let (id, tracking) = with_order(&store, "Q-1", now).await;
    apply(
        &store,
        vec![event(&tracking, 2, now + SignedDuration::from_mins(1))],
        now,
    )
    .await;
    assert_eq!(sequences(&store, &id).await, vec![1, 2]);
    let first = store.claim_callbacks("a", now, LEASE, 10).await.unwrap();
    assert_eq!(
        first.iter().map(|c| c.sequence).collect::<Vec<_>>(),
        vec![1],
        "only the head of the handoff's queue"
    );
    assert!(
        store
            .claim_callbacks("b", now, LEASE, 10)
            .await
            .unwrap()
            .is_empty(),
        "the second callback waits for the first, whoever asks"
    );
    assert!(
        store
            .finish_callback(&first[0], "a", now, CallbackOutcome::Delivered)
            .await
            .unwrap()
    );
    let second = store.claim_callbacks("b", now, LEASE, 10).await.unwrap();
    assert_eq!(
        second.iter().map(|c| c.sequence).collect::<Vec<_>>(),
        vec![2]
    );
    assert!(
        !store
            .finish_callback(&second[0], "a", now, CallbackOutcome::Delivered)
            .await
            .unwrap(),
        "only the lease holder may finish it"
    );
}

async fn concurrent_callback_outcomes_are_each_recorded_once(store: SharedStore) {
    let now = start();
    let mut handoffs = Vec::new();
    for n in 0..8 {
        handoffs.push(with_order(&store, &format!("G-{n}"), now).await);
    }
    let heads = store.claim_callbacks("a", now, LEASE, 50).await.unwrap();
    assert_eq!(heads.len(), 8, "each handoff's order_created callback");
    // Every outcome at once, the first one reported twice, and the second
    // reported by an owner that does not hold its lease.
    let mut reports = Vec::new();
    for (i, job) in heads.iter().enumerate() {
        let owner = if i == 1 { "b" } else { "a" };
        reports.push(store.finish_callback(job, owner, now, CallbackOutcome::Delivered));
    }
    reports.push(store.finish_callback(&heads[0], "a", now, CallbackOutcome::Delivered));
    let held = at_once(reports).await;
    let first_twice = [held[0], held[8]];
    assert_eq!(
        first_twice.iter().filter(|h| **h).count(),
        1,
        "an outcome reported twice is recorded once: {held:?}"
    );
    assert!(!held[1], "another owner's lease records nothing");
    assert!(held[2..8].iter().all(|h| *h), "{held:?}");
    // The refused one is still pending under a's lease; the rest are done.
    for (i, job) in heads.iter().enumerate() {
        let record = store.callback(&job.id).await.unwrap().unwrap();
        let want = if i == 1 {
            CallbackState::Pending
        } else {
            CallbackState::Delivered
        };
        assert_eq!(record.state, want, "callback {i}");
        assert_eq!(record.attempts, u32::from(i != 1), "callback {i}");
    }
    assert_eq!(handoffs.len(), 8);
}

async fn a_dead_callback_holds_the_queue_until_replayed(store: SharedStore) {
    let now = start();
    let (id, tracking) = with_order(&store, "D-1", now).await;
    apply(
        &store,
        vec![event(&tracking, 2, now + SignedDuration::from_mins(1))],
        now,
    )
    .await;
    let head = store
        .claim_callbacks("a", now, LEASE, 10)
        .await
        .unwrap()
        .remove(0);
    let dead = CallbackOutcome::Dead {
        status: Some(500),
        error: "HTTP 500".into(),
    };
    assert!(store.finish_callback(&head, "a", now, dead).await.unwrap());
    let later = now + SignedDuration::from_hours(1);
    assert!(
        store
            .claim_callbacks("a", later, LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let held = store
        .list_callbacks(CallbackState::Held, 10, None)
        .await
        .unwrap();
    assert_eq!(held.items.len(), 1);
    assert_eq!(held.items[0].handoff_id, id);
    match store
        .replay_callback(&head.id, "operator", later)
        .await
        .unwrap()
    {
        CallbackReplay::Replayed(c) => assert_eq!(c.state, CallbackState::Pending),
        other => panic!("{other:?}"),
    }
    let again = store.claim_callbacks("b", later, LEASE, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, head.id, "the same webhook-id comes back");
    assert_eq!(again[0].body, head.body, "with the same body");
}

async fn a_cancel_before_any_call_cancels_at_once(store: SharedStore) {
    let now = start();
    let id = created(&store, "X-1", now).await;
    match store
        .request_cancel(CLIENT, &id, BodyFormat::Json, now)
        .await
        .unwrap()
    {
        CancelRequest::Accepted(h) => assert_eq!(h.status, Status::Cancelled),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.count_pending_postal_jobs().await.unwrap(), 0);
    assert_eq!(sequences(&store, &id).await, vec![1]);
    assert_eq!(
        store
            .request_cancel("other", &id, BodyFormat::Json, now)
            .await
            .unwrap(),
        CancelRequest::NotFound
    );
}

async fn an_event_for_an_unknown_order_changes_nothing(store: SharedStore) {
    let now = start();
    let outcomes = apply(&store, vec![event("EB000000000VN", 2, now)], now).await;
    assert_eq!(outcomes, vec![EventOutcome::UnknownOrder]);
    assert_eq!(store.count_handoffs().await.unwrap(), 0);
}

/// The handoff id (`saleOrderCode`, when it is one) wins over the item
/// code, which wins over the `originalID`; an event naming only the
/// `originalID` (an order without an item code) still finds its handoff.
async fn a_carrier_event_is_matched_by_the_key_it_trusts_most(store: SharedStore) {
    let now = start();
    let (first, first_tracking) = with_order(&store, "K-1", now).await;
    let (second, _) = with_order(&store, "K-2", now).await;
    let at = now + SignedDuration::from_mins(10);
    let named =
        |sale_order_code: Option<String>, tracking: Option<&str>, original: Option<String>| {
            let mut e = event("unused", 2, at);
            e.sale_order_code = sale_order_code;
            e.tracking_number = tracking.map(str::to_owned);
            e.original_id = original;
            e
        };
    let cases = [
        // Our id names the second handoff; the item code, the first.
        (
            named(Some(second.to_string()), Some(&first_tracking), None),
            Some(&second),
        ),
        // Not one of our ids: the item code decides.
        (
            named(Some("not-an-id".into()), Some(&first_tracking), None),
            Some(&first),
        ),
        // The item code wins over the originalID.
        (
            named(
                None,
                Some(&first_tracking),
                Some(order_for(&second).original_id),
            ),
            Some(&first),
        ),
        // The originalID alone.
        (
            named(None, None, Some(order_for(&second).original_id)),
            Some(&second),
        ),
        // Nothing that names a handoff.
        (named(None, None, None), None),
    ];
    for (event, expected) in cases {
        let label = format!(
            "{:?}",
            (
                &event.sale_order_code,
                &event.tracking_number,
                &event.original_id
            )
        );
        let outcome = apply(&store, vec![event], at).await.remove(0);
        let matched = match &outcome {
            // A duplicate is matched too: the key found the handoff, whose
            // own order is another.
            EventOutcome::Recorded { handoff_id, .. }
            | EventOutcome::DuplicateOrder { handoff_id, .. } => Some(handoff_id),
            EventOutcome::UnknownOrder => None,
        };
        assert_eq!(matched, expected, "{label}");
    }
}

async fn a_breach_is_recorded_once(store: SharedStore) {
    let now = start();
    let (id, tracking) = with_order(&store, "S-1", now).await;
    apply(
        &store,
        vec![event(&tracking, 6, now + SignedDuration::from_mins(5))],
        now,
    )
    .await;
    let due = store
        .handoff(None, &id)
        .await
        .unwrap()
        .unwrap()
        .sla_due_at
        .expect("the legal time is set at pickup");
    let late = due + SignedDuration::from_hours(1);
    assert_eq!(store.record_sla_breaches(late).await.unwrap().len(), 1);
    assert!(store.record_sla_breaches(late).await.unwrap().is_empty());
}

async fn the_purge_clears_old_terminal_handoffs_once(store: SharedStore) {
    let now = start();
    let id = created(&store, "P-1", now).await;
    created(&store, "P-2", now).await;
    store
        .request_cancel(CLIENT, &id, BodyFormat::Json, now)
        .await
        .unwrap();
    let later = now + SignedDuration::from_hours(1);
    assert_eq!(store.purge_personal_data(later, later).await.unwrap(), 1);
    assert_eq!(store.purge_personal_data(later, later).await.unwrap(), 0);
    // The open handoff keeps what its order needs.
    let job = claim_one(&store, "a", later).await;
    assert!(job.request.is_some());
}

async fn concurrent_webhooks_keep_every_sequence_contiguous(store: SharedStore) {
    let now = start();
    let mut handoffs = Vec::new();
    for i in 0..12 {
        handoffs.push(with_order(&store, &format!("W-{i}"), now).await);
    }
    let walk = [2_i64, 6, 10, 12, 14];
    let handoffs = Arc::new(handoffs);
    // Four senders post the same walks in different orders and batches, at
    // the same time: every status must be relayed once, in sequence.
    let senders: Vec<_> = (0..4_u64)
        .map(|sender| {
            let store = store.clone();
            let handoffs = handoffs.clone();
            tokio::spawn(async move {
                let mut events = Vec::new();
                for (_, tracking) in handoffs.iter() {
                    for (step, code) in walk.iter().enumerate() {
                        let at = now + SignedDuration::from_mins(10 * (step as i64 + 1));
                        events.push(event(tracking, *code, at));
                    }
                }
                let n = events.len();
                for i in 0..n {
                    events.swap(i, (i * 7 + sender as usize * 5) % n);
                }
                for batch in events.chunks(1 + sender as usize * 3) {
                    store
                        .apply_carrier_events(batch.to_vec(), &EventContext::default(), now)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for s in senders {
        s.await.unwrap();
    }
    for (id, _) in handoffs.iter() {
        assert_eq!(status(&store, id).await, Status::Delivered);
        let seqs = sequences(&store, id).await;
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "contiguous sequences for {id}");
    }
}

// ---------------------------------------------------------------- operators

async fn a_failed_handoff_replayed_by_an_operator_begins_with_a_lookup(store: SharedStore) {
    let now = start();
    let id = created(&store, "F-1", now).await;
    let job = claim_one(&store, "a", now).await;
    let fail = PostalOutcome::Fail {
        reason: "retry deadline passed".into(),
        format: BodyFormat::Json,
    };
    assert!(store.finish_postal_job(&job, "a", now, fail).await.unwrap());
    assert_eq!(status(&store, &id).await, Status::Failed);
    let formats = Default::default();
    match store
        .replay_failed_handoff(&id, "operator", now, &formats)
        .await
        .unwrap()
    {
        AdminOutcome::Done(h) => assert_eq!(h.status, Status::Received),
        other => panic!("{other:?}"),
    }
    let again = claim_one(&store, "b", now).await;
    assert_eq!(
        again.step,
        CreateStep::Lookup,
        "an earlier attempt may have made the order"
    );
    assert_eq!(again.attempts, 0, "a fresh retry budget");
    assert_eq!(sequences(&store, &id).await, vec![1, 2]);
    assert!(matches!(
        store
            .replay_failed_handoff(&id, "operator", now, &formats)
            .await
            .unwrap(),
        AdminOutcome::Conflict(_)
    ));
}

async fn a_partial_delivery_is_resolved_once_and_relayed(store: SharedStore) {
    let now = start();
    let (id, tracking) = with_order(&store, "PD-1", now).await;
    apply(
        &store,
        vec![event(&tracking, 20, now + SignedDuration::from_mins(1))],
        now,
    )
    .await;
    assert_eq!(status(&store, &id).await, Status::PartiallyDelivered);
    let formats = Default::default();
    let resolved = store
        .resolve_partial(
            &id,
            Resolution::Delivered,
            Some("the rest came later"),
            "operator",
            now,
            &formats,
        )
        .await
        .unwrap();
    assert!(
        matches!(&resolved, AdminOutcome::Done(h) if h.status == Status::Delivered),
        "{resolved:?}"
    );
    assert_eq!(sequences(&store, &id).await, vec![1, 2, 3]);
    let timeline = store.timeline(&id).await.unwrap();
    assert_eq!(
        timeline.last().unwrap().operator.as_deref(),
        Some("operator")
    );
    assert!(matches!(
        store
            .resolve_partial(&id, Resolution::Returned, None, "operator", now, &formats)
            .await
            .unwrap(),
        AdminOutcome::Conflict(_)
    ));
}

async fn an_erasure_clears_personal_data_once(store: SharedStore) {
    let now = start();
    let id = created(&store, "ER-1", now).await;
    for _ in 0..2 {
        assert!(matches!(
            store
                .erase_personal_data(&id, "operator", now)
                .await
                .unwrap(),
            AdminOutcome::Done(_)
        ));
    }
    let erased = store
        .timeline(&id)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.reason.as_deref() == Some("personal data erased"))
        .count();
    assert_eq!(erased, 1, "recorded once");
    let job = claim_one(&store, "a", now).await;
    assert!(
        job.request.is_none(),
        "nothing personal is left to dispatch"
    );
    assert!(matches!(
        store
            .erase_personal_data(&HandoffId::new(1, 1), "operator", now)
            .await
            .unwrap(),
        AdminOutcome::NotFound
    ));
}

/// A refusal text as Vietnam Post may write it: it names the citizen.
const REFUSAL: &str = "Người nhận Trần Thị Bí Mật (số 12 ngõ 34) từ chối";

/// Creates a handoff whose create job Vietnam Post refuses with [`REFUSAL`].
async fn refused(
    store: &SharedStore,
    request_id: &str,
    format: BodyFormat,
    now: Timestamp,
) -> HandoffId {
    let id = created(store, request_id, now).await;
    let job = claim_one(store, request_id, now).await;
    assert_eq!(job.handoff.id, id);
    assert!(
        store
            .start_postal_attempt(&job, request_id, now, Duration::ZERO)
            .await
            .unwrap()
    );
    let outcome = PostalOutcome::Reject {
        reason: REFUSAL.into(),
        format,
    };
    assert!(
        store
            .finish_postal_job(&job, request_id, now, outcome)
            .await
            .unwrap()
    );
    id
}

/// Where a refusal text may be kept for a handoff: its reason, its
/// timeline's reasons and its callback bodies.
async fn refusal_copies(store: &SharedStore, id: &HandoffId) -> Vec<String> {
    let mut found = Vec::new();
    let handoff = store.handoff(None, id).await.unwrap().unwrap();
    if handoff
        .reason
        .as_deref()
        .is_some_and(|r| r.contains(REFUSAL))
    {
        found.push("handoffs.reason".to_owned());
    }
    for entry in store.timeline(id).await.unwrap() {
        if entry.reason.as_deref().is_some_and(|r| r.contains(REFUSAL)) {
            found.push(format!("timeline.reason ({:?})", entry.effect));
        }
    }
    for (sequence, _, body) in store.callbacks_of(id).await.unwrap() {
        if String::from_utf8_lossy(&body).contains(REFUSAL) {
            found.push(format!("callback {sequence}'s body"));
        }
    }
    found
}

async fn a_purge_and_an_erasure_clear_vietnam_posts_refusal_texts(store: SharedStore) {
    let now = start();
    let purged = refused(&store, "RF-1", BodyFormat::Json, now).await;
    let erased = refused(&store, "RF-2", BodyFormat::Xml, now).await;
    for id in [&purged, &erased] {
        assert_eq!(status(&store, id).await, Status::Rejected);
        let copies = refusal_copies(&store, id).await;
        assert!(
            copies.contains(&"handoffs.reason".to_owned())
                && copies.iter().any(|c| c.starts_with("callback")),
            "the refusal is stored before (else this test proves nothing): {copies:?}"
        );
    }
    assert!(matches!(
        store
            .erase_personal_data(&erased, "operator", now)
            .await
            .unwrap(),
        AdminOutcome::Done(_)
    ));
    assert_eq!(refusal_copies(&store, &erased).await, Vec::<String>::new());
    assert!(
        !refusal_copies(&store, &purged).await.is_empty(),
        "an erasure touches its own handoff only"
    );
    let later = now + SignedDuration::from_hours(1);
    assert_eq!(store.purge_personal_data(later, later).await.unwrap(), 1);
    assert_eq!(refusal_copies(&store, &purged).await, Vec::<String>::new());
    for id in [&purged, &erased] {
        let handoff = store.handoff(None, id).await.unwrap().unwrap();
        assert_eq!(
            handoff.status,
            Status::Rejected,
            "the outcome stays for statistics"
        );
        assert_eq!(
            handoff.reason.as_deref(),
            Some(bcci_gateway::domain::callback::PURGED_TEXT)
        );
        for (_, _, body) in store.callbacks_of(id).await.unwrap() {
            let body = String::from_utf8(body).unwrap();
            assert!(
                body.contains("\"status\":\"rejected\"")
                    || body.contains("<status>rejected</status>"),
                "{body}"
            );
        }
    }
    let erasure_noted = store
        .timeline(&erased)
        .await
        .unwrap()
        .iter()
        .any(|e| e.reason.as_deref() == Some("personal data erased"));
    assert!(erasure_noted, "the operator's note stays");
}

async fn an_erasure_clears_a_refusal_still_awaiting_its_confirming_lookup(store: SharedStore) {
    let now = start();
    let id = created(&store, "RF-3", now).await;
    let job = claim_one(&store, "a", now).await;
    assert!(
        store
            .start_postal_attempt(&job, "a", now, Duration::ZERO)
            .await
            .unwrap()
    );
    // Refused after an ambiguous attempt: the refusal waits for a lookup.
    let waiting = PostalOutcome::Reschedule {
        step: CreateStep::LookupThenReject,
        at: now,
        refusal: Some(REFUSAL.into()),
        last_error: Some("refused after an ambiguous attempt".into()),
    };
    assert!(
        store
            .finish_postal_job(&job, "a", now, waiting)
            .await
            .unwrap()
    );
    let later = now + SignedDuration::from_secs(1);
    assert_eq!(
        claim_one(&store, "b", later).await.refusal.as_deref(),
        Some(REFUSAL),
        "the refusal is kept before (else this test proves nothing)"
    );
    assert!(matches!(
        store
            .erase_personal_data(&id, "operator", later)
            .await
            .unwrap(),
        AdminOutcome::Done(_)
    ));
    // Given back (leases run on the database's clock on PostgreSQL).
    store.release_leases(&["b"]).await.unwrap();
    let job = claim_one(&store, "c", later).await;
    assert_eq!(job.step, CreateStep::LookupThenReject);
    assert_eq!(job.refusal, None, "an erased handoff keeps no refusal text");
    assert!(job.request.is_none());
}

async fn retention_runs_from_the_later_of_the_terminal_time_and_the_sla_due_date(
    store: SharedStore,
) {
    let now = start();
    let (id, tracking) = with_order(&store, "RT-1", now).await;
    let picked_up = now + SignedDuration::from_mins(5);
    let delivered = now + SignedDuration::from_mins(50);
    apply(&store, vec![event(&tracking, 6, picked_up)], picked_up).await;
    apply(&store, vec![event(&tracking, 14, delivered)], delivered).await;
    let handoff = store.handoff(None, &id).await.unwrap().unwrap();
    assert_eq!(handoff.status, Status::Delivered);
    let due = handoff.sla_due_at.expect("the legal time is set at pickup");
    assert!(
        due > delivered + SignedDuration::from_hours(1),
        "delivered early"
    );
    // Terminal for long enough, but the complaint period runs from the due date.
    let cutoff = delivered + SignedDuration::from_hours(1);
    assert_eq!(store.purge_personal_data(cutoff, cutoff).await.unwrap(), 0);
    let cutoff = due + SignedDuration::from_secs(1);
    assert_eq!(store.purge_personal_data(cutoff, cutoff).await.unwrap(), 1);
}

async fn statistics_count_the_handoffs_of_the_days_asked(store: SharedStore) {
    let day = start();
    created(&store, "ST-1", day).await;
    created(&store, "ST-2", day).await;
    created(&store, "ST-3", day + SignedDuration::from_hours(72)).await;
    let date = day
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(7)))
        .date();
    let rows = store.stats(date, date).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.created).sum::<u64>(), 2);
    let rows = store
        .stats(date, date + jiff::Span::new().days(3))
        .await
        .unwrap();
    assert_eq!(rows.iter().map(|r| r.created).sum::<u64>(), 3);
}

/// A request whose write fails inside an intake group fails alone: the
/// others of its group are stored and answered. The failure is injected with
/// a trigger, the one place this suite speaks SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_request_failing_in_an_intake_group_fails_alone() {
    a_request_failing_in_an_intake_group_fails_alone(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_request_failing_in_an_intake_group_fails_alone() {
    a_request_failing_in_an_intake_group_fails_alone(Backend::Postgres).await;
}

async fn a_request_failing_in_an_intake_group_fails_alone(backend: Backend) {
    let Some(place) = TestStore::new(backend).await else {
        return;
    };
    let store = open(&place).await;
    // The doomed request's handoff row goes in; its postal job cannot.
    match backend {
        Backend::Sqlite => {
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&place.url)
                .await
                .unwrap();
            sqlx::raw_sql(
                "CREATE TRIGGER doomed BEFORE INSERT ON postal_jobs \
                 WHEN NEW.handoff_id IN (SELECT id FROM handoffs WHERE request_id = 'DOOMED') \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
            )
            .execute(&mut conn)
            .await
            .unwrap();
        }
        Backend::Postgres => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&place.url)
                .await
                .unwrap();
            sqlx::raw_sql(
                "CREATE FUNCTION doomed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                   IF NEW.handoff_id IN (SELECT id FROM handoffs WHERE request_id = 'DOOMED') THEN \
                     RAISE EXCEPTION 'injected failure'; \
                   END IF; RETURN NEW; END $$; \
                 CREATE TRIGGER doomed BEFORE INSERT ON postal_jobs \
                   FOR EACH ROW EXECUTE FUNCTION doomed();",
            )
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
    // Sent together, so that they share groups.
    let names: Vec<String> = (0..32)
        .map(|i| {
            if i == 13 {
                "DOOMED".to_owned()
            } else {
                format!("R-{i}")
            }
        })
        .collect();
    let answers = futures_util::future::join_all(
        names
            .iter()
            .map(|n| store.create_handoff(new_handoff(request(n), start()))),
    )
    .await;
    for (name, answer) in names.iter().zip(&answers) {
        if name == "DOOMED" {
            assert!(answer.is_err(), "{answer:?}");
        } else {
            assert!(
                matches!(answer, Ok(CreateOutcome::Created(h)) if &h.request_id == name),
                "{name}: {answer:?}"
            );
        }
    }
    assert_eq!(
        store.count_handoffs().await.unwrap(),
        31,
        "nothing of the doomed one"
    );
    assert_eq!(store.count_pending_postal_jobs().await.unwrap(), 31);
    store.close().await;
    drop(place);
}
