//! A request body read into a valid handoff request, or into the problem
//! that answers it (intake-api.md, "Errors": 415, 400, 422).

use serde_json::{Value, json};

use super::negotiate::Format;
use super::problem::{Problem, ProblemKind};
use super::xml;
use crate::domain::request::Origin;
use crate::domain::{HandoffRequest, RequestRules};

/// Reads a body in `format` into the neutral tree validation works on.
pub fn read_tree(format: Format, bytes: &[u8]) -> Result<(Value, Origin), Problem> {
    match format {
        Format::Json => {
            let tree: Value = serde_json::from_slice(bytes).map_err(|e| {
                Problem::new(ProblemKind::Malformed, format!("not well-formed JSON: {e}"))
            })?;
            Ok((tree, Origin::Json))
        }
        Format::Xml => {
            let (root, tree) = xml::read_tree(bytes).map_err(|e| match e {
                xml::XmlError::Encoding(m) => Problem::new(
                    ProblemKind::UnsupportedMediaType,
                    format!("XML must be encoded in UTF-8 ({m})"),
                ),
                xml::XmlError::Malformed(m) => Problem::new(ProblemKind::Malformed, m),
            })?;
            if root != "handoff" {
                return Err(Problem::field(&root, "the root element must be <handoff>"));
            }
            // `<handoff/>` is an empty request: every required field is missing.
            let tree = if tree.is_null() { json!({}) } else { tree };
            Ok((tree, Origin::Xml))
        }
    }
}

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
    let (tree, origin) = read_tree(format, bytes)?;
    parse_tree(&tree, origin, rules)
}
