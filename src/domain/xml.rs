//! Writing XML documents from JSON values, so both formats carry exactly the
//! same fields (answers, problem documents, callbacks).

use quick_xml::escape::escape;
use serde_json::Value;

/// Names the element of each item of a list, by the list's own element name.
pub type ItemName = fn(&str) -> &'static str;

/// Writes `value` as an XML document with root `root`: nulls are omitted,
/// arrays are wrapped (`<timeline><event>…</event></timeline>`).
pub fn write_document(root: &str, value: &Value, item_name: ItemName) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    write_element(&mut out, root, value, item_name, None);
    out.push('\n');
    out
}

/// As [`write_document`] with a default namespace on the root.
pub fn write_document_ns(root: &str, ns: &str, value: &Value, item_name: ItemName) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    write_element(&mut out, root, value, item_name, Some(ns));
    out.push('\n');
    out
}

fn write_element(
    out: &mut String,
    name: &str,
    value: &Value,
    item_name: ItemName,
    ns: Option<&str>,
) {
    if value.is_null() {
        return;
    }
    out.push('<');
    out.push_str(name);
    if let Some(ns) = ns {
        out.push_str(" xmlns=\"");
        out.push_str(&escape(ns));
        out.push('"');
    }
    out.push('>');
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                write_element(out, k, v, item_name, None);
            }
        }
        Value::Array(items) => {
            let item = item_name(name);
            for v in items {
                write_element(out, item, v, item_name, None);
            }
        }
        Value::String(s) => push_text(out, s),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Null => {}
    }
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// True for the characters XML 1.0 allows in a document.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escaped text; characters XML 1.0 cannot carry even escaped (most C0
/// controls, U+FFFE, U+FFFF) become U+FFFD, so the document stays
/// well-formed whatever text it holds (a carrier's status name, an echoed
/// element name in a problem's detail).
fn push_text(out: &mut String, s: &str) {
    if s.chars().all(is_xml_char) {
        out.push_str(&escape(s));
    } else {
        let clean: String = s
            .chars()
            .map(|c| if is_xml_char(c) { c } else { '\u{FFFD}' })
            .collect();
        out.push_str(&escape(clean.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Found by fuzzing: a NUL echoed in a problem's detail made the
    /// problem+xml answer not well-formed.
    #[test]
    fn characters_xml_cannot_carry_are_replaced() {
        let doc = write_document("e", &json!({"t": "a\u{0}b\u{1}c\u{FFFE}<&>é"}), |_| "item");
        assert!(doc.chars().all(is_xml_char), "{doc:?}");
        assert!(
            doc.contains("<t>a\u{FFFD}b\u{FFFD}c\u{FFFD}&lt;&amp;&gt;é</t>"),
            "{doc}"
        );
    }
}
