//! Extractors every handler shares: the answer's format, the query
//! parameters with the shared paging rules, and a JSON-or-XML body read
//! within its limit (415, 413, 400 in the contract's order).

use std::convert::Infallible;
use std::marker::PhantomData;

use axum::extract::{FromRef, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header;
use axum::http::request::Parts;
use bytes::Bytes;
use serde_json::{Value, json};

use super::negotiate::{self, BodyType, Format};
use super::problem::{Problem, ProblemKind};
use super::xml;
use crate::domain::request::Origin;
use crate::domain::{FieldError, HandoffId};

/// The format an answer takes: an XML request is answered in XML unless
/// `Accept` prefers JSON; any other request in XML only when `Accept`
/// prefers XML.
#[derive(Debug, Clone, Copy)]
pub struct AnswerFormat(pub Format);

impl<S: Send + Sync> FromRequestParts<S> for AnswerFormat {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(negotiate::reply_format(&parts.headers)))
    }
}

/// The handoff a path names (`/…/{id}/…`); an id this gateway cannot have
/// given out is a 404 like an unknown one.
#[derive(Debug, Clone)]
pub struct HandoffPath(pub HandoffId);

impl<S: Send + Sync> FromRequestParts<S> for HandoffPath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::not_found("handoff"))?;
        let id = HandoffId::parse(&raw).ok_or_else(|| Problem::not_found("handoff"))?;
        tracing::Span::current().record("handoff_id", id.as_str());
        Ok(Self(id))
    }
}

/// Most items a list answers with.
const MAX_LIMIT: u32 = 100;
const DEFAULT_LIMIT: u32 = 50;

/// The query parameters, in order.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Query(params) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::new(ProblemKind::Malformed, "the query string is malformed"))?;
        Ok(Self(params))
    }
}

impl Params {
    /// A parameter as sent.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A parameter trimmed, empty meaning absent.
    pub fn get(&self, name: &str) -> Option<String> {
        self.raw(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// The page size (`limit`, 1 to 100, default 50), a bad one named in
    /// `errors`.
    pub fn limit(&self, errors: &mut Vec<FieldError>) -> u32 {
        match self.raw("limit") {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    errors.push(FieldError::new(
                        "limit",
                        format!("must be an integer from 1 to {MAX_LIMIT}"),
                    ));
                    DEFAULT_LIMIT
                }
            },
        }
    }

    /// The page size and a handoff cursor (`cursor`: a handoff id this
    /// gateway gave out).
    pub fn paging(&self, errors: &mut Vec<FieldError>) -> (u32, Option<String>) {
        let limit = self.limit(errors);
        let cursor = self.cursor(errors, |c| HandoffId::parse(c).is_some());
        (limit, cursor)
    }

    /// The `cursor`, when `valid` says this gateway could have given it out.
    pub fn cursor(
        &self,
        errors: &mut Vec<FieldError>,
        valid: impl Fn(&str) -> bool,
    ) -> Option<String> {
        match self.raw("cursor").filter(|c| !c.is_empty()) {
            None => None,
            Some(raw) if valid(raw) => Some(raw.to_owned()),
            Some(_) => {
                errors.push(FieldError::new(
                    "cursor",
                    "is not a cursor this gateway gave out",
                ));
                None
            }
        }
    }
}

/// The most bytes a request body may have (`server.max_body_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Which body formats a route takes.
pub trait Formats: Send + Sync {
    const XML: bool;
    /// The 415's detail.
    const EXPECTED: &'static str;
}

/// JSON or XML (the intake API).
pub struct JsonOrXml;

impl Formats for JsonOrXml {
    const XML: bool = true;
    const EXPECTED: &'static str = "send application/json or application/xml (UTF-8)";
}

/// JSON only (the admin API).
pub struct JsonOnly;

impl Formats for JsonOnly {
    const XML: bool = false;
    const EXPECTED: &'static str = "send application/json";
}

/// A request body in a format the route takes, read within the body limit:
/// 415 for another media type, 413 for a larger body (declared or read).
pub struct Payload<F: Formats = JsonOrXml> {
    pub format: Format,
    pub bytes: Bytes,
    formats: PhantomData<F>,
}

impl<S, F> FromRequest<S> for Payload<F>
where
    S: Send + Sync,
    F: Formats,
    BodyLimit: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let BodyLimit(limit) = BodyLimit::from_ref(state);
        let format = match negotiate::body_type(request.headers()) {
            BodyType::Supported(Format::Json) => Format::Json,
            BodyType::Supported(Format::Xml) if F::XML => Format::Xml,
            _ => {
                return Err(Problem::new(ProblemKind::UnsupportedMediaType, F::EXPECTED));
            }
        };
        let too_large = || {
            Problem::new(
                ProblemKind::TooLarge,
                format!("the body exceeds {limit} bytes"),
            )
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|e| {
                let over = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                if over {
                    too_large()
                } else {
                    Problem::new(ProblemKind::Malformed, "the body could not be read")
                }
            })?;
        tracing::debug!(
            format = format.label(),
            bytes = bytes.len(),
            "request body read"
        );
        Ok(Self {
            format,
            bytes,
            formats: PhantomData,
        })
    }
}

impl<F: Formats> Payload<F> {
    /// The body as the neutral tree validation works on; an XML body's root
    /// must be `xml_root`.
    pub fn tree(&self, xml_root: &str) -> Result<(Value, Origin), Problem> {
        read_tree(self.format, &self.bytes, xml_root)
    }
}

/// Reads a body in `format` into the neutral tree validation works on (400
/// when it is not well-formed; 415 for XML in another encoding).
pub fn read_tree(format: Format, bytes: &[u8], xml_root: &str) -> Result<(Value, Origin), Problem> {
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
            if root != xml_root {
                return Err(Problem::field(
                    &root,
                    &format!("the root element must be <{xml_root}>"),
                ));
            }
            // `<handoff/>` is an empty request: every required field is missing.
            let tree = if tree.is_null() { json!({}) } else { tree };
            Ok((tree, Origin::Xml))
        }
    }
}
