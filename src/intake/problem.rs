//! RFC 9457 problem documents, as JSON or XML.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::xml;
use crate::domain::FieldError;

/// The contract's problem types, in the order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    Unavailable,
    Unauthorized,
    RateLimited,
    UnsupportedMediaType,
    TooLarge,
    Malformed,
    Invalid,
    Conflict,
    NotFound,
}

impl ProblemKind {
    pub fn status(self) -> StatusCode {
        match self {
            ProblemKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProblemKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ProblemKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProblemKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemKind::Malformed => StatusCode::BAD_REQUEST,
            ProblemKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            ProblemKind::Conflict => StatusCode::CONFLICT,
            ProblemKind::NotFound => StatusCode::NOT_FOUND,
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            ProblemKind::Unavailable => "unavailable",
            ProblemKind::Unauthorized => "unauthorized",
            ProblemKind::RateLimited => "rate-limited",
            ProblemKind::UnsupportedMediaType => "unsupported-media-type",
            ProblemKind::TooLarge => "too-large",
            ProblemKind::Malformed => "malformed",
            ProblemKind::Invalid => "invalid",
            ProblemKind::Conflict => "conflict",
            ProblemKind::NotFound => "not-found",
        }
    }

    fn title(self) -> &'static str {
        match self {
            ProblemKind::Unavailable => "The gateway is not accepting requests right now",
            ProblemKind::Unauthorized => "Missing or unknown credentials",
            ProblemKind::RateLimited => "Too many requests",
            ProblemKind::UnsupportedMediaType => "Unsupported media type",
            ProblemKind::TooLarge => "Request body too large",
            ProblemKind::Malformed => "Malformed request body",
            ProblemKind::Invalid => "The request is invalid",
            ProblemKind::Conflict => "Conflict",
            ProblemKind::NotFound => "Not found",
        }
    }

    /// The `outcome` label of `bcci_handoffs_received_total`.
    pub fn outcome(self) -> &'static str {
        match self {
            ProblemKind::Unavailable => "draining",
            ProblemKind::Unauthorized => "unauthorized",
            ProblemKind::RateLimited => "rate_limited",
            ProblemKind::UnsupportedMediaType => "unsupported_media_type",
            ProblemKind::TooLarge => "too_large",
            ProblemKind::Malformed => "malformed",
            ProblemKind::Invalid => "invalid",
            ProblemKind::Conflict => "conflict",
            ProblemKind::NotFound => "not_found",
        }
    }
}

/// A problem to answer with.
#[derive(Debug, Clone)]
pub struct Problem {
    pub kind: ProblemKind,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub retry_after_s: Option<u64>,
}

impl Problem {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_s: None,
        }
    }

    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = match errors.len() {
            1 => "1 field is invalid".to_owned(),
            n => format!("{n} fields are invalid"),
        };
        Self {
            errors,
            ..Self::new(ProblemKind::Invalid, detail)
        }
    }

    pub fn field(field: &str, message: &str) -> Self {
        Self::invalid(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds.max(1));
        self
    }

    /// The document as JSON (also the source of the XML form).
    pub fn document(&self, instance: &str) -> serde_json::Value {
        json!({
            "type": format!("urn:bcci:problem:{}", self.kind.slug()),
            "title": self.kind.title(),
            "status": self.kind.status().as_u16(),
            "detail": self.detail,
            "instance": instance,
            "errors": self.errors,
        })
    }

    /// Renders the answer in the negotiated format.
    pub fn render(&self, instance: &str, as_xml: bool) -> Response {
        let doc = self.document(instance);
        let (content_type, body) = if as_xml {
            (
                "application/problem+xml",
                xml::write_document_ns("problem", "urn:ietf:rfc:7807", &doc, item_name),
            )
        } else {
            ("application/problem+json", doc.to_string())
        };
        let mut response = (self.kind.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(s) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

fn item_name(list: &str) -> &'static str {
    match list {
        "errors" => "error",
        _ => "item",
    }
}
