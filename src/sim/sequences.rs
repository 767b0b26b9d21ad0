//! Vietnam Post's status codes (vnpost-api.md "Status codes") and the walks
//! an order takes through them.

use crate::domain::Status;

/// A walk through status codes, from creation to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequence {
    pub name: &'static str,
    /// The codes in order; the first (1, created) is reported at creation.
    pub codes: &'static [i64],
    /// The handoff status the gateway should end in after the whole walk.
    pub final_status: Status,
}

/// Every walk the simulator knows, by name.
pub const SEQUENCES: &[Sequence] = &[
    Sequence {
        name: "delivered",
        codes: &[1, 2, 4, 6, 10, 11, 12, 14],
        final_status: Status::Delivered,
    },
    Sequence {
        name: "pickup_retry",
        codes: &[1, 2, 4, 5, 4, 6, 10, 12, 14],
        final_status: Status::Delivered,
    },
    Sequence {
        name: "pickup_failed",
        codes: &[1, 2, 4, 5, 8],
        final_status: Status::PickupFailed,
    },
    Sequence {
        name: "return_to_sender",
        codes: &[1, 2, 4, 6, 10, 12, 15, 12, 15, 16, 17, 18, 19],
        final_status: Status::Returned,
    },
    Sequence {
        name: "partial",
        codes: &[1, 2, 4, 6, 10, 12, 20],
        final_status: Status::PartiallyDelivered,
    },
    // Code 21 (COD paid) is an annotation: the status stays delivered.
    Sequence {
        name: "cod",
        codes: &[1, 2, 4, 6, 10, 11, 12, 14, 21],
        final_status: Status::Delivered,
    },
    Sequence {
        name: "cancelled_by_carrier",
        codes: &[1, 2, 22],
        final_status: Status::Cancelled,
    },
];

/// The walk a delivered order with a cash-on-delivery amount takes instead.
pub(crate) const COD_SEQUENCE: &str = "cod";

/// Marks an order (in `contentNote` or `saleOrderCode`) whose cancellation
/// needs Vietnam Post's approval.
pub(crate) const APPROVAL_MARKER: &str = "[sim:cancel_approval]";

/// The names of every walk.
pub fn sequence_names() -> Vec<&'static str> {
    SEQUENCES.iter().map(|s| s.name).collect()
}

/// The walk named `name`.
pub fn sequence(name: &str) -> Option<&'static Sequence> {
    SEQUENCES.iter().find(|s| s.name == name)
}

/// The handoff status (contract spelling) a walk should end in.
///
/// # Panics
/// When `name` is not one of [`sequence_names`].
pub fn expected_final_status(name: &str) -> &'static str {
    match sequence(name) {
        Some(s) => s.final_status.as_str(),
        None => panic!("no simulated status walk is named {name:?}"),
    }
}

/// The walk a `[sim:<name>]` marker in `text` asks for.
pub(crate) fn marked(text: &str) -> Option<&'static Sequence> {
    SEQUENCES
        .iter()
        .find(|s| text.contains(&format!("[sim:{}]", s.name)))
}

/// Vietnam Post's name of a status code.
pub fn status_name(code: i64) -> &'static str {
    match code {
        0 => "Lưu nháp",
        1 => "Tạo mới",
        2 => "Đã phân công bưu tá",
        3 => "Đang xử lý",
        4 => "Đang lấy hàng",
        5 => "Lấy hàng không thành công",
        6 => "Đã lấy hàng",
        7 => "Đã nhận tại bưu cục",
        8 => "Lấy hàng thất bại",
        9 => "Hủy lấy hàng",
        10 => "Đang vận chuyển",
        11 => "Đã đến bưu cục phát",
        12 => "Đang phát hàng",
        13 => "Chuyển tiếp",
        14 => "Phát thành công",
        15 => "Phát không thành công",
        16 => "Chờ duyệt chuyển hoàn",
        17 => "Đã duyệt chuyển hoàn",
        18 => "Đang chuyển hoàn",
        19 => "Đã chuyển hoàn",
        20 => "Phát một phần",
        21 => "Đã thanh toán COD",
        22 => "Hủy phát",
        _ => "Không xác định",
    }
}

/// Where a status is reported from (post offices, never a person's address).
pub(crate) fn location(code: i64) -> &'static str {
    match code {
        0..=9 => "Bưu cục giao dịch Côn Đảo",
        10 | 11 | 13 => "Trung tâm khai thác chia chọn Hồ Chí Minh",
        16..=19 => "Bưu cục chuyển hoàn Côn Đảo",
        _ => "Bưu cục phát Côn Đảo",
    }
}

/// Whether an order at `code` may still be cancelled: not yet picked up and
/// not already ended.
pub(crate) fn cancellable(code: i64) -> bool {
    (1..6).contains(&code)
}
