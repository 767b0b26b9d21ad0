//! Which of Vietnam Post's orders a handoff owns (domain.md, exactly one
//! postal order per handoff). Every order whose `saleOrderCode` is a
//! handoff's id was made for that handoff; at most one of them is its own.

use super::handoff::Status;

/// How an order is known: either id may be missing (a fresh order may have
/// no item code yet; a poll record carries no originalID).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderIds<'a> {
    /// `originalID`: what a cancel names.
    pub original_id: Option<&'a str>,
    /// `itemCode`: the tracking number.
    pub tracking_number: Option<&'a str>,
}

impl OrderIds<'_> {
    fn is_known(&self) -> bool {
        self.original_id.is_some() || self.tracking_number.is_some()
    }

    /// Whether both name the same order. When neither id can be compared
    /// (one side knows only the originalID, the other only the item code)
    /// they are taken as the same: nothing could cancel the other anyway.
    fn same_as(&self, other: &OrderIds<'_>) -> bool {
        match (self.original_id, other.original_id) {
            (Some(a), Some(b)) => a == b,
            _ => match (self.tracking_number, other.tracking_number) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            },
        }
    }
}

/// What to do with an order made for a handoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderFate {
    /// The handoff has no order and may still take one: adopt this one.
    Adopt,
    /// The handoff's own order.
    Own,
    /// The handoff owns another order: this one is a duplicate, to cancel
    /// and count in `bcci_duplicate_orders_total`.
    Duplicate,
    /// The handoff has no order and may no longer take one (it was
    /// cancelled, rejected or otherwise ended): nobody owns this order, so it
    /// is cancelled. It is the handoff's only order, not a duplicate.
    Unowned,
}

impl OrderFate {
    /// Whether the order must be cancelled at Vietnam Post.
    pub fn cancels(self) -> bool {
        matches!(self, OrderFate::Duplicate | OrderFate::Unowned)
    }
}

/// Statuses in which a handoff may still adopt its postal order.
pub const AWAITING_ORDER: &[Status] = &[Status::Received, Status::Failed];

/// Decides what an order reported for a handoff (by a create answer, a
/// lookup, a webhook or a poll) is to it.
pub fn fate(status: Status, own: OrderIds<'_>, reported: OrderIds<'_>) -> OrderFate {
    if own.is_known() {
        if own.same_as(&reported) {
            OrderFate::Own
        } else {
            OrderFate::Duplicate
        }
    } else if AWAITING_ORDER.contains(&status) {
        OrderFate::Adopt
    } else {
        OrderFate::Unowned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids<'a>(original: Option<&'a str>, tracking: Option<&'a str>) -> OrderIds<'a> {
        OrderIds {
            original_id: original,
            tracking_number: tracking,
        }
    }

    #[test]
    fn a_handoff_without_an_order_adopts_one_while_it_waits_for_it() {
        let reported = ids(Some("O1"), Some("EB1VN"));
        for status in [Status::Received, Status::Failed] {
            assert_eq!(fate(status, ids(None, None), reported), OrderFate::Adopt);
        }
    }

    #[test]
    fn an_order_for_a_handoff_that_can_no_longer_take_one_is_cancelled_but_not_a_duplicate() {
        let reported = ids(Some("O1"), Some("EB1VN"));
        for status in [Status::Cancelled, Status::Rejected] {
            let f = fate(status, ids(None, None), reported);
            assert_eq!(f, OrderFate::Unowned);
            assert!(f.cancels());
        }
    }

    #[test]
    fn another_order_than_the_handoffs_own_is_a_duplicate() {
        let own = ids(Some("O1"), Some("EB1VN"));
        // By originalID, whatever the item codes say.
        assert_eq!(
            fate(Status::PickingUp, own, ids(Some("O2"), None)),
            OrderFate::Duplicate
        );
        // By item code when a record carries no originalID (a poll).
        assert_eq!(
            fate(Status::OrderCreated, own, ids(None, Some("EB2VN"))),
            OrderFate::Duplicate
        );
        // A duplicate stays one once the handoff has ended.
        assert_eq!(
            fate(Status::Cancelled, own, ids(Some("O2"), Some("EB2VN"))),
            OrderFate::Duplicate
        );
    }

    #[test]
    fn the_handoffs_own_order_is_recognised_by_either_id() {
        let own = ids(Some("O1"), None);
        // An order created without an item code, later reported with one.
        assert_eq!(
            fate(Status::OrderCreated, own, ids(Some("O1"), Some("EB1VN"))),
            OrderFate::Own
        );
        assert_eq!(
            fate(
                Status::Delivered,
                ids(None, Some("EB1VN")),
                ids(None, Some("EB1VN"))
            ),
            OrderFate::Own
        );
        // Nothing to compare: taken as the same order.
        assert_eq!(
            fate(Status::OrderCreated, own, ids(None, Some("EB1VN"))),
            OrderFate::Own
        );
        assert!(!OrderFate::Own.cancels() && !OrderFate::Adopt.cancels());
    }
}
