//! The intake parsers (JSON, XML) and canonicalization, called directly.

use std::time::{Duration, Instant};

use bcci_gateway::domain::request::Origin;
use bcci_gateway::domain::{HandoffRequest, RequestRules};
use bcci_gateway::http::negotiate::Format;
use bcci_gateway::http::problem::{Problem, ProblemKind};
use bcci_gateway::http::xml;
use bcci_gateway::intake::body::parse_request;
use proptest::prelude::*;
use serde_json::Value;

use super::hostile::{self, is_xml_char};

/// Hostile inputs are small; a parse slower than this is a finding.
const SLOW: Duration = Duration::from_secs(2);

pub fn rules() -> RequestRules {
    RequestRules {
        service_codes: vec!["CTN009".into(), "ETN011".into(), "ETN013".into()],
        pickup_fees_allowed: false,
    }
}

fn problem_xml(problem: &Problem) -> String {
    let doc = problem.document("req_fuzz");
    xml::write_document_ns("problem", "urn:ietf:rfc:7807", &doc, |list| {
        if list == "errors" { "error" } else { "item" }
    })
}

/// A refusal is one of the body's 4xx kinds and renders as a well-formed
/// problem document in both formats.
pub fn check_problem(problem: &Problem, format: Format) -> Result<(), TestCaseError> {
    let allowed: &[ProblemKind] = match format {
        Format::Json => &[ProblemKind::Malformed, ProblemKind::Invalid],
        Format::Xml => &[
            ProblemKind::UnsupportedMediaType,
            ProblemKind::Malformed,
            ProblemKind::Invalid,
        ],
    };
    prop_assert!(allowed.contains(&problem.kind), "{problem:?}");
    prop_assert!(problem.kind.status().is_client_error());
    prop_assert!(!problem.detail.is_empty());
    if problem.kind == ProblemKind::Invalid {
        prop_assert!(!problem.errors.is_empty(), "a 422 names no field");
        for e in &problem.errors {
            prop_assert!(!e.message.is_empty(), "{e:?}");
        }
    } else {
        prop_assert!(problem.errors.is_empty());
    }
    let json = problem.document("req_fuzz").to_string();
    let back: Value = serde_json::from_str(&json).expect("problem JSON");
    prop_assert_eq!(
        back["status"].as_u64(),
        Some(u64::from(problem.kind.status().as_u16()))
    );
    let text = problem_xml(problem);
    let bad = text.chars().find(|c| !is_xml_char(*c));
    prop_assert!(
        bad.is_none(),
        "problem+xml carries {bad:?}, not an XML character: {text:?}"
    );
    let (root, _) = xml::read_tree(text.as_bytes()).expect("problem XML reads back");
    prop_assert_eq!(root, "problem");
    Ok(())
}

/// True when XML can carry every string of `v` as it is: no control
/// character (XML readers normalize a raw CR) and nothing XML 1.0 forbids
/// (U+FFFE and U+FFFF, which the writer replaces with U+FFFD, making it
/// another request).
fn xml_safe(v: &Value) -> bool {
    match v {
        Value::String(s) => s.chars().all(|c| is_xml_char(c) && !c.is_control()),
        Value::Array(items) => items.iter().all(xml_safe),
        Value::Object(m) => m.values().all(xml_safe),
        _ => true,
    }
}

/// A valid request's canonical form parses back to itself, in JSON and (when
/// XML can carry its text) in XML, with the same hash.
pub fn check_canonical(request: &HandoffRequest) -> Result<(), TestCaseError> {
    let canonical = request.canonical_json();
    let again = HandoffRequest::parse(&canonical, Origin::Json, &rules())
        .map_err(|e| TestCaseError::fail(format!("canonical form refused: {e:?}")))?;
    prop_assert_eq!(&again, request);
    prop_assert_eq!(again.canonical_sha256(), request.canonical_sha256());
    if xml_safe(&canonical) {
        let body = xml::write_document("handoff", &canonical, |_| "item");
        let from_xml = parse_request(Format::Xml, body.as_bytes(), &rules())
            .map_err(|p| TestCaseError::fail(format!("XML form refused: {p:?}")))?;
        prop_assert_eq!(from_xml.canonical_sha256(), request.canonical_sha256());
    }
    Ok(())
}

