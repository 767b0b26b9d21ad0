//! Vietnam Post's wire format as pure functions: request bodies, answer
//! parsing, and the classification of every answer into the carrier
//! vocabulary (vnpost-api.md, domain.md "Exactly one postal order per handoff").

use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use serde_json::{Map, Value, json};
use unicode_normalization::UnicodeNormalization;

use super::address_map::AddressMap;
use crate::carrier::{CallFailure, CancelAnswer, CarrierOrder, OrderRequest, TrackingEvent};
use crate::domain::Kind;
use crate::domain::request::Address;
use crate::domain::time::vietnam;

/// Longest carrier text kept as a refusal reason.
pub const MAX_MESSAGE_CHARS: usize = 500;
/// Records per GetListOrder page; a full page means another may follow.
pub const PAGE_SIZE: usize = 500;
/// The add-on that has the postal worker collect an amount on delivery.
pub const COD_ADDON: &str = "GTG021";

/// The calls the adapter makes, named as in `bcci_postal_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Token,
    Create,
    Lookup,
    Track,
    Cancel,
}

impl Op {
    /// The `operation` label.
    pub fn label(self) -> &'static str {
        match self {
            Op::Token => "token",
            Op::Create => "create",
            Op::Lookup => "lookup",
            Op::Track => "track",
            Op::Cancel => "cancel",
        }
    }

    /// Only a create can leave something behind when its outcome is unknown.
    fn creates(self) -> bool {
        self == Op::Create
    }
}

/// The deployment's settings that shape a CreateOrder body.
#[derive(Debug, Clone, Default)]
pub struct OrderProfile {
    pub contract_code: String,
    pub pickup_fee_addon: String,
    pub content_note_max_chars: usize,
    pub address_map: AddressMap,
}

/// One side of an order as Vietnam Post names it.
struct Party<'a> {
    name: &'a str,
    phone: &'a str,
    email: &'a str,
    address: &'a Address,
}

/// The CreateOrder body. Never carries `parcel.note` or an ID number. Fails
/// only when the order asks for fees at pickup and no add-on is configured.
pub fn create_order_body(order: &OrderRequest, profile: &OrderProfile) -> Result<Value, String> {
    let r = &order.request;
    let citizen = Party {
        name: &r.citizen.name,
        phone: r.citizen.phone.as_str(),
        email: r.citizen.email.as_deref().unwrap_or(""),
        address: &r.citizen.address,
    };
    let agency = Party {
        name: &r.agency.name,
        phone: r.agency.phone.as_str(),
        email: "",
        address: &r.agency.address,
    };
    let (sender, receiver) = match order.kind {
        Kind::Pickup => (citizen, agency),
        Kind::Return => (agency, citizen),
    };
    let map = &profile.address_map;
    Ok(json!({
        "orderCreationStatus": 1,
        "type": "GUI",
        "customerCode": order.customer_code,
        "contractCode": profile.contract_code,
        "informationOrder": {
            "senderName": sender.name,
            "senderPhone": sender.phone,
            "senderEmail": sender.email,
            "senderAddress": sender.address.line,
            "senderProvinceCode": map.translate(&sender.address.province_code),
            "senderDistrictCode": "VNPOST",
            "senderCommuneCode": map.translate(&sender.address.ward_code),
            "receiverName": receiver.name,
            "receiverPhone": receiver.phone,
            "receiverEmail": receiver.email,
            "receiverAddress": receiver.address.line,
            "receiverProvinceCode": map.translate(&receiver.address.province_code),
            "receiverDistrictCode": "VNPOST",
            "receiverCommuneCode": map.translate(&receiver.address.ward_code),
            "serviceCode": order.service_code,
            "addonService": addons(order, profile)?,
            "saleOrderCode": order.handoff_id.as_str(),
            "contentNote": content_note(&r.procedure.name, &r.dossier_code, profile.content_note_max_chars),
            "weight": r.parcel.weight_grams.to_string(),
            "sendType": "1",
            "isBroken": "0",
            "deliveryInstruction": "",
        }
    }))
}

