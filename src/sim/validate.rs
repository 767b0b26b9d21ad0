//! CreateOrder bodies checked the way Vietnam Post checks them: a refusal is a
//! Vietnamese message naming the field.

use serde_json::{Map, Value};

/// The add-on that asks the postal worker to collect an amount on delivery.
const COD_ADDON: &str = "GTG021";

/// One side of an order. Personal data: answered masked, never logged.
#[derive(Clone)]
pub(crate) struct Party {
    pub name: String,
    pub phone: String,
    pub address: String,
    pub province_code: String,
    pub commune_code: String,
}

/// A CreateOrder body that passed every check.
pub(crate) struct NewOrder {
    /// `orderCreationStatus` 0: saved, not sent to a post office.
    pub draft: bool,
    pub sale_order_code: String,
    pub service_code: String,
    pub weight_grams: u64,
    pub cod_amount: i64,
    /// Read only for `[sim:…]` markers, not kept.
    pub content_note: String,
    pub sender: Party,
    pub receiver: Party,
}

/// What the deployment accepts.
pub(crate) struct Rules<'a> {
    pub service_codes: &'a [String],
    /// When set, the only customer code accepted.
    pub customer_code: Option<&'a str>,
}

/// Checks a CreateOrder body.
pub(crate) fn create_order(body: &Value, rules: &Rules<'_>) -> Result<NewOrder, String> {
    let top = body
        .as_object()
        .ok_or("Dữ liệu đơn hàng không đúng định dạng")?;
    let draft = match number(top, "orderCreationStatus") {
        Some(1) => false,
        Some(0) => true,
        _ => return Err(invalid("orderCreationStatus", "chỉ nhận 0 hoặc 1")),
    };
    if text(top, "type").as_deref() != Some("GUI") {
        return Err(invalid("type", "chỉ nhận GUI"));
    }
    let customer_code = required(top, "customerCode")?;
    if rules.customer_code.is_some_and(|c| c != customer_code) {
        return Err("Mã khách hàng (customerCode) không tồn tại".into());
    }
    let info = match top.get("informationOrder") {
        Some(Value::Object(info)) => info,
        _ => return Err(missing("informationOrder")),
    };
    let sender = party(info, "sender")?;
    let receiver = party(info, "receiver")?;
    let service_code = required(info, "serviceCode")?;
    if !rules.service_codes.contains(&service_code) {
        return Err(invalid(
            "serviceCode",
            &format!("dịch vụ {service_code} không được hỗ trợ"),
        ));
    }
    let sale_order_code = required(info, "saleOrderCode")?;
    if sale_order_code.chars().count() > 50 {
        return Err(invalid("saleOrderCode", "dài quá 50 ký tự"));
    }
    let weight_grams = number(info, "weight")
        .filter(|w| *w > 0)
        .ok_or_else(|| invalid("weight", "phải là số lớn hơn 0"))?;
    Ok(NewOrder {
        draft,
        sale_order_code,
        service_code,
        weight_grams: weight_grams.unsigned_abs(),
        cod_amount: cod_amount(info)?,
        content_note: text(info, "contentNote").unwrap_or_default(),
        sender,
        receiver,
    })
}

fn party(info: &Map<String, Value>, side: &str) -> Result<Party, String> {
    let key = |field: &str| format!("{side}{field}");
    let phone = required(info, &key("Phone"))?;
    if !is_phone(&phone) {
        return Err(invalid(&key("Phone"), "không đúng định dạng số điện thoại"));
    }
    let district = key("DistrictCode");
    if text(info, &district).as_deref() != Some("VNPOST") {
        return Err(invalid(&district, "địa chỉ hai cấp phải dùng VNPOST"));
    }
    let code = |field: &str| {
        let name = key(field);
        let value = required(info, &name)?;
        if value.chars().all(|c| c.is_ascii_digit()) {
            Ok(value)
        } else {
            Err(invalid(&name, "mã địa giới không tồn tại"))
        }
    };
    Ok(Party {
        province_code: code("ProvinceCode")?,
        commune_code: code("CommuneCode")?,
        name: required(info, &key("Name"))?,
        address: required(info, &key("Address"))?,
        phone,
    })
}

/// The amount of the cash-on-delivery add-on, 0 when there is none.
fn cod_amount(info: &Map<String, Value>) -> Result<i64, String> {
    let addons = match info.get("addonService") {
        None | Some(Value::Null) => return Ok(0),
        Some(Value::Array(addons)) => addons,
        Some(_) => return Err(invalid("addonService", "phải là danh sách")),
    };
    let mut total = 0;
    for addon in addons {
        let Some(addon) = addon.as_object() else {
            return Err(invalid("addonService", "phải là danh sách dịch vụ"));
        };
        if text(addon, "code").as_deref() != Some(COD_ADDON) {
            continue;
        }
        let amount = text(addon, "propValue")
            .and_then(|v| v.strip_prefix("PROP0018:").map(str::to_owned))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|a| *a >= 0)
            .ok_or_else(|| invalid("addonService.propValue", "số tiền thu hộ không đúng"))?;
        total += amount;
    }
    Ok(total)
}

fn is_phone(phone: &str) -> bool {
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    (9..=12).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit())
}

fn required(o: &Map<String, Value>, key: &str) -> Result<String, String> {
    text(o, key)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing(key))
}

fn text(o: &Map<String, Value>, key: &str) -> Option<String> {
    match o.get(key)? {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An integer given as a JSON number or a numeric string.
fn number(o: &Map<String, Value>, key: &str) -> Option<i64> {
    match o.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn missing(field: &str) -> String {
    format!("Trường {field} không được để trống")
}

fn invalid(field: &str, why: &str) -> String {
    format!("Trường {field} không hợp lệ: {why}")
}