/// Parses a body and checks whatever comes out, in bounded time.
pub fn check_body(format: Format, bytes: &[u8]) -> Result<Option<HandoffRequest>, TestCaseError> {
    let started = Instant::now();
    let outcome = parse_request(format, bytes, &rules());
    let took = started.elapsed();
    prop_assert!(took < SLOW, "{} bytes took {took:?}", bytes.len());
    match outcome {
        Ok(request) => {
            check_canonical(&request)?;
            Ok(Some(request))
        }
        Err(problem) => {
            check_problem(&problem, format)?;
            Ok(None)
        }
    }
}

fn strings_are_xml(v: &Value) -> bool {
    match v {
        Value::String(s) => s.chars().all(is_xml_char),
        Value::Array(items) => items.iter().all(strings_are_xml),
        Value::Object(m) => m
            .iter()
            .all(|(k, v)| k.chars().all(is_xml_char) && strings_are_xml(v)),
        _ => true,
    }
}

/// The XML tree is never much larger than the document (no entity
/// expansion) and holds only characters XML allows.
fn check_xml_tree(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok((_, tree)) = xml::read_tree(bytes) {
        let size = tree.to_string().len();
        prop_assert!(
            size <= 4 * bytes.len() + 64,
            "{} bytes became a tree of {size}",
            bytes.len()
        );
        prop_assert!(strings_are_xml(&tree), "{tree}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(hostile::config(2048))]

    #[test]
    fn arbitrary_bytes_as_json_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_body(Format::Json, &bytes)?;
    }

    #[test]
    fn arbitrary_bytes_as_xml_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_body(Format::Xml, &bytes)?;
        check_xml_tree(&bytes)?;
    }

    #[test]
    fn mutated_json_fixtures_fail_cleanly_or_canonicalize(bytes in hostile::mutated_json()) {
        check_body(Format::Json, &bytes)?;
    }

    #[test]
    fn mutated_xml_fixtures_fail_cleanly_or_canonicalize(bytes in hostile::mutated_xml()) {
        check_body(Format::Xml, &bytes)?;
        check_xml_tree(&bytes)?;
    }
}

proptest! {
    #![proptest_config(hostile::config(1024))]

    /// Fields replaced by hostile values: JSON and its XML rendering agree on
    /// whether the request is valid when JSON accepts it.
    #[test]
    fn structurally_mutated_requests_fail_cleanly_in_both_formats(doc in hostile::mutated_tree()) {
        let json = check_body(Format::Json, doc.to_string().as_bytes())?;
        let body = xml::write_document("handoff", &doc, |_| "item");
        let from_xml = check_body(Format::Xml, body.as_bytes())?;
        if let Some(request) = json
            && xml_safe(&doc)
        {
            let from_xml = from_xml.ok_or_else(|| TestCaseError::fail("JSON accepted, XML refused"))?;
            prop_assert_eq!(from_xml.canonical_sha256(), request.canonical_sha256());
        }
    }

    #[test]
    fn huge_numbers_in_numeric_fields_are_refused_naming_the_field(
        number in hostile::huge_number(),
        field in prop::sample::select(vec!["parcel.weight_grams", "cod_amount_vnd"]),
    ) {
        let mut doc = hostile::valid_json_trees().remove(0);
        let (parent, key) = field.rsplit_once('.').map_or((None, field), |(p, k)| (Some(p), k));
        let slot = match parent {
            Some(p) => &mut doc[p][key],
            None => &mut doc[key],
        };
        *slot = Value::String("__N__".into());
        let json = doc.to_string().replace("\"__N__\"", &number);
        let xml_body = xml::write_document("handoff", &doc, |_| "item").replace("__N__", &number);
        for (format, bytes) in [(Format::Json, json.into_bytes()), (Format::Xml, xml_body.into_bytes())] {
            match parse_request(format, &bytes, &rules()) {
                Ok(r) => prop_assert!(r.parcel.weight_grams <= 30_000 && r.cod_amount_vnd <= 100_000_000),
                Err(p) if p.kind == ProblemKind::Invalid => {
                    prop_assert!(p.errors.iter().any(|e| e.field == field), "{p:?}");
                }
                // serde_json cannot represent a number beyond f64's range.
                Err(p) => prop_assert!(format == Format::Json && p.kind == ProblemKind::Malformed, "{p:?}"),
            }
        }
    }
}