fn addons(order: &OrderRequest, profile: &OrderProfile) -> Result<Vec<Value>, String> {
    let amount = order.request.cod_amount_vnd;
    if amount == 0 {
        return Ok(Vec::new());
    }
    let code = match order.kind {
        Kind::Return => COD_ADDON,
        Kind::Pickup => match profile.pickup_fee_addon.trim() {
            "" => {
                return Err(
                    "fees collected at pickup need postal.pickup_fee_addon, which is not set"
                        .into(),
                );
            }
            code => code,
        },
    };
    Ok(vec![
        json!({"code": code, "propValue": format!("PROP0018:{amount}")}),
    ])
}

/// `"<procedure name> - <dossier code>"` in at most `max_chars` characters:
/// the procedure name is shortened (marked with "…"), the dossier code is
/// always whole.
pub fn content_note(procedure: &str, dossier_code: &str, max_chars: usize) -> String {
    const SEP: &str = " - ";
    let full = format!("{procedure}{SEP}{dossier_code}");
    if full.chars().count() <= max_chars {
        return full;
    }
    let fixed = SEP.chars().count() + dossier_code.chars().count() + 1;
    let Some(room) = max_chars.checked_sub(fixed) else {
        return dossier_code.to_owned();
    };
    let cut: String = procedure.chars().take(room).collect();
    format!("{}…{SEP}{dossier_code}", cut.trim_end())
}

/// A day as GetListOrder's `lastUpdateFrom`/`lastUpdateTo` want it.
pub fn query_date(day: Date) -> String {
    day.strftime("%d-%m-%Y").to_string()
}

/// `postal.transient_errors`, folded for case-insensitive matching after NFC.
#[derive(Debug, Clone, Default)]
pub struct TransientPatterns(Vec<String>);

impl TransientPatterns {
    pub fn new(patterns: &[String]) -> Self {
        Self(
            patterns
                .iter()
                .map(|p| fold(p.trim()))
                .filter(|p| !p.is_empty())
                .collect(),
        )
    }

    /// The first pattern the message contains.
    pub fn matching(&self, message: &str) -> Option<&str> {
        let message = fold(message);
        self.0
            .iter()
            .find(|p| message.contains(p.as_str()))
            .map(String::as_str)
    }
}

fn fold(s: &str) -> String {
    s.nfc().collect::<String>().to_lowercase().nfc().collect()
}

/// An HTTP answer as read from the wire.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub status: u16,
    /// The parsed `Retry-After`, whatever the status.
    pub retry_after: Option<Duration>,
    pub body: &'a [u8],
}

/// How a request failed before an answer was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The connection failed: the request was never written.
    Connect,
    /// No complete answer within `postal.timeout_ms`.
    Timeout,
    /// Anything else (reset mid-answer, unreadable body): it may have arrived.
    Other,
}

/// Classifies a request that got no answer.
pub fn transport_failure(op: Op, kind: Transport, detail: &str) -> CallFailure {
    match kind {
        Transport::Connect => transient(op, false, format!("connection failed: {detail}"), None),
        Transport::Timeout => CallFailure::Transient {
            ambiguous: op.creates(),
            retry_after: None,
            detail: format!("no answer in time: {detail}"),
            outcome: "timeout",
        },
        Transport::Other => transient(op, true, format!("transport error: {detail}"), None),
    }
}

/// Classifies an answer: 2xx bodies go to `read` unless they say
/// `success: false`; other statuses per vnpost-api.md. A 401 or 403 seen here
/// is final (the caller has already logged in again).
pub fn classify<T>(
    op: Op,
    answer: &Answer<'_>,
    patterns: &TransientPatterns,
    read: impl FnOnce(&Value) -> Result<T, CallFailure>,
) -> Result<T, CallFailure> {
    let status = answer.status;
    match status {
        200..=299 => {
            let Ok(value) = serde_json::from_slice::<Value>(answer.body) else {
                return Err(transient(
                    op,
                    true,
                    format!("HTTP {status} with a body that is not JSON"),
                    None,
                ));
            };
            if let Some(message) = refusal(&value) {
                return Err(refuse(op, message, patterns));
            }
            read(&value)
        }
        400 => {
            let message = error_message(answer.body)
                .unwrap_or_else(|| "Vietnam Post answered HTTP 400 without a message".into());
            Err(refuse(op, message, patterns))
        }
        401 | 403 => Err(transient(
            op,
            false,
            format!("HTTP {status}: Vietnam Post refused the credentials"),
            None,
        )),
        408 | 429 => {
            let retry_after = answer.retry_after.filter(|_| status == 429);
            Err(transient(op, false, format!("HTTP {status}"), retry_after))
        }
        500..=599 => {
            let retry_after = answer.retry_after.filter(|_| status == 503);
            Err(transient(op, true, format!("HTTP {status}"), retry_after))
        }
        _ => Err(transient(
            op,
            true,
            format!("unexpected HTTP {status}"),
            None,
        )),
    }
}

