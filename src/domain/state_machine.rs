//! The handoff state machine (domain.md, Events and the state machine): a
//! pure function of the handoff's state, what it has seen, and one carrier
//! event.

use jiff::{SignedDuration, Timestamp};

use super::handoff::{Effect, Source, Status};

/// Vietnam Post's status codes (vnpost-api.md, Status codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarrierCode {
    /// Maps to a handoff status.
    Status(Status),
    /// Code 22: `cancelled` before pickup, `returning` after.
    DeliveryCancelled,
    /// Code 21: COD paid, an annotation.
    CodPaid,
    /// Code 0: a draft; no status.
    Draft,
    Unknown,
}

impl CarrierCode {
    pub fn from_code(code: i64) -> Self {
        use Status::*;
        match code {
            0 => CarrierCode::Draft,
            1 => CarrierCode::Status(OrderCreated),
            2..=4 => CarrierCode::Status(PickingUp),
            5 => CarrierCode::Status(PickupAttemptFailed),
            6 | 7 => CarrierCode::Status(PickedUp),
            8 => CarrierCode::Status(PickupFailed),
            9 => CarrierCode::Status(Cancelled),
            10 | 11 | 13 => CarrierCode::Status(InTransit),
            12 => CarrierCode::Status(OutForDelivery),
            14 => CarrierCode::Status(Delivered),
            15 => CarrierCode::Status(DeliveryAttemptFailed),
            16..=18 => CarrierCode::Status(Returning),
            19 => CarrierCode::Status(Returned),
            20 => CarrierCode::Status(PartiallyDelivered),
            21 => CarrierCode::CodPaid,
            22 => CarrierCode::DeliveryCancelled,
            _ => CarrierCode::Unknown,
        }
    }
}

/// What the machine needs to know about a handoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineState {
    pub status: Status,
    /// Time and rank of the newest carrier event that set the status.
    pub watermark: Option<(Timestamp, u8)>,
    /// The handoff reached `picked_up` at some point.
    pub picked_up: bool,
    pub cod_settled: bool,
    /// Code 21 arrived before `delivered`: relay it once delivered.
    pub cod_held: bool,
}

/// A carrier event seen before, for de-duplication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEvent {
    pub source: Source,
    pub code: i64,
    pub occurred_at: Timestamp,
}

/// One status report from Vietnam Post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierEvent {
    pub source: Source,
    pub code: i64,
    pub occurred_at: Timestamp,
}

/// A callback the verdict asks for, in order: what the relay will send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    StatusChanged { status: Status, previous: Status },
    CodSettled,
}

/// What one event does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub effect: Effect,
    /// The status the event maps to, shown on the timeline.
    pub mapped: Option<Status>,
    /// The handoff's state after the event.
    pub next: MachineState,
    /// Callbacks to queue, in this order.
    pub notices: Vec<Notice>,
}

/// Poll and webhook reports of one status closer than this are one event.
pub const POLL_WEBHOOK_WINDOW: SignedDuration = SignedDuration::from_secs(120);

fn is_duplicate(event: &CarrierEvent, seen: &[SeenEvent]) -> bool {
    seen.iter().any(|s| {
        s.code == event.code
            && (s.occurred_at == event.occurred_at
                || (s.source != event.source
                    && matches!(s.source, Source::Poll | Source::Webhook)
                    && s.occurred_at.duration_since(event.occurred_at).abs() < POLL_WEBHOOK_WINDOW))
    })
}

