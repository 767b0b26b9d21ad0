//! The canonical handoff request: parsed once, valid from then on.
//!
//! Both wire formats are first read into a neutral tree (`serde_json::Value`;
//! the XML reader yields strings for leaves and `null` for empty elements),
//! then parsed here, so JSON and XML obey exactly the same rules and produce
//! the same canonical form.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::handoff::Kind;
use super::phone::PhoneNumber;
use super::text::{char_len, is_printable, normalize};
use super::time::{format_vietnam, parse_rfc3339};

/// One bad field of a request, named by its dotted path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Which wire format the tree came from; XML leaves are always text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Json,
    Xml,
}

/// The deployment's rules that validation depends on.
#[derive(Debug, Clone, Default)]
pub struct RequestRules {
    /// `postal.service_codes`.
    pub service_codes: Vec<String>,
    /// True when `postal.pickup_fee_addon` names an add-on, allowing COD on pickups.
    pub pickup_fees_allowed: bool,
}

/// A postal address in the two-level (province, ward) system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Address {
    pub line: String,
    pub ward_code: String,
    pub province_code: String,
}

/// The administrative procedure the dossier belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Procedure {
    pub code: String,
    pub name: String,
}

/// The agency's one-stop desk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Agency {
    pub code: String,
    pub name: String,
    #[serde(with = "phone_serde")]
    pub phone: PhoneNumber,
    pub address: Address,
}

/// The citizen or business: personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Citizen {
    pub name: String,
    #[serde(with = "phone_serde")]
    pub phone: PhoneNumber,
    pub email: Option<String>,
    pub address: Address,
}

/// The item carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Parcel {
    pub weight_grams: u32,
    pub note: Option<String>,
}

/// A valid handoff request in canonical form (NFC, domestic phones, defaults
/// filled in). Field order here is the canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HandoffRequest {
    pub request_id: String,
    pub kind: Kind,
    pub dossier_code: String,
    pub procedure: Procedure,
    pub agency: Agency,
    pub citizen: Citizen,
    pub parcel: Parcel,
    pub cod_amount_vnd: u64,
    pub service_code: Option<String>,
    pub return_appointment_slip: bool,
    #[serde(with = "time_serde")]
    pub due_at: Option<Timestamp>,
}

mod phone_serde {
    use super::PhoneNumber;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &PhoneNumber, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PhoneNumber, D::Error> {
        let raw = String::deserialize(d)?;
        PhoneNumber::parse(&raw).map_err(serde::de::Error::custom)
    }
}

mod time_serde {
    use super::{Timestamp, format_vietnam, parse_rfc3339};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format_vietnam(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|raw| parse_rfc3339(&raw).ok_or_else(|| serde::de::Error::custom("bad time")))
            .transpose()
    }
}

const TOP: &[&str] = &[
    "request_id",
    "kind",
    "dossier_code",
    "procedure",
    "agency",
    "citizen",
    "parcel",
    "cod_amount_vnd",
    "service_code",
    "return_appointment_slip",
    "due_at",
];
const PROCEDURE: &[&str] = &["code", "name"];
const AGENCY: &[&str] = &["code", "name", "phone", "address"];
const CITIZEN: &[&str] = &["name", "phone", "email", "address"];
const ADDRESS: &[&str] = &["line", "ward_code", "province_code"];
const PARCEL: &[&str] = &["weight_grams", "note"];
const MAX_COD_VND: i64 = 100_000_000;

impl HandoffRequest {
    /// Parses a request tree, naming every bad field at once.
    pub fn parse(
        doc: &Value,
        origin: Origin,
        rules: &RequestRules,
    ) -> Result<Self, Vec<FieldError>> {
        let mut p = Parser {
            origin,
            errors: Vec::new(),
        };
        let request = p.request(doc, rules);
        match request {
            Some(r) if p.errors.is_empty() => Ok(r),
            _ => {
                let mut errors = p.errors;
                errors.sort_by(|a, b| a.field.cmp(&b.field));
                Err(errors)
            }
        }
    }