/// A transient failure; ambiguous only for a create that may have reached
/// Vietnam Post.
fn transient(op: Op, reached: bool, detail: String, retry_after: Option<Duration>) -> CallFailure {
    let ambiguous = reached && op.creates();
    CallFailure::Transient {
        ambiguous,
        retry_after,
        detail,
        outcome: if ambiguous { "ambiguous" } else { "transient" },
    }
}

/// A refusal, unless the message is a known transient error. A refused login
/// is a credential fault, never a refusal of the handoff.
fn refuse(op: Op, message: String, patterns: &TransientPatterns) -> CallFailure {
    if op == Op::Token {
        return transient(op, false, "Vietnam Post refused the login".into(), None);
    }
    match patterns.matching(&message) {
        // The carrier's own words stay out of `detail`: they may echo personal data.
        Some(pattern) => transient(
            op,
            true,
            format!("Vietnam Post answered a transient error (matches {pattern:?})"),
            None,
        ),
        None => CallFailure::Refused { message },
    }
}

/// The message of a 2xx answer that says `success: false`.
fn refusal(value: &Value) -> Option<String> {
    let success = value.get("success")?;
    let failed = success == &Value::Bool(false) || success.as_str() == Some("false");
    failed.then(|| {
        value
            .as_object()
            .and_then(|o| text(o, &["errorMessage", "message", "Message"]))
            .map(|m| bounded(&m))
            .unwrap_or_else(|| "Vietnam Post answered success: false without a message".into())
    })
}

/// The message of an error answer: its JSON message field, else its text.
fn error_message(body: &[u8]) -> Option<String> {
    if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body)
        && let Some(m) = text(&o, &["errorMessage", "message", "Message", "error"])
    {
        return Some(bounded(&m));
    }
    let raw = String::from_utf8_lossy(body);
    let raw = raw.trim();
    (!raw.is_empty()).then(|| bounded(raw))
}

fn bounded(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= MAX_MESSAGE_CHARS {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (past dates give nothing).
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    Duration::try_from(at.duration_since(now)).ok()
}

/// The order record of a CreateOrder answer, bare or wrapped in `data`.
pub fn create_answer(value: &Value) -> Result<CarrierOrder, CallFailure> {
    let record = match value.get("data") {
        Some(Value::Object(_)) => value.get("data"),
        Some(Value::Array(items)) if items.len() == 1 => items.first(),
        _ => Some(value),
    };
    record.and_then(order_record).ok_or_else(|| {
        transient(
            Op::Create,
            true,
            "a 2xx answer without orderHdrID and originalID".into(),
            None,
        )
    })
}

/// An order record, accepting both key spellings and numbers as strings.
pub fn order_record(value: &Value) -> Option<CarrierOrder> {
    let o = value.as_object()?;
    Some(CarrierOrder {
        order_id: text(o, &["orderHdrID", "orderHdrId"])?,
        original_id: text(o, &["originalID", "originalId"])?,
        tracking_number: text(o, &["itemCode"]),
        sale_order_code: text(o, &["saleOrderCode"]),
        postage_vnd: integer(o, &["totalFee"]),
        created_at: text(o, &["createdDate", "createDate", "orderDate"])
            .and_then(|t| carrier_time(&t)),
        status_code: integer(o, &["status"]),
    })
}

/// One GetListOrder page: how many records it held, and the ones for our code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub records: usize,
    pub matches: Vec<CarrierOrder>,
}

/// Reads a GetListOrder page (`results`, possibly under `data` or in a list).
pub fn list_page(value: &Value, sale_order_code: &str) -> Result<ListPage, CallFailure> {
    let Some(records) = results(value) else {
        return Err(transient(
            Op::Lookup,
            false,
            "a listing without results".into(),
            None,
        ));
    };
    let mut matches = Vec::new();
    for record in &records {
        let Some(o) = record.as_object() else {
            continue;
        };
        if text(o, &["saleOrderCode"]).as_deref() != Some(sale_order_code) {
            continue;
        }
        // An order that exists but cannot be read must not pass for "not found".
        let Some(order) = order_record(record) else {
            return Err(transient(
                Op::Lookup,
                false,
                "a listed order for this reference has no orderHdrID or originalID".into(),
                None,
            ));
        };
        matches.push(order);
    }
    Ok(ListPage {
        records: records.len(),
        matches,
    })
}

