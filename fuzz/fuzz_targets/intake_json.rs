//! POST /v1/handoffs bodies as JSON: a valid request or a 4xx problem.
#![no_main]

use bcci_gateway::domain::request::Origin;
use bcci_gateway::domain::{HandoffRequest, RequestRules};
use bcci_gateway::intake::body::parse_request;
use bcci_gateway::http::negotiate::Format;
use bcci_gateway::http::problem::ProblemKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rules = RequestRules {
        service_codes: vec!["CTN009".into(), "ETN011".into(), "ETN013".into()],
        pickup_fees_allowed: false,
    };
    match parse_request(Format::Json, data, &rules) {
        Ok(request) => {
            let again = HandoffRequest::parse(&request.canonical_json(), Origin::Json, &rules)
                .expect("the canonical form parses");
            assert_eq!(again, request, "canonicalization is idempotent");
        }
        Err(p) => {
            assert!(matches!(p.kind, ProblemKind::Malformed | ProblemKind::Invalid), "{p:?}");
            assert!(p.kind != ProblemKind::Invalid || !p.errors.is_empty());
        }
    }
});
