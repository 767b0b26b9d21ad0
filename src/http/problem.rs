//! RFC 9457 problem documents, as JSON or XML.
//!
//! A handler returns `Err(Problem)`; `http::problems` renders it with the
//! request's id as `instance`, in the format the request negotiated.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::xml;
use crate::domain::FieldError;
use crate::store::StoreError;

/// Seconds a caller should wait before retrying when the gateway is unavailable.
pub const UNAVAILABLE_RETRY_S: u64 = 5;

/// The contract's problem types, in the order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    Unavailable,
    Unauthorized,
    Forbidden,
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
            ProblemKind::Forbidden => StatusCode::FORBIDDEN,
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
            ProblemKind::Forbidden => "forbidden",
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
            ProblemKind::Forbidden => "Forbidden",
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
            ProblemKind::Forbidden => "forbidden",
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
    /// The store could not be reached: the listener's store health goes down.
    pub store_unreachable: bool,
}

impl Problem {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_s: None,
            store_unreachable: false,
        }
    }

    /// 503: the gateway is draining.
    pub fn draining() -> Self {
        Self::new(ProblemKind::Unavailable, "the gateway is shutting down")
            .retry_after(UNAVAILABLE_RETRY_S)
    }

    /// 503: the store does not answer.
    pub fn store_unavailable() -> Self {
        Self::new(ProblemKind::Unavailable, "the store is unavailable")
            .retry_after(UNAVAILABLE_RETRY_S)
    }

    /// 404 naming what was not found.
    pub fn not_found(what: &str) -> Self {
        Self::new(ProblemKind::NotFound, format!("no such {what}"))
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::Conflict, detail)
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

    /// `Ok` when no field is at fault, else a 422 naming every one.
    pub fn check(errors: Vec<FieldError>) -> Result<(), Self> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Self::invalid(errors))
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
                xml::write_document_ns("problem", "urn:ietf:rfc:7807", &doc, xml::item_name),
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

/// Rendered as JSON without an `instance`; `http::problems` renders it again
/// with the request's id and negotiated format (the problem rides along as
/// a response extension).
impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = self.render("", false);
        response.extensions_mut().insert(self);
        response
    }
}

/// A store failure answers 503; it is logged here, once, with its cause.
impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failed");
        Self {
            store_unreachable: matches!(e, StoreError::Unavailable(_)),
            ..Self::store_unavailable()
        }
    }
}

/// Field errors answer 422, naming every field.
impl From<Vec<FieldError>> for Problem {
    fn from(errors: Vec<FieldError>) -> Self {
        Self::invalid(errors)
    }
}
