//! A request body read into a valid handoff request, or into the problem
//! that answers it (intake-api.md, "Errors": 415, 400, 422).

use serde_json::Value;

use crate::domain::request::Origin;
use crate::domain::{HandoffRequest, RequestRules};
use crate::http::extract::read_tree;
use crate::http::{Format, Problem};

/// The `kind` label of `bcci_handoffs_received_total` for a tree.
pub fn kind_label(tree: &Value) -> &'static str {
    match tree.get("kind").and_then(Value::as_str) {
        Some("pickup") => "pickup",
        Some("return") => "return",
        _ => "unknown",
    }
}

/// Validates a tree; a 422 names every bad field.
pub fn parse_tree(
    tree: &Value,
    origin: Origin,
    rules: &RequestRules,
) -> Result<HandoffRequest, Problem> {
    HandoffRequest::parse(tree, origin, rules).map_err(|errors| {
        // Field names only: values may be personal data.
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        tracing::debug!(?fields, "request invalid");
        Problem::invalid(errors)
    })
}

/// A whole body to a valid request: what `POST /v1/handoffs` does after the
/// headers are checked.
pub fn parse_request(
    format: Format,
    bytes: &[u8],
    rules: &RequestRules,
) -> Result<HandoffRequest, Problem> {
    let (tree, origin) = read_tree(format, bytes, "handoff")?;
    parse_tree(&tree, origin, rules)
}