/// Applies one carrier event (rules 1–6 of domain.md).
pub fn apply(state: &MachineState, seen: &[SeenEvent], event: &CarrierEvent) -> Verdict {
    let unchanged = |effect: Effect, mapped: Option<Status>| Verdict {
        effect,
        mapped,
        next: state.clone(),
        notices: Vec::new(),
    };
    if is_duplicate(event, seen) {
        let mapped = match CarrierCode::from_code(event.code) {
            CarrierCode::Status(s) => Some(s),
            _ => None,
        };
        return unchanged(Effect::Duplicate, mapped);
    }
    let mapped = match CarrierCode::from_code(event.code) {
        CarrierCode::Unknown => return unchanged(Effect::UnknownCode, None),
        CarrierCode::Draft => return unchanged(Effect::Annotation, None),
        CarrierCode::CodPaid => {
            let mut next = state.clone();
            let mut notices = Vec::new();
            if !state.cod_settled {
                if state.status == Status::Delivered {
                    next.cod_settled = true;
                    notices.push(Notice::CodSettled);
                } else {
                    next.cod_held = true;
                }
            }
            return Verdict {
                effect: Effect::Annotation,
                mapped: None,
                next,
                notices,
            };
        }
        CarrierCode::DeliveryCancelled if state.picked_up => Status::Returning,
        CarrierCode::DeliveryCancelled => Status::Cancelled,
        CarrierCode::Status(s) => s,
    };
    if state.status.is_terminal() {
        return unchanged(Effect::Absorbed, Some(mapped));
    }
    let rank = mapped.rank();
    if let Some((at, watermark_rank)) = state.watermark
        && (event.occurred_at < at || (event.occurred_at == at && rank <= watermark_rank))
    {
        return unchanged(Effect::Stale, Some(mapped));
    }
    let mut next = state.clone();
    next.watermark = Some((event.occurred_at, rank));
    let mut notices = Vec::new();
    if mapped != state.status {
        next.status = mapped;
        notices.push(Notice::StatusChanged {
            status: mapped,
            previous: state.status,
        });
        if mapped == Status::PickedUp {
            next.picked_up = true;
        }
        if mapped == Status::Delivered && state.cod_held && !state.cod_settled {
            next.cod_settled = true;
            next.cod_held = false;
            notices.push(Notice::CodSettled);
        }
    }
    Verdict {
        effect: Effect::Applied,
        mapped: Some(mapped),
        next,
        notices,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_764_000_000 + s).unwrap()
    }

    fn created() -> MachineState {
        MachineState {
            status: Status::OrderCreated,
            watermark: None,
            picked_up: false,
            cod_settled: false,
            cod_held: false,
        }
    }

    fn ev(code: i64, at: i64) -> CarrierEvent {
        CarrierEvent {
            source: Source::Webhook,
            code,
            occurred_at: t(at),
        }
    }

    fn seen(e: &CarrierEvent) -> SeenEvent {
        SeenEvent {
            source: e.source,
            code: e.code,
            occurred_at: e.occurred_at,
        }
    }

    #[test]
    fn an_older_event_is_stale_and_a_tie_goes_to_the_higher_rank() {
        let s = apply(&created(), &[], &ev(6, 10)).next;
        assert_eq!(s.status, Status::PickedUp);
        assert_eq!(apply(&s, &[], &ev(4, 9)).effect, Effect::Stale);
        assert_eq!(apply(&s, &[], &ev(4, 10)).effect, Effect::Stale);
        let v = apply(&s, &[], &ev(10, 10));
        assert_eq!(v.effect, Effect::Applied);
        assert_eq!(v.next.status, Status::InTransit);
    }

    #[test]
    fn terminal_statuses_absorb() {
        let s = apply(&created(), &[], &ev(14, 10)).next;
        let v = apply(&s, &[], &ev(15, 20));
        assert_eq!(v.effect, Effect::Absorbed);
        assert_eq!(v.next.status, Status::Delivered);
        assert!(v.notices.is_empty());
    }

    #[test]
    fn the_same_report_twice_and_poll_beside_webhook_are_duplicates() {
        let first = ev(12, 10);
        let s = apply(&created(), &[], &first).next;
        assert_eq!(apply(&s, &[seen(&first)], &first).effect, Effect::Duplicate);
        let poll = CarrierEvent {
            source: Source::Poll,
            code: 12,
            occurred_at: t(100),
        };
        assert_eq!(apply(&s, &[seen(&first)], &poll).effect, Effect::Duplicate);
        let far = CarrierEvent {
            occurred_at: t(200),
            ..poll
        };
        assert_ne!(apply(&s, &[seen(&first)], &far).effect, Effect::Duplicate);
    }

    #[test]
    fn a_repeated_status_after_another_is_relayed_but_not_twice_in_a_row() {
        let mut s = created();
        let mut relayed = Vec::new();
        for (code, at) in [(12, 1), (15, 2), (12, 3), (15, 4), (15, 5)] {
            let v = apply(&s, &[], &ev(code, at));
            relayed.extend(v.notices);
            s = v.next;
        }
        let statuses: Vec<Status> = relayed
            .iter()
            .map(|r| match r {
                Notice::StatusChanged { status, .. } => *status,
                Notice::CodSettled => panic!(),
            })
            .collect();
        use Status::*;
        assert_eq!(
            statuses,
            [
                OutForDelivery,
                DeliveryAttemptFailed,
                OutForDelivery,
                DeliveryAttemptFailed
            ]
        );
    }

    #[test]
    fn cod_paid_is_held_until_delivered_then_relayed_once() {
        let s = apply(&created(), &[], &ev(12, 1)).next;
        let v = apply(&s, &[], &ev(21, 2));
        assert_eq!(v.effect, Effect::Annotation);
        assert!(v.notices.is_empty());
        let v = apply(&v.next, &[], &ev(14, 3));
        assert_eq!(
            v.notices,
            [
                Notice::StatusChanged {
                    status: Status::Delivered,
                    previous: Status::OutForDelivery
                },
                Notice::CodSettled
            ]
        );
        let again = apply(&v.next, &[], &ev(21, 4));
        assert!(again.notices.is_empty());
        assert_eq!(again.next.status, Status::Delivered);
    }

    #[test]
    fn code_22_cancels_before_pickup_and_returns_after() {
        assert_eq!(
            apply(&created(), &[], &ev(22, 1)).next.status,
            Status::Cancelled
        );
        let s = apply(&created(), &[], &ev(6, 1)).next;
        assert_eq!(apply(&s, &[], &ev(22, 2)).next.status, Status::Returning);
    }

    #[test]
    fn unknown_codes_change_nothing() {
        let v = apply(&created(), &[], &ev(99, 1));
        assert_eq!(v.effect, Effect::UnknownCode);
        assert_eq!(v.next, created());
    }

    /// The realistic sequences Vietnam Post walks (vnpost-api.md).
    const SEQUENCES: &[&[i64]] = &[
        &[1, 2, 4, 6, 10, 11, 12, 14],
        &[1, 2, 4, 5, 4, 6, 10, 12, 14],
        &[1, 2, 4, 5, 8],
        &[1, 2, 4, 6, 10, 12, 15, 12, 15, 16, 17, 18, 19],
        &[1, 2, 4, 6, 10, 12, 20],
        &[1, 2, 4, 6, 10, 12, 14, 21],
        &[1, 2, 22],
    ];

    fn final_status(seq: &[i64]) -> Status {
        let mut s = created();
        for (i, code) in seq.iter().enumerate() {
            s = apply(&s, &[], &ev(*code, i as i64)).next;
        }
        s.status
    }

    proptest! {
        #[test]
        fn any_interleaving_duplication_and_batching_ends_in_the_last_status(
            which in 0..SEQUENCES.len(),
            order in Just(()).prop_flat_map(|_| prop::collection::vec(any::<u32>(), 0..40)),
            dups in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            poll_offsets in prop::collection::vec(-3i64..4, 0..5),
        ) {
            let seq = SEQUENCES[which];
            // Events 7 s apart, some duplicated, some reported again by the
            // poller with a time up to 3 s off (so the poller's history keeps
            // the sequence's order, as Vietnam Post's does), then shuffled.
            let mut events: Vec<CarrierEvent> = seq.iter().enumerate().map(|(i, c)| ev(*c, i as i64 * 7)).collect();
            for d in &dups {
                events.push(events[d.index(seq.len())].clone());
            }
            for (k, off) in poll_offsets.iter().enumerate() {
                let base = events[k % seq.len()].clone();
                events.push(CarrierEvent { source: Source::Poll, occurred_at: base.occurred_at + SignedDuration::from_secs(*off), ..base });
            }
            for (i, r) in order.iter().enumerate() {
                let n = events.len();
                events.swap(i % n, *r as usize % n);
            }
            let mut state = created();
            let mut seen_events: Vec<SeenEvent> = Vec::new();
            let mut relayed: Vec<(Status, Status, Timestamp)> = Vec::new();
            for e in &events {
                let v = apply(&state, &seen_events, e);
                for r in &v.notices {
                    if let Notice::StatusChanged { status, previous } = r {
                        relayed.push((*status, *previous, e.occurred_at));
                    }
                }
                seen_events.push(SeenEvent { source: e.source, code: e.code, occurred_at: e.occurred_at });
                state = v.next;
            }
            prop_assert_eq!(state.status, final_status(seq));
            for w in relayed.windows(2) {
                prop_assert!(w[0].2 <= w[1].2, "event times go back: {:?}", relayed);
                prop_assert_ne!(w[0].0, w[1].0, "a status relayed twice in a row");
                prop_assert_eq!(w[1].1, w[0].0, "previous_status is the last relayed");
            }
        }
    }
}