fn results(value: &Value) -> Option<Vec<&Value>> {
    match value {
        Value::Null => Some(Vec::new()),
        Value::Array(items)
            if !items.is_empty() && items.iter().all(|i| i.get("results").is_some()) =>
        {
            let mut all = Vec::new();
            for item in items {
                all.extend(results(item.get("results")?)?);
            }
            Some(all)
        }
        Value::Array(items) => Some(items.iter().collect()),
        Value::Object(o) => match (o.get("results"), o.get("data")) {
            (Some(r), _) => results(r),
            (None, Some(d)) => results(d),
            (None, None) => None,
        },
        _ => None,
    }
}

/// Reads an orderCancel answer (possibly wrapped in `data`).
pub fn cancel_answer(value: &Value) -> Result<CancelAnswer, CallFailure> {
    let o = match value.get("data") {
        Some(Value::Object(inner)) => Some(inner),
        _ => value.as_object(),
    };
    let unreadable = || {
        transient(
            Op::Cancel,
            false,
            "a cancel answer without Type".into(),
            None,
        )
    };
    let o = o.ok_or_else(unreadable)?;
    let kind = field_ci(o, "type")
        .and_then(|v| match v {
            Value::String(s) => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(unreadable)?;
    let kind = match kind.parse::<u32>() {
        Ok(n) => format!("{n:02}"),
        Err(_) => kind,
    };
    let text_ci = |key: &str| {
        field_ci(o, key)
            .and_then(value_text)
            .filter(|s| !s.is_empty())
    };
    Ok(match kind.as_str() {
        "00" => CancelAnswer::Cancelled,
        "02" => CancelAnswer::Pending {
            case_id: text_ci("caseid"),
        },
        other => CancelAnswer::Refused {
            message: text_ci("message")
                .or_else(|| text_ci("note"))
                .map(|m| bounded(&m))
                .unwrap_or_else(|| format!("Vietnam Post refused the cancellation (Type {other})")),
        },
    })
}

/// A GetStatusHistoryOrder answer: the readable events, oldest first, and how
/// many entries could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub events: Vec<TrackingEvent>,
    pub unreadable: usize,
}

/// Reads `data.statusHistory` (or a bare `statusHistory`).
pub fn tracking_history(value: &Value) -> Result<History, CallFailure> {
    let data = value.get("data");
    let history = data
        .and_then(|d| d.get("statusHistory"))
        .or_else(|| value.get("statusHistory"));
    let entries: &[Value] = match (history, data) {
        (Some(Value::Array(items)), _) => items,
        (Some(Value::Null), _) | (None, Some(Value::Null)) => &[],
        (None, Some(Value::Object(_))) => &[],
        _ => {
            return Err(transient(
                Op::Track,
                false,
                "a tracking answer without statusHistory".into(),
                None,
            ));
        }
    };
    let mut events: Vec<TrackingEvent> = entries.iter().filter_map(tracking_event).collect();
    let unreadable = entries.len() - events.len();
    // Histories seen newest first are turned around before the stable sort, so
    // events with the same second keep their relative order.
    if events.first().map(|e| e.occurred_at) > events.last().map(|e| e.occurred_at) {
        events.reverse();
    }
    events.sort_by_key(|e| e.occurred_at);
    Ok(History { events, unreadable })
}

fn tracking_event(value: &Value) -> Option<TrackingEvent> {
    let o = value.as_object()?;
    let date = text(o, &["createdDate", "createDate"])?;
    let occurred_at = match text(o, &["createdHour", "createHour"]) {
        Some(hour) => carrier_time(&format!("{date} {hour}"))?,
        None => carrier_time(&date)?,
    };
    Some(TrackingEvent {
        code: integer(o, &["statusCode"])?,
        text: text(o, &["statusName"]),
        location: text(o, &["locateName"]),
        occurred_at,
    })
}

/// A carrier time: `dd/MM/yyyy HH:mm:ss` (or `HH:mm`) Vietnam time, RFC 3339,
/// or an ISO date-time without offset (Vietnam time).
pub fn carrier_time(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Some(ts);
    }
    if let Some(ts) = parse_vietnam_time(s) {
        return Some(ts);
    }
    let civil = DateTime::strptime("%d/%m/%Y %H:%M", s)
        .or_else(|_| s.parse::<DateTime>())
        .ok()?;
    civil.to_zoned(vietnam()).ok().map(|z| z.timestamp())
}