    /// The canonical form as JSON: equal for equal requests, whatever the format.
    pub fn canonical_json(&self) -> Value {
        serde_json::to_value(self).expect("a request always serializes")
    }

    /// The canonical form as stored (the handoff's details), and its
    /// SHA-256: all the gateway keeps for idempotency. One serialization
    /// serves both.
    pub fn canonical_form(&self) -> (String, [u8; 32]) {
        let text = serde_json::to_string(self).expect("a request always serializes");
        let sha = Sha256::digest(text.as_bytes()).into();
        (text, sha)
    }

    /// SHA-256 of the canonical form.
    pub fn canonical_sha256(&self) -> [u8; 32] {
        self.canonical_form().1
    }
}

struct Parser {
    origin: Origin,
    errors: Vec<FieldError>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Parser {
    fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn request(&mut self, doc: &Value, rules: &RequestRules) -> Option<HandoffRequest> {
        let Some(top) = doc.as_object() else {
            self.fail("", "the request must be an object");
            return None;
        };
        self.unknown_fields("", top, TOP);
        let request_id = self.text(
            top,
            "",
            "request_id",
            Need::Required,
            1,
            64,
            Some(request_id_chars),
        );
        let kind = self.kind(top);
        let dossier_code = self.text(
            top,
            "",
            "dossier_code",
            Need::Required,
            1,
            64,
            Some(printable),
        );
        let procedure = self.procedure(top);
        let agency = self.agency(top);
        let citizen = self.citizen(top);
        let parcel = self.parcel(top);
        let cod = self.integer(top, "", "cod_amount_vnd", Need::Optional, 0, MAX_COD_VND);
        if let (Some(Kind::Pickup), Some(amount)) = (kind, cod)
            && amount > 0
            && !rules.pickup_fees_allowed
        {
            self.fail(
                "cod_amount_vnd",
                "must be 0 for a pickup: no Vietnam Post add-on for fees collected at pickup is configured",
            );
        }
        let service_code = self.text(top, "", "service_code", Need::Optional, 1, 64, None);
        if let Some(code) = &service_code
            && !rules.service_codes.iter().any(|c| c == code)
        {
            let known = rules.service_codes.join(", ");
            self.fail("service_code", format!("must be one of: {known}"));
        }
        let slip = self.boolean(top, "return_appointment_slip");
        let due_at = self.due_at(top);
        Some(HandoffRequest {
            request_id: request_id?,
            kind: kind?,
            dossier_code: dossier_code?,
            procedure: procedure?,
            agency: agency?,
            citizen: citizen?,
            parcel: parcel?,
            cod_amount_vnd: u64::try_from(cod.unwrap_or(0)).ok()?,
            service_code,
            return_appointment_slip: slip.unwrap_or(false),
            due_at: due_at.unwrap_or(None),
        })
    }

    fn kind(&mut self, top: &Map<String, Value>) -> Option<Kind> {
        let raw = self.text(top, "", "kind", Need::Required, 1, 16, None)?;
        match raw.parse() {
            Ok(kind) => Some(kind),
            Err(()) => {
                self.fail("kind", "must be \"pickup\" or \"return\"");
                None
            }
        }
    }

    fn procedure(&mut self, top: &Map<String, Value>) -> Option<Procedure> {
        let obj = self.object(top, "", "procedure", PROCEDURE)?;
        let code = self.text(
            obj,
            "procedure",
            "code",
            Need::Required,
            1,
            64,
            Some(printable),
        );
        let name = self.text(obj, "procedure", "name", Need::Required, 1, 200, None);
        Some(Procedure {
            code: code?,
            name: name?,
        })
    }

    fn agency(&mut self, top: &Map<String, Value>) -> Option<Agency> {
        let obj = self.object(top, "", "agency", AGENCY)?;
        let code = self.text(
            obj,
            "agency",
            "code",
            Need::Required,
            1,
            64,
            Some(printable),
        );
        let name = self.text(obj, "agency", "name", Need::Required, 1, 200, None);
        let phone = self.phone(obj, "agency");
        let address = self.address(obj, "agency");
        Some(Agency {
            code: code?,
            name: name?,
            phone: phone?,
            address: address?,
        })
    }

    fn citizen(&mut self, top: &Map<String, Value>) -> Option<Citizen> {
        let obj = self.object(top, "", "citizen", CITIZEN)?;
        let name = self.text(obj, "citizen", "name", Need::Required, 1, 200, None);
        let phone = self.phone(obj, "citizen");
        let email = self.text(obj, "citizen", "email", Need::Optional, 1, 254, Some(email));
        let address = self.address(obj, "citizen");
        Some(Citizen {
            name: name?,
            phone: phone?,
            email,
            address: address?,
        })
    }

    fn parcel(&mut self, top: &Map<String, Value>) -> Option<Parcel> {
        let obj = self.object(top, "", "parcel", PARCEL)?;
        let weight = self.integer(obj, "parcel", "weight_grams", Need::Required, 1, 30_000);
        let note = self.text(obj, "parcel", "note", Need::Optional, 1, 500, None);
        Some(Parcel {
            weight_grams: u32::try_from(weight?).ok()?,
            note,
        })
    }

    fn address(&mut self, parent: &Map<String, Value>, path: &str) -> Option<Address> {
        let obj = self.object(parent, path, "address", ADDRESS)?;
        let path = join(path, "address");
        let line = self.text(obj, &path, "line", Need::Required, 1, 250, None);
        let ward = self.text(
            obj,
            &path,
            "ward_code",
            Need::Required,
            1,
            5,
            Some(digits::<5>),
        );
        let province = self.text(
            obj,
            &path,
            "province_code",
            Need::Required,
            1,
            2,
            Some(digits::<2>),
        );
        Some(Address {
            line: line?,
            ward_code: ward?,
            province_code: province?,
        })
    }

    fn phone(&mut self, obj: &Map<String, Value>, path: &str) -> Option<PhoneNumber> {
        let raw = self.text(obj, path, "phone", Need::Required, 1, 64, None)?;
        match PhoneNumber::parse(&raw) {
            Ok(phone) => Some(phone),
            Err(message) => {
                self.fail(join(path, "phone"), message);
                None
            }
        }
    }

    fn due_at(&mut self, top: &Map<String, Value>) -> Option<Option<Timestamp>> {
        let Some(raw) = self.text(top, "", "due_at", Need::Optional, 1, 64, None) else {
            return Some(None);
        };
        match parse_rfc3339(&raw) {
            Some(ts) => Some(Some(ts)),
            None => {
                self.fail("due_at", "must be an RFC 3339 time with an offset");
                None
            }
        }
    }

    fn unknown_fields(&mut self, path: &str, obj: &Map<String, Value>, allowed: &[&str]) {
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                self.fail(join(path, key), "is not a known field");
            }
        }
    }

    /// A nested object; `None` (with an error) when missing or not an object.
    fn object<'v>(
        &mut self,
        parent: &'v Map<String, Value>,
        path: &str,
        key: &str,
        allowed: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let field = join(path, key);
        match parent.get(key) {
            None | Some(Value::Null) => {
                self.fail(field, "is required");
                None
            }
            Some(Value::Object(obj)) => {
                self.unknown_fields(&field, obj, allowed);
                Some(obj)
            }
            Some(_) => {
                self.fail(field, "must be an object");
                None
            }
        }
    }

    /// A text field, normalized; empty text counts as absent.
    #[allow(clippy::too_many_arguments)]
    fn text(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        key: &str,
        need: Need,
        min: usize,
        max: usize,
        check: Option<Check>,
    ) -> Option<String> {
        let field = join(path, key);
        let raw = match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(normalize(s)).filter(|s| !s.is_empty()),
            Some(_) => {
                self.fail(field, "must be a string");
                return None;
            }
        };
        let Some(text) = raw else {
            if need == Need::Required {
                self.fail(field, "is required");
            }
            return None;
        };
        let len = char_len(&text);
        if len < min || len > max {
            self.fail(field, format!("must be {min} to {max} characters"));
            return None;
        }
        if let Some(check) = check
            && let Err(message) = check(&text)
        {
            self.fail(field, message);
            return None;
        }
        Some(text)
    }

    fn integer(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        key: &str,
        need: Need,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let field = join(path, key);
        let parsed = match (obj.get(key), self.origin) {
            (None | Some(Value::Null), _) => None,
            (Some(Value::Number(n)), Origin::Json) => Some(n.as_i64()),
            (Some(Value::String(s)), Origin::Xml) => Some(s.trim().parse::<i64>().ok()),
            (Some(_), _) => Some(None),
        };
        let value = match parsed {
            None => {
                if need == Need::Required {
                    self.fail(field, "is required");
                }
                return None;
            }
            Some(None) => {
                self.fail(field, "must be an integer");
                return None;
            }
            Some(Some(v)) => v,
        };
        if value < min || value > max {
            self.fail(field, format!("must be between {min} and {max}"));
            return None;
        }
        Some(value)
    }

    fn boolean(&mut self, obj: &Map<String, Value>, key: &str) -> Option<bool> {
        match (obj.get(key), self.origin) {
            (None | Some(Value::Null), _) => None,
            (Some(Value::Bool(b)), Origin::Json) => Some(*b),
            (Some(Value::String(s)), Origin::Xml) if s.trim() == "true" => Some(true),
            (Some(Value::String(s)), Origin::Xml) if s.trim() == "false" => Some(false),
            _ => {
                self.fail(key, "must be true or false");
                None
            }
        }
    }
}