proptest! {
    #![proptest_config(hostile::config(64))]

    #[test]
    fn deep_nesting_is_refused_quickly(depth in 1usize..50_000, xml in any::<bool>(), object in any::<bool>()) {
        let bytes = hostile::nested(depth, xml, object);
        let format = if xml { Format::Xml } else { Format::Json };
        let outcome = check_body(format, &bytes)?;
        prop_assert!(outcome.is_none());
    }

    #[test]
    fn entity_expansion_is_refused_as_malformed(levels in 1usize..12, width in 1usize..12, parameter in any::<bool>()) {
        let bytes = hostile::laughs(levels, width, parameter);
        let problem = parse_request(Format::Xml, &bytes, &rules()).expect_err("a DTD is refused");
        prop_assert_eq!(problem.kind, ProblemKind::Malformed);
        check_problem(&problem, Format::Xml)?;
    }
}

#[test]
fn invalid_utf8_is_malformed_and_other_encodings_are_415() {
    let latin1 =
        b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><handoff><kind>Nguy\xeAn</kind></handoff>";
    let p = parse_request(Format::Xml, latin1, &rules()).unwrap_err();
    assert_eq!(p.kind, ProblemKind::UnsupportedMediaType);
    for bytes in [
        &b"<handoff><kind>\xff</kind></handoff>"[..],
        b"{\"kind\": \"\xc3\x28\"}",
    ] {
        let format = if bytes[0] == b'<' {
            Format::Xml
        } else {
            Format::Json
        };
        let p = parse_request(format, bytes, &rules()).unwrap_err();
        assert_eq!(p.kind, ProblemKind::Malformed, "{p:?}");
    }
}

/// Found by fuzzing (CI, 2026-12-03): JSON may carry U+FFFE in a text
/// field, XML cannot; the XML rendering of that request is another request
/// (U+FFFD in its place), so the two must not be compared, and each must
/// still be read cleanly.
#[test]
fn a_noncharacter_json_accepts_is_not_an_xml_request() {
    let mut doc = hostile::valid_json_trees().remove(0);
    doc["citizen"]["address"]["line"] = Value::String("\u{fffe}".into());
    assert!(!xml_safe(&doc));
    let json = check_body(Format::Json, doc.to_string().as_bytes()).expect("JSON read cleanly");
    let body = xml::write_document("handoff", &doc, |_| "item");
    assert!(
        !body.contains('\u{fffe}'),
        "the XML writer replaced it: {body}"
    );
    let from_xml = check_body(Format::Xml, body.as_bytes()).expect("XML read cleanly");
    if let (Some(json), Some(from_xml)) = (json, from_xml) {
        assert_ne!(json.canonical_sha256(), from_xml.canonical_sha256());
    }
}

/// XML 1.0 forbids most C0 controls, raw or as character references.
#[test]
fn characters_xml_forbids_are_malformed() {
    for doc in [
        &b"<handoff><kind>re\x01turn</kind></handoff>"[..],
        b"<handoff><kind>re&#1;turn</kind></handoff>",
        b"<handoff><kind>re&#x0;turn</kind></handoff>",
        b"<handoff><kind>re&#xFFFE;turn</kind></handoff>",
        b"<handoff><kind a=\"&#1;\">return</kind></handoff>",
        b"<handoff><k\x01ind>return</k\x01ind></handoff>",
    ] {
        let p = parse_request(Format::Xml, doc, &rules()).unwrap_err();
        assert_eq!(
            p.kind,
            ProblemKind::Malformed,
            "{}: {p:?}",
            String::from_utf8_lossy(doc)
        );
    }
}