/// `dd/MM/yyyy HH:mm:ss`, Vietnam time: the webhook's `statusDate` and
/// `sendDate`.
pub fn parse_vietnam_time(raw: &str) -> Option<Timestamp> {
    let civil = DateTime::strptime("%d/%m/%Y %H:%M:%S", raw.trim()).ok()?;
    civil.to_zoned(vietnam()).ok().map(|z| z.timestamp())
}

/// The first of `keys` holding a non-empty string or a number, as text.
pub(super) fn text(o: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .filter_map(|k| o.get(*k))
        .filter_map(value_text)
        .find(|s| !s.is_empty())
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The first of `keys` holding an integer, as a number or numeric string.
pub(super) fn integer(o: &Map<String, Value>, keys: &[&str]) -> Option<i64> {
    keys.iter().filter_map(|k| o.get(*k)).find_map(|v| match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(whole)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(whole))
        }
        _ => None,
    })
}

#[allow(clippy::cast_possible_truncation)]
fn whole(f: f64) -> Option<i64> {
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 9e15).then_some(f as i64)
}

/// A key of the cancel answer, whose capitalisation is not settled.
fn field_ci<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::request::{Agency, Citizen, HandoffRequest, Parcel, Procedure};
    use crate::domain::{HandoffId, PhoneNumber};

    fn order(kind: Kind, cod: u64) -> OrderRequest {
        let address = |line: &str, ward: &str| Address {
            line: line.into(),
            ward_code: ward.into(),
            province_code: "79".into(),
        };
        OrderRequest {
            handoff_id: HandoffId::new(1_764_000_000_000, 42),
            customer_code: "C1".into(),
            kind,
            service_code: "CTN009".into(),
            request: HandoffRequest {
                request_id: "HG-1".into(),
                kind,
                dossier_code: "000.00.21.H79-261125-0001".into(),
                procedure: Procedure {
                    code: "1.001612".into(),
                    name: "Đăng ký hộ kinh doanh".into(),
                },
                agency: Agency {
                    code: "000.00.21.H79".into(),
                    name: "Bộ phận một cửa".into(),
                    phone: PhoneNumber::parse("02543830123").unwrap(),
                    address: address("28 Tôn Đức Thắng", "26734"),
                },
                citizen: Citizen {
                    name: "Nguyễn Văn An".into(),
                    phone: PhoneNumber::parse("+84912345678").unwrap(),
                    email: Some("an@example.vn".into()),
                    address: address("12 Nguyễn Huệ", "26732"),
                },
                parcel: Parcel {
                    weight_grams: 300,
                    note: Some("3 bản sao CCCD 079123456789".into()),
                },
                cod_amount_vnd: cod,
                service_code: None,
                return_appointment_slip: false,
                due_at: None,
            },
        }
    }

    fn profile() -> OrderProfile {
        OrderProfile {
            contract_code: "HD1".into(),
            pickup_fee_addon: String::new(),
            content_note_max_chars: 200,
            address_map: AddressMap::parse("26732,7900126\n").unwrap(),
        }
    }

    fn patterns() -> TransientPatterns {
        TransientPatterns::new(&["hệ thống bận".into(), "timeout".into(), " ".into()])
    }

    fn answer(status: u16, body: &str) -> Answer<'_> {
        Answer {
            status,
            retry_after: Some(Duration::from_secs(7)),
            body: body.as_bytes(),
        }
    }

    #[test]
    fn a_return_goes_from_the_agency_to_the_citizen() {
        let body = create_order_body(&order(Kind::Return, 50_000), &profile()).unwrap();
        let info = &body["informationOrder"];
        assert_eq!(body["customerCode"], "C1");
        assert_eq!(body["contractCode"], "HD1");
        assert_eq!(info["senderName"], "Bộ phận một cửa");
        assert_eq!(info["senderEmail"], "");
        assert_eq!(info["senderCommuneCode"], "26734");
        assert_eq!(info["receiverName"], "Nguyễn Văn An");
        assert_eq!(info["receiverPhone"], "0912345678");
        assert_eq!(info["receiverEmail"], "an@example.vn");
        assert_eq!(info["receiverCommuneCode"], "7900126");
        assert_eq!(info["receiverDistrictCode"], "VNPOST");
        assert_eq!(
            info["addonService"],
            json!([{"code": "GTG021", "propValue": "PROP0018:50000"}])
        );
        assert_eq!(
            info["saleOrderCode"],
            order(Kind::Return, 0).handoff_id.as_str()
        );
        assert_eq!(info["weight"], "300");
        let text = body.to_string();
        assert!(!text.contains("bản sao") && !text.contains("079123456789"));
    }

    #[test]
    fn a_pickup_goes_from_the_citizen_to_the_agency() {
        let body = create_order_body(&order(Kind::Pickup, 0), &profile()).unwrap();
        let info = &body["informationOrder"];
        assert_eq!(info["senderName"], "Nguyễn Văn An");
        assert_eq!(info["senderCommuneCode"], "7900126");
        assert_eq!(info["receiverName"], "Bộ phận một cửa");
        assert_eq!(info["receiverEmail"], "");
        assert_eq!(info["addonService"], json!([]));
    }

    #[test]
    fn fees_at_pickup_use_the_configured_addon_or_fail() {
        let err = create_order_body(&order(Kind::Pickup, 20_000), &profile()).unwrap_err();
        assert!(err.contains("pickup_fee_addon"));
        let with_addon = OrderProfile {
            pickup_fee_addon: "GTG099".into(),
            ..profile()
        };
        let body = create_order_body(&order(Kind::Pickup, 20_000), &with_addon).unwrap();
        assert_eq!(
            body["informationOrder"]["addonService"],
            json!([{"code": "GTG099", "propValue": "PROP0018:20000"}])
        );
    }

    #[test]
    fn the_content_note_shortens_the_procedure_and_keeps_the_dossier_code() {
        assert_eq!(content_note("Tên", "ABC-1", 80), "Tên - ABC-1");
        let code = "000.00.21.H79-261125-0001";
        let note = content_note(&"Đăng ký ".repeat(30), code, 80);
        assert!(note.chars().count() <= 80, "{note}");
        assert!(note.ends_with(&format!("… - {code}")), "{note}");
        assert!(note.starts_with("Đăng ký"));
        let exact = content_note(&"ê".repeat(100), code, 80);
        assert_eq!(exact.chars().count(), 80);
        assert_eq!(content_note("Tên", code, 10), code);
    }

    #[test]
    fn order_records_accept_both_spellings_and_numeric_strings() {
        let a = order_record(
            &json!({"orderHdrID": "H1", "originalID": "O1", "itemCode": "BK990032281VN",
            "saleOrderCode": "h_1", "status": "1", "totalFee": "23000"}),
        )
        .unwrap();
        let b = order_record(
            &json!({"orderHdrId": "H1", "originalId": "O1", "itemCode": "BK990032281VN",
            "saleOrderCode": "h_1", "status": 1, "totalFee": 23000.0}),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.postage_vnd, Some(23_000));
        assert_eq!(a.status_code, Some(1));
        let bare =
            order_record(&json!({"orderHdrID": 7, "originalID": "O1", "itemCode": ""})).unwrap();
        assert_eq!(bare.order_id, "7");
        assert_eq!(bare.tracking_number, None);
        assert!(order_record(&json!({"orderHdrID": "H1"})).is_none());
    }

    #[test]
    fn create_answers_are_read_bare_or_wrapped() {
        let record = json!({"orderHdrID": "H1", "originalID": "O1"});
        for v in [
            record.clone(),
            json!({"success": true, "data": record.clone()}),
            json!({"data": [record.clone()]}),
        ] {
            assert_eq!(create_answer(&v).unwrap().order_id, "H1", "{v}");
        }
        let err = create_answer(&json!({"success": true, "data": null})).unwrap_err();
        assert!(matches!(
            err,
            CallFailure::Transient {
                ambiguous: true,
                outcome: "ambiguous",
                ..
            }
        ));
    }

    #[test]
    fn statuses_are_classified_for_a_create() {
        let read = |_: &Value| Ok(());
        let p = patterns();
        let c = |status, body| classify(Op::Create, &answer(status, body), &p, read);
        assert_eq!(
            c(400, r#"{"errorMessage": "Sai mã phường"}"#),
            Err(CallFailure::Refused {
                message: "Sai mã phường".into()
            })
        );
        assert_eq!(
            c(400, "bad request"),
            Err(CallFailure::Refused {
                message: "bad request".into()
            })
        );
        assert_eq!(
            c(
                200,
                r#"{"success": false, "errorMessage": "Mã khách hàng không tồn tại"}"#
            ),
            Err(CallFailure::Refused {
                message: "Mã khách hàng không tồn tại".into()
            })
        );
        for (status, body, ambiguous, outcome, retry) in [
            (
                200,
                r#"{"success": false, "errorMessage": "HỆ THỐNG BẬN"}"#,
                true,
                "ambiguous",
                None,
            ),
            (
                400,
                r#"{"message": "Gateway Timeout upstream"}"#,
                true,
                "ambiguous",
                None,
            ),
            (200, "<html>", true, "ambiguous", None),
            (401, "", false, "transient", None),
            (408, "", false, "transient", None),
            (429, "", false, "transient", Some(7)),
            (500, "", true, "ambiguous", None),
            (502, "", true, "ambiguous", None),
            (503, "", true, "ambiguous", Some(7)),
            (404, "", true, "ambiguous", None),
        ] {
            match c(status, body) {
                Err(CallFailure::Transient {
                    ambiguous: a,
                    outcome: o,
                    retry_after,
                    ..
                }) => {
                    assert_eq!((a, o), (ambiguous, outcome), "{status} {body}");
                    assert_eq!(retry_after, retry.map(Duration::from_secs), "{status}");
                }
                other => panic!("{status} {body}: {other:?}"),
            }
        }
    }

    #[test]
    fn other_operations_are_never_ambiguous() {
        let p = patterns();
        for op in [Op::Token, Op::Lookup, Op::Track, Op::Cancel] {
            for status in [500, 503, 404] {
                let r = classify(op, &answer(status, ""), &p, |_| Ok(()));
                assert!(
                    matches!(
                        r,
                        Err(CallFailure::Transient {
                            ambiguous: false,
                            outcome: "transient",
                            ..
                        })
                    ),
                    "{op:?} {status}"
                );
            }
            let t = transport_failure(op, Transport::Timeout, "x");
            assert!(matches!(
                t,
                CallFailure::Transient {
                    ambiguous: false,
                    outcome: "timeout",
                    ..
                }
            ));
        }
        // A refused login is a credential fault.
        let r = classify(
            Op::Token,
            &answer(200, r#"{"success": false, "errorMessage": "Sai mật khẩu"}"#),
            &p,
            |_| Ok(()),
        );
        assert!(matches!(
            r,
            Err(CallFailure::Transient {
                ambiguous: false,
                ..
            })
        ));
        let r = classify(
            Op::Lookup,
            &answer(400, r#"{"errorMessage": "x"}"#),
            &p,
            |_| Ok(()),
        );
        assert_eq!(
            r,
            Err(CallFailure::Refused {
                message: "x".into()
            })
        );
    }

    #[test]
    fn transport_failures_of_a_create() {
        let f = |k| match transport_failure(Op::Create, k, "x") {
            CallFailure::Transient {
                ambiguous, outcome, ..
            } => (ambiguous, outcome),
            CallFailure::Refused { .. } => unreachable!(),
        };
        assert_eq!(f(Transport::Connect), (false, "transient"));
        assert_eq!(f(Transport::Timeout), (true, "timeout"));
        assert_eq!(f(Transport::Other), (true, "ambiguous"));
    }

    #[test]
    fn refusal_messages_are_bounded() {
        let long = "x".repeat(2_000);
        match classify(Op::Create, &answer(400, &long), &patterns(), |_| Ok(())) {
            Err(CallFailure::Refused { message }) => assert_eq!(message.chars().count(), 500),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn transient_patterns_match_case_insensitively_after_nfc() {
        let p = patterns();
        assert_eq!(
            p.matching("He\u{0323}\u{0302} thống bận, vui lòng thử lại"),
            Some("hệ thống bận")
        );
        assert_eq!(p.matching("Địa chỉ không hợp lệ"), None);
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now: Timestamp = "2026-11-25T07:00:00Z".parse().unwrap();
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 07:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 06:00:00 GMT", now),
            None
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn dates_are_written_and_read_in_vietnam_time() {
        assert_eq!(query_date(Date::constant(2026, 1, 5)), "05-01-2026");
        let want: Timestamp = "2026-11-25T07:03:00Z".parse().unwrap();
        assert_eq!(carrier_time("25/11/2026 14:03:00"), Some(want));
        assert_eq!(carrier_time("25/11/2026 14:03"), Some(want));
        assert_eq!(carrier_time("2026-11-25T14:03:00+07:00"), Some(want));
        assert_eq!(carrier_time("2026-11-25T14:03:00"), Some(want));
        assert_eq!(carrier_time("yesterday"), None);
    }

    #[test]
    fn list_pages_keep_only_our_orders() {
        let v = json!({"data": {"results": [
            {"orderHdrID": "H1", "originalID": "O1", "saleOrderCode": "h_a", "createdDate": "25/11/2026 14:03:00"},
            {"orderHdrID": "H2", "originalID": "O2", "saleOrderCode": "h_b"},
            "junk"
        ]}});
        let page = list_page(&v, "h_a").unwrap();
        assert_eq!(page.records, 3);
        assert_eq!(page.matches.len(), 1);
        assert_eq!(
            page.matches[0].created_at,
            carrier_time("25/11/2026 14:03:00")
        );
        let nested = json!([{"results": [{"orderHdrID": "H1", "originalID": "O1", "saleOrderCode": "h_a"}]}]);
        assert_eq!(list_page(&nested, "h_a").unwrap().matches.len(), 1);
        assert_eq!(
            list_page(&json!({"results": null}), "h_a").unwrap().records,
            0
        );
        assert!(list_page(&json!({"total": 0}), "h_a").is_err());
        let unreadable = json!({"results": [{"saleOrderCode": "h_a"}]});
        assert!(list_page(&unreadable, "h_a").is_err());
    }

    #[test]
    fn cancel_answers() {
        assert_eq!(
            cancel_answer(&json!({"Type": "00"})).unwrap(),
            CancelAnswer::Cancelled
        );
        assert_eq!(
            cancel_answer(&json!({"Type": "02", "CaseId": "C9", "Message": "Chờ duyệt"})).unwrap(),
            CancelAnswer::Pending {
                case_id: Some("C9".into())
            }
        );
        assert_eq!(
            cancel_answer(&json!({"type": 2, "caseId": ""})).unwrap(),
            CancelAnswer::Pending { case_id: None }
        );
        assert_eq!(
            cancel_answer(&json!({"Type": "01", "Message": "Đơn đã được lấy"})).unwrap(),
            CancelAnswer::Refused {
                message: "Đơn đã được lấy".into()
            }
        );
        assert_eq!(
            cancel_answer(&json!({"Type": "03", "Message": "", "Note": "Không thể hủy"})).unwrap(),
            CancelAnswer::Refused {
                message: "Không thể hủy".into()
            }
        );
        assert!(cancel_answer(&json!({"Message": "?"})).is_err());
    }

    #[test]
    fn tracking_histories_come_oldest_first() {
        let v = json!({"data": {"statusHistory": [
            {"statusCode": 6, "statusName": "Đã nhận", "locateName": "BC Côn Đảo", "createdDate": "25/11/2026", "createdHour": "14:03:00"},
            {"statusCode": "1", "createdDate": "25/11/2026", "createHour": "09:00:00"},
            {"statusCode": 7, "createdDate": "garbage", "createdHour": "10:00:00"}
        ]}});
        let h = tracking_history(&v).unwrap();
        assert_eq!(h.unreadable, 1);
        assert_eq!(h.events.iter().map(|e| e.code).collect::<Vec<_>>(), [1, 6]);
        assert_eq!(h.events[1].location.as_deref(), Some("BC Côn Đảo"));
        assert_eq!(
            h.events[1].occurred_at,
            carrier_time("25/11/2026 14:03:00").unwrap()
        );
        assert!(
            tracking_history(&json!({"data": null}))
                .unwrap()
                .events
                .is_empty()
        );
        assert!(tracking_history(&json!({"other": 1})).is_err());
    }
}