/// A rule a text field must satisfy, with the message when it does not.
type Check = fn(&str) -> Result<(), &'static str>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
}

fn request_id_chars(s: &str) -> Result<(), &'static str> {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        Ok(())
    } else {
        Err("may contain only letters, digits, '.', '_', ':' and '-'")
    }
}

fn printable(s: &str) -> Result<(), &'static str> {
    if is_printable(s) {
        Ok(())
    } else {
        Err("must contain only printable characters")
    }
}

fn digits<const N: usize>(s: &str) -> Result<(), &'static str> {
    if s.len() == N && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else if N == 2 {
        Err("must be 2 digits")
    } else {
        Err("must be 5 digits")
    }
}

fn email(s: &str) -> Result<(), &'static str> {
    let mut parts = s.split('@');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(local), Some(domain), None)
            if !local.is_empty() && !domain.is_empty() && !s.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err("must be an email address with exactly one '@'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> RequestRules {
        RequestRules {
            service_codes: vec!["CTN009".into(), "ETN011".into(), "ETN013".into()],
            pickup_fees_allowed: false,
        }
    }

    fn example() -> Value {
        json!({
            "request_id": "HG-2026-000123",
            "kind": "return",
            "dossier_code": "000.00.21.H79-261125-0001",
            "procedure": {"code": "1.001612", "name": "Đăng ký hộ kinh doanh"},
            "agency": {
                "code": "000.00.21.H79", "name": "Bộ phận một cửa đặc khu Côn Đảo",
                "phone": "02543830123",
                "address": {"line": "28 Tôn Đức Thắng", "ward_code": "26732", "province_code": "79"}
            },
            "citizen": {
                "name": "Nguyễn Văn An", "phone": "0912345678", "email": "an@example.vn",
                "address": {"line": "12 Nguyễn Huệ, khu 3", "ward_code": "26732", "province_code": "79"}
            },
            "parcel": {"weight_grams": 300, "note": "3 bản sao, 1 bản chính"},
            "cod_amount_vnd": 50000,
            "service_code": "CTN009",
            "return_appointment_slip": false,
            "due_at": "2026-11-27T17:00:00+07:00"
        })
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn the_contract_example_parses() {
        let r = HandoffRequest::parse(&example(), Origin::Json, &rules()).unwrap();
        assert_eq!(r.kind, Kind::Return);
        assert_eq!(r.cod_amount_vnd, 50_000);
        assert_eq!(r.citizen.phone.as_str(), "0912345678");
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let mut doc = example();
        doc["citizen"]["phone"] = json!("0112345678");
        doc["agency"]["address"]["ward_code"] = json!("2673A");
        doc["parcel"]["weight_grams"] = json!(0);
        doc["extra"] = json!(1);
        doc["citizen"]["nickname"] = json!("An");
        doc.as_object_mut().unwrap().remove("dossier_code");
        let errors = HandoffRequest::parse(&doc, Origin::Json, &rules()).unwrap_err();
        assert_eq!(
            fields(&errors),
            [
                "agency.address.ward_code",
                "citizen.nickname",
                "citizen.phone",
                "dossier_code",
                "extra",
                "parcel.weight_grams"
            ]
        );
    }

    #[test]
    fn json_types_are_strict_but_xml_text_is_read() {
        let mut doc = example();
        doc["parcel"]["weight_grams"] = json!("300");
        let errors = HandoffRequest::parse(&doc, Origin::Json, &rules()).unwrap_err();
        assert_eq!(fields(&errors), ["parcel.weight_grams"]);

        let mut xml = example();
        xml["parcel"]["weight_grams"] = json!("300");
        xml["cod_amount_vnd"] = json!("50000");
        xml["return_appointment_slip"] = json!("false");
        let from_xml = HandoffRequest::parse(&xml, Origin::Xml, &rules()).unwrap();
        let from_json = HandoffRequest::parse(&example(), Origin::Json, &rules()).unwrap();
        assert_eq!(from_xml.canonical_sha256(), from_json.canonical_sha256());
    }

    #[test]
    fn cod_on_a_pickup_needs_the_addon() {
        let mut doc = example();
        doc["kind"] = json!("pickup");
        let errors = HandoffRequest::parse(&doc, Origin::Json, &rules()).unwrap_err();
        assert_eq!(fields(&errors), ["cod_amount_vnd"]);
        let allowed = RequestRules {
            pickup_fees_allowed: true,
            ..rules()
        };
        assert!(HandoffRequest::parse(&doc, Origin::Json, &allowed).is_ok());
    }

    #[test]
    fn absent_null_and_defaults_are_the_same_request() {
        let mut explicit = example();
        explicit["citizen"]["email"] = Value::Null;
        explicit["return_appointment_slip"] = json!(false);
        let mut absent = example();
        absent["citizen"].as_object_mut().unwrap().remove("email");
        absent
            .as_object_mut()
            .unwrap()
            .remove("return_appointment_slip");
        let a = HandoffRequest::parse(&explicit, Origin::Json, &rules()).unwrap();
        let b = HandoffRequest::parse(&absent, Origin::Json, &rules()).unwrap();
        assert_eq!(a.canonical_sha256(), b.canonical_sha256());
    }

    #[test]
    fn lengths_count_characters_after_nfc() {
        let mut doc = example();
        // 200 precomposed characters written decomposed: 400 scalars before NFC.
        doc["citizen"]["name"] = json!("e\u{0302}".repeat(200));
        assert!(HandoffRequest::parse(&doc, Origin::Json, &rules()).is_ok());
        doc["citizen"]["name"] = json!("ê".repeat(201));
        let errors = HandoffRequest::parse(&doc, Origin::Json, &rules()).unwrap_err();
        assert_eq!(fields(&errors), ["citizen.name"]);
    }

    #[test]
    fn canonical_form_round_trips() {
        let r = HandoffRequest::parse(&example(), Origin::Json, &rules()).unwrap();
        let again = HandoffRequest::parse(&r.canonical_json(), Origin::Json, &rules()).unwrap();
        assert_eq!(r, again);
    }
}
