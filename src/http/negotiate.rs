//! Which format a request is in and which one its answer should take.

use axum::http::{HeaderMap, HeaderValue, header};

/// A body format of the intake API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    /// The `format` label of `bcci_handoffs_received_total`.
    pub fn label(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Xml => "xml",
        }
    }
}

/// What the `Content-Type` of a request body says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    Supported(Format),
    /// Another media type, a missing one, or a charset other than UTF-8.
    Unsupported,
}

/// Classifies the `Content-Type` of a request.
pub fn body_type(headers: &HeaderMap) -> BodyType {
    content_type(headers.get(header::CONTENT_TYPE))
}

fn content_type(value: Option<&HeaderValue>) -> BodyType {
    let Some(raw) = value.and_then(|v| v.to_str().ok()) else {
        return BodyType::Unsupported;
    };
    let Ok(mime) = raw.parse::<mime::Mime>() else {
        return BodyType::Unsupported;
    };
    let charset_ok = mime
        .get_param(mime::CHARSET)
        .is_none_or(|c| c.as_str().eq_ignore_ascii_case("utf-8"));
    if !charset_ok {
        return BodyType::Unsupported;
    }
    match (mime.type_().as_str(), mime.subtype().as_str()) {
        ("application", "json") => BodyType::Supported(Format::Json),
        ("application" | "text", "xml") => BodyType::Supported(Format::Xml),
        _ => BodyType::Unsupported,
    }
}

/// The format a request *looks* like it is in, for labels and error answers.
pub fn request_format(headers: &HeaderMap) -> Format {
    looks_like(body_type(headers))
}

fn looks_like(body: BodyType) -> Format {
    match body {
        BodyType::Supported(f) => f,
        BodyType::Unsupported => Format::Json,
    }
}

/// The format every answer to a request takes, problems included: the
/// request's own format's, as `answer_format` rules.
pub fn reply_format(headers: &HeaderMap) -> Format {
    Negotiation::of(headers).reply_format()
}

/// What a request says of formats (`Content-Type`, `Accept`), kept past the
/// request (cloning a header value copies no bytes), so the reply format is
/// worked out only when it is needed.
#[derive(Debug, Clone, Default)]
pub struct Negotiation {
    content_type: Option<HeaderValue>,
    accept: Option<HeaderValue>,
}

impl Negotiation {
    pub fn of(headers: &HeaderMap) -> Self {
        Self {
            content_type: headers.get(header::CONTENT_TYPE).cloned(),
            accept: headers.get(header::ACCEPT).cloned(),
        }
    }

    /// See [`reply_format`].
    pub fn reply_format(&self) -> Format {
        let request = looks_like(content_type(self.content_type.as_ref()));
        choose(accept_q(self.accept.as_ref()), Some(request))
    }
}

/// Explicit preference (q) of JSON and XML in an `Accept` header.
fn accept_q(value: Option<&HeaderValue>) -> Option<(f32, f32)> {
    let accept = value?.to_str().ok()?;
    let (mut json, mut xml) = (0.0f32, 0.0f32);
    for part in accept.split(',') {
        let mut pieces = part.split(';');
        let media = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = pieces
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/json" | "application/problem+json" => json = json.max(q),
            "application/xml" | "text/xml" | "application/problem+xml" => xml = xml.max(q),
            // Wildcards express no preference: the default format stands.
            _ => {}
        }
    }
    Some((json, xml))
}

/// An XML request is answered in XML unless `Accept` prefers JSON; any other
/// request in XML only when `Accept` prefers XML.
pub fn answer_format(headers: &HeaderMap, request: Option<Format>) -> Format {
    choose(accept_q(headers.get(header::ACCEPT)), request)
}

fn choose(q: Option<(f32, f32)>, request: Option<Format>) -> Format {
    match (request, q) {
        (Some(Format::Xml), Some((json, xml))) if json > xml => Format::Json,
        (Some(Format::Xml), _) => Format::Xml,
        (_, Some((json, xml))) if xml > json => Format::Xml,
        _ => Format::Json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn content_types_of_the_contract_are_recognized() {
        for (ct, want) in [
            ("application/json", BodyType::Supported(Format::Json)),
            (
                "application/json; charset=UTF-8",
                BodyType::Supported(Format::Json),
            ),
            ("application/xml", BodyType::Supported(Format::Xml)),
            ("text/xml; charset=utf-8", BodyType::Supported(Format::Xml)),
            ("text/xml; charset=iso-8859-1", BodyType::Unsupported),
            ("text/plain", BodyType::Unsupported),
            ("application/x-www-form-urlencoded", BodyType::Unsupported),
        ] {
            assert_eq!(
                body_type(&headers(&[(header::CONTENT_TYPE, ct)])),
                want,
                "{ct}"
            );
        }
        assert_eq!(body_type(&HeaderMap::new()), BodyType::Unsupported);
    }

    #[test]
    fn xml_requests_get_xml_unless_json_is_asked_for() {
        let none = HeaderMap::new();
        assert_eq!(answer_format(&none, Some(Format::Xml)), Format::Xml);
        let json = headers(&[(header::ACCEPT, "application/json")]);
        assert_eq!(answer_format(&json, Some(Format::Xml)), Format::Json);
        let any = headers(&[(header::ACCEPT, "*/*")]);
        assert_eq!(answer_format(&any, Some(Format::Xml)), Format::Xml);
        assert_eq!(answer_format(&any, None), Format::Json);
        let xml = headers(&[(header::ACCEPT, "application/xml")]);
        assert_eq!(answer_format(&xml, None), Format::Xml);
        assert_eq!(answer_format(&none, None), Format::Json);
    }
}
