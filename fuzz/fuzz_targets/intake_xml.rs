//! POST /v1/handoffs bodies as XML: a valid request or a 4xx problem, the
//! tree never much larger than the document (no entity expansion).
#![no_main]

use bcci_gateway::domain::RequestRules;
use bcci_gateway::intake::body::parse_request;
use bcci_gateway::http::negotiate::Format;
use bcci_gateway::http::problem::ProblemKind;
use bcci_gateway::http::xml;
use libfuzzer_sys::fuzz_target;

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fuzz_target!(|data: &[u8]| {
    if let Ok((_, tree)) = xml::read_tree(data) {
        assert!(tree.to_string().len() <= 4 * data.len() + 64, "the tree outgrew the document");
    }
    let rules = RequestRules {
        service_codes: vec!["CTN009".into(), "ETN011".into(), "ETN013".into()],
        pickup_fees_allowed: false,
    };
    if let Err(p) = parse_request(Format::Xml, data, &rules) {
        assert!(
            matches!(
                p.kind,
                ProblemKind::UnsupportedMediaType | ProblemKind::Malformed | ProblemKind::Invalid
            ),
            "{p:?}"
        );
        let doc = p.document("req_fuzz");
        let text = xml::write_document_ns("problem", "urn:ietf:rfc:7807", &doc, |_| "error");
        assert!(text.chars().all(is_xml_char), "problem+xml is not XML: {text:?}");
    }
});
