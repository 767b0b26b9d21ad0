//! Property tests of canonicalization across both wire formats.

use bcci_gateway::domain::request::Origin;
use bcci_gateway::domain::{HandoffRequest, RequestRules};
use bcci_gateway::http::xml;
use proptest::prelude::*;
use serde_json::{Value, json};
use unicode_normalization::UnicodeNormalization;

fn rules() -> RequestRules {
    RequestRules {
        service_codes: vec!["CTN009".into(), "ETN011".into(), "ETN013".into()],
        pickup_fees_allowed: false,
    }
}

/// Vietnamese-looking text, sometimes decomposed, with stray spaces.
fn text(max: usize) -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        "Nguyễn",
        "Văn",
        "An",
        "Thị",
        "Bình",
        "Đăng ký",
        "hộ kinh doanh",
        "Côn Đảo",
        "số 12",
        "khu 3",
        "Tôn Đức Thắng",
        "<&>",
        "\"quoted\"",
        "Huế",
    ]);
    (
        prop::collection::vec(words, 1..6),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(ws, decompose, pad)| {
            let mut s: String = ws.join(" ").chars().take(max).collect();
            if decompose {
                s = s.nfd().collect();
            }
            if pad {
                s = format!("  {s} ");
            }
            s
        })
}

fn phone() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["0", "+84", "+84 "]),
        prop::sample::select(vec!["9", "3", "8", "2"]),
        "[0-9]{8}",
        prop::sample::select(vec!["", ".", "-", " "]),
    )
        .prop_map(|(prefix, first, rest, sep)| {
            let extra = if first == "2" { "1" } else { "" };
            format!("{prefix}{first}{extra}{}{sep}{}", &rest[..4], &rest[4..])
        })
}

fn address() -> impl Strategy<Value = Value> {
    (text(250), "[0-9]{5}", "[0-9]{2}").prop_map(|(line, ward, province)| {
        json!({"line": line, "ward_code": ward, "province_code": province})
    })
}

/// A valid request as a JSON tree, with optional fields present or absent.
fn request() -> impl Strategy<Value = Value> {
    (
        "[A-Za-z0-9._:-]{1,64}",
        prop::sample::select(vec!["pickup", "return"]),
        "[0-9A-Z.-]{1,64}",
        (text(200), text(200), text(200)),
        (phone(), phone()),
        (address(), address()),
        (1u32..=30_000, prop::option::of(text(500))),
        (
            prop::option::of(0u64..=100_000_000),
            prop::option::of(prop::sample::select(vec!["CTN009", "ETN011", "ETN013"])),
            prop::option::of(any::<bool>()),
            prop::option::of(0i64..4_000_000_000),
            prop::option::of("[a-z]{1,10}@[a-z]{1,10}\\.vn"),
        ),
    )
        .prop_map(
            |(request_id, kind, dossier, (proc_name, agency_name, citizen_name), (p1, p2), (a1, a2), (weight, note), (cod, service, slip, due, email))| {
                let mut doc = json!({
                    "request_id": request_id,
                    "kind": kind,
                    "dossier_code": dossier,
                    "procedure": {"code": "1.001612", "name": proc_name},
                    "agency": {"code": "000.00.21.H79", "name": agency_name, "phone": p1, "address": a1},
                    "citizen": {"name": citizen_name, "phone": p2, "address": a2},
                    "parcel": {"weight_grams": weight},
                });
                if let Some(n) = note { doc["parcel"]["note"] = json!(n); }
                if let Some(e) = email { doc["citizen"]["email"] = json!(e); }
                if let Some(c) = cod { doc["cod_amount_vnd"] = json!(if kind == "pickup" { 0 } else { c }); }
                if let Some(s) = service { doc["service_code"] = json!(s); }
                if let Some(s) = slip { doc["return_appointment_slip"] = json!(s); }
                if let Some(d) = due {
                    let ts = jiff::Timestamp::from_second(d).unwrap();
                    doc["due_at"] = json!(ts.to_string());
                }
                doc
            },
        )
}

/// The tree as the XML reader would give it: every leaf as text.
fn as_xml_body(doc: &Value) -> String {
    xml::write_document("handoff", doc, |_| "item")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn canonicalization_is_idempotent(doc in request()) {
        let parsed = HandoffRequest::parse(&doc, Origin::Json, &rules()).unwrap();
        let canonical = parsed.canonical_json();
        let again = HandoffRequest::parse(&canonical, Origin::Json, &rules()).unwrap();
        prop_assert_eq!(&again, &parsed);
        prop_assert_eq!(again.canonical_json(), canonical);
    }

    #[test]
    fn json_to_handoff_to_json_keeps_the_canonical_form(doc in request()) {
        let parsed = HandoffRequest::parse(&doc, Origin::Json, &rules()).unwrap();
        let wire = serde_json::to_vec(&parsed.canonical_json()).unwrap();
        let back: Value = serde_json::from_slice(&wire).unwrap();
        let reparsed = HandoffRequest::parse(&back, Origin::Json, &rules()).unwrap();
        prop_assert_eq!(reparsed.canonical_sha256(), parsed.canonical_sha256());
    }

    #[test]
    fn xml_to_handoff_to_xml_keeps_the_canonical_form(doc in request()) {
        let body = as_xml_body(&doc);
        let (root, tree) = xml::read_tree(body.as_bytes()).unwrap();
        prop_assert_eq!(root, "handoff");
        let from_xml = HandoffRequest::parse(&tree, Origin::Xml, &rules()).unwrap();
        // The same request sent as JSON is the same canonical request.
        let from_json = HandoffRequest::parse(&doc, Origin::Json, &rules()).unwrap();
        prop_assert_eq!(&from_xml, &from_json);
        // Written back as XML and read again, nothing changes.
        let rewritten = as_xml_body(&from_xml.canonical_json());
        let (_, tree2) = xml::read_tree(rewritten.as_bytes()).unwrap();
        let again = HandoffRequest::parse(&tree2, Origin::Xml, &rules()).unwrap();
        prop_assert_eq!(again.canonical_sha256(), from_xml.canonical_sha256());
    }

    #[test]
    fn children_in_any_order_are_the_same_request(doc in request(), seed in any::<u64>()) {
        let mut entries: Vec<(String, Value)> = doc.as_object().unwrap().clone().into_iter().collect();
        // A deterministic shuffle from the seed.
        let mut s = seed;
        for i in (1..entries.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            entries.swap(i, (s >> 33) as usize % (i + 1));
        }
        let shuffled = Value::Object(entries.into_iter().collect());
        let (_, a) = xml::read_tree(as_xml_body(&doc).as_bytes()).unwrap();
        let (_, b) = xml::read_tree(as_xml_body(&shuffled).as_bytes()).unwrap();
        let a = HandoffRequest::parse(&a, Origin::Xml, &rules()).unwrap();
        let b = HandoffRequest::parse(&b, Origin::Xml, &rules()).unwrap();
        prop_assert_eq!(a.canonical_sha256(), b.canonical_sha256());
    }
}
