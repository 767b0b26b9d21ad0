//! The gateway's own pages: the desk's console on the admin listener
//! (`/console`) and the public board of the desk's figures on the main
//! listener (`/board`).
//!
//! Server-rendered HTML (maud: checked at compile time, escaped by default),
//! Vietnamese by default with an English switch, no script at all: every
//! page sends a Content-Security-Policy that allows none.

pub mod board;
pub mod chart;
pub mod console;
mod session;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::domain::time::vietnam;
use crate::domain::{Kind, Status};

/// The pages' language: Vietnamese unless the reader chose English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Vi,
    En,
}

/// The cookie that remembers the reader's language.
const LANG_COOKIE: &str = "bcci_lang";

impl Lang {
    /// The text in this language.
    pub fn pick(self, vi: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Vi => vi,
            Lang::En => en,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Vi => "vi",
            Lang::En => "en",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "vi" => Some(Lang::Vi),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// `?lang=` chosen on this request, if any.
    fn chosen(query: Option<&str>) -> Option<Self> {
        query?
            .split('&')
            .filter_map(|pair| pair.strip_prefix("lang="))
            .find_map(Lang::parse)
    }

    /// The request's language: `?lang=`, else the cookie, else Vietnamese.
    pub fn of(parts: &Parts) -> Self {
        Lang::chosen(parts.uri.query())
            .or_else(|| cookie(&parts.headers, LANG_COOKIE).and_then(Lang::parse))
            .unwrap_or(Lang::Vi)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Lang::of(parts))
    }
}

/// The page a GET request asked for, as the language switch leads back to
/// it: the path and the query the reader gave, without `lang` and without
/// an action's one-time `done` notice.
pub struct Here(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Here {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let kept: Vec<&str> = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|pair| {
                !pair.is_empty() && !pair.starts_with("lang=") && !pair.starts_with("done=")
            })
            .collect();
        let path = parts.uri.path();
        Ok(Here(if kept.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", kept.join("&"))
        }))
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// What every page answers with: a strict policy that allows no script, no
/// framing and no foreign resource; nothing cached (the console shows
/// personal data); the language remembered when `?lang=` chose it.
pub async fn page_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let chosen = Lang::chosen(request.uri().query());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if let Some(lang) = chosen {
        let value = format!(
            "{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax",
            lang.code()
        );
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

/// The pages' one stylesheet (no inline style: the policy forbids it).
pub const STYLE: &str = include_str!("style.css");

/// `GET …/style.css`.
pub async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

/// A whole page around `body`.
pub struct Frame<'a> {
    pub lang: Lang,
    pub title: &'a str,
    /// Where the stylesheet is served (`/console/style.css`, `/board/style.css`).
    pub style: &'a str,
    /// The `<body>` class (`console`, `board`, `kiosk`).
    pub class: &'a str,
    /// Seconds after which the page reloads itself (the kiosk).
    pub refresh_s: Option<u32>,
    /// Where the language switch leads: this page ([`Here`]).
    pub here: &'a str,
}

impl Frame<'_> {
    pub fn render(&self, header: Markup, body: Markup) -> Markup {
        let other = match self.lang {
            Lang::Vi => Lang::En,
            Lang::En => Lang::Vi,
        };
        html! {
            (DOCTYPE)
            html lang=(self.lang.code()) {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    @if let Some(s) = self.refresh_s {
                        meta http-equiv="refresh" content=(s);
                    }
                    title { (self.title) }
                    link rel="stylesheet" href=(self.style);
                }
                body class=(self.class) {
                    header.top {
                        (header)
                        a.lang href={ (self.here) @if self.here.contains('?') { "&" } @else { "?" } "lang=" (other.code()) } lang=(other.code()) {
                            (other.pick("Tiếng Việt", "English"))
                        }
                    }
                    main { (body) }
                }
            }
        }
    }
}

/// A time as the desk reads it: Vietnam time, `dd/mm/yyyy hh:mm`.
pub fn when(ts: jiff::Timestamp) -> String {
    ts.to_zoned(vietnam())
        .strftime("%d/%m/%Y %H:%M")
        .to_string()
}

/// A handoff's kind in words.
pub fn kind_name(lang: Lang, kind: Kind) -> &'static str {
    match kind {
        Kind::Pickup => lang.pick("Thu gom hồ sơ", "Dossier pickup"),
        Kind::Return => lang.pick("Trả kết quả", "Result return"),
    }
}

/// A handoff's status in words.
pub fn status_name(lang: Lang, status: Status) -> &'static str {
    use Status::*;
    match status {
        Received => lang.pick("Đã tiếp nhận", "Received"),
        OrderCreated => lang.pick("Đã tạo đơn bưu chính", "Postal order created"),
        PickingUp => lang.pick("Đang đi thu gom", "Picking up"),
        PickupAttemptFailed => lang.pick("Thu gom không thành công", "Pickup attempt failed"),
        PickedUp => lang.pick("Đã thu gom", "Picked up"),
        InTransit => lang.pick("Đang vận chuyển", "In transit"),
        OutForDelivery => lang.pick("Đang phát", "Out for delivery"),
        DeliveryAttemptFailed => lang.pick("Phát không thành công", "Delivery attempt failed"),
        Returning => lang.pick("Đang chuyển hoàn", "Returning"),
        Delivered => lang.pick("Đã phát", "Delivered"),
        Returned => lang.pick("Đã chuyển hoàn", "Returned"),
        PartiallyDelivered => lang.pick("Phát một phần", "Partially delivered"),
        PickupFailed => lang.pick("Không thu gom được", "Pickup failed"),
        Cancelled => lang.pick("Đã huỷ", "Cancelled"),
        Rejected => lang.pick("Bị từ chối", "Rejected"),
        Failed => lang.pick("Lỗi, chờ xử lý", "Failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_comes_from_the_query_then_the_cookie() {
        let req = axum::http::Request::builder()
            .uri("/board?kiosk=1&lang=en")
            .header(header::COOKIE, "bcci_lang=vi")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        assert_eq!(Lang::of(&parts), Lang::En);
        let req = axum::http::Request::builder()
            .uri("/board")
            .header(header::COOKIE, "a=b; bcci_lang=en")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        assert_eq!(Lang::of(&parts), Lang::En);
        let (parts, ()) = axum::http::Request::builder()
            .uri("/board?lang=fr")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(Lang::of(&parts), Lang::Vi);
    }

    #[test]
    fn times_are_shown_in_vietnam_time() {
        let ts: jiff::Timestamp = "2026-11-27T20:30:00Z".parse().unwrap();
        assert_eq!(when(ts), "28/11/2026 03:30");
    }
}
