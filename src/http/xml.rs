//! XML for the intake API: a strict tree reader (no DTDs, UTF-8 only,
//! bounded depth) and a writer from JSON values, so both formats carry
//! exactly the same fields.

use quick_xml::Reader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use serde_json::{Map, Value};

use crate::domain::xml::is_xml_char;

/// Deeper than any document of the contract; bounds work on hostile input.
const MAX_DEPTH: usize = 16;

/// Why an XML body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Declared or detected in an encoding other than UTF-8 (415).
    #[error("XML must be encoded in UTF-8 ({0})")]
    Encoding(String),
    /// Not well-formed, or a DTD / entity declaration (400).
    #[error("{0}")]
    Malformed(String),
}

struct Open {
    name: String,
    children: Map<String, Value>,
    text: String,
    has_children: bool,
}

/// Reads a document into its root element name and a tree: elements with
/// children become objects, text-only elements strings, empty elements
/// `null`. Attributes appear as `@name` keys and stray text beside child
/// elements as `#text`, so validation names them as unknown fields.
pub fn read_tree(bytes: &[u8]) -> Result<(String, Value), XmlError> {
    if bytes.starts_with(&[0xFE, 0xFF]) || bytes.starts_with(&[0xFF, 0xFE]) {
        return Err(XmlError::Encoding("UTF-16 byte order mark".into()));
    }
    if let Some(enc) = declared_encoding(bytes)
        && !enc.eq_ignore_ascii_case("utf-8")
        && !enc.eq_ignore_ascii_case("utf8")
    {
        return Err(XmlError::Encoding(format!("declared {enc}")));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| XmlError::Malformed(format!("not valid UTF-8: {e}")))?;
    not_xml_char(text)?;
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlError::Malformed(format!("not well-formed XML: {e}")))?;
        match event {
            Event::Decl(decl) => {
                if let Some(enc) = decl.encoding() {
                    let enc = enc.map_err(|e| XmlError::Malformed(e.to_string()))?;
                    if !enc.eq_ignore_ascii_case("utf-8") && !enc.eq_ignore_ascii_case("utf8") {
                        return Err(XmlError::Encoding(format!("declared {enc}")));
                    }
                }
            }
            Event::DocType(_) => {
                return Err(XmlError::Malformed(
                    "DTDs and entity declarations are not accepted".into(),
                ));
            }
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                let _ = start;
                return Err(XmlError::Malformed("more than one root element".into()));
            }
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::Malformed("elements nested too deeply".into()));
                }
                let open = open_element(&start)?;
                if let Some(parent) = stack.last_mut() {
                    parent.has_children = true;
                }
                stack.push(open);
            }
            Event::Empty(start) => {
                let open = open_element(&start)?;
                let value = close(open.children, String::new(), open.has_children);
                match stack.last_mut() {
                    Some(parent) => {
                        parent.has_children = true;
                        insert(&mut parent.children, open.name, value);
                    }
                    None => root = Some((open.name, value)),
                }
            }
            Event::End(_) => {
                let open = stack
                    .pop()
                    .ok_or_else(|| XmlError::Malformed("unmatched end tag".into()))?;
                let value = close(open.children, open.text, open.has_children);
                match stack.last_mut() {
                    Some(parent) => insert(&mut parent.children, open.name, value),
                    None => root = Some((open.name, value)),
                }
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                match stack.last_mut() {
                    Some(open) => open.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None => {
                        return Err(XmlError::Malformed("text outside the root element".into()));
                    }
                }
            }
            Event::CData(c) => match stack.last_mut() {
                Some(open) => open.text.push_str(&c.xml10_content()),
                None => return Err(XmlError::Malformed("CDATA outside the root element".into())),
            },
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|e| XmlError::Malformed(e.to_string()))?
                        .map(String::from)
                } else {
                    resolve_predefined_entity(&r.xml10_content()).map(str::to_owned)
                };
                let Some(resolved) = resolved else {
                    return Err(XmlError::Malformed(format!(
                        "unknown entity &{};",
                        r.xml10_content()
                    )));
                };
                not_xml_char(&resolved)?;
                match stack.last_mut() {
                    Some(open) => open.text.push_str(&resolved),
                    None => {
                        return Err(XmlError::Malformed("text outside the root element".into()));
                    }
                }
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed("unclosed element".into()));
    }
    root.ok_or_else(|| XmlError::Malformed("no root element".into()))
}

/// Refuses characters XML 1.0 does not allow (most C0 controls, U+FFFE,
/// U+FFFF), raw or written as character references: such a document is not
/// well-formed, and its text could not be written back as XML.
fn not_xml_char(text: &str) -> Result<(), XmlError> {
    match text.chars().find(|c| !is_xml_char(*c)) {
        None => Ok(()),
        Some(c) => Err(XmlError::Malformed(format!(
            "character U+{:04X} is not allowed in XML",
            u32::from(c)
        ))),
    }
}

/// The `encoding` of the XML declaration, read before decoding any text so a
/// document declared in another encoding is told apart from broken UTF-8.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if !bytes.starts_with(b"<?xml") {
        return None;
    }
    let end = bytes.windows(2).take(512).position(|w| w == b"?>")?;
    let decl = String::from_utf8_lossy(&bytes[..end]);
    let rest = &decl[decl.find("encoding")? + "encoding".len()..];
    let rest = rest.trim_start().strip_prefix('=')?.trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &rest[1..];
    Some(value[..value.find(quote)?].to_owned())
}

fn open_element(start: &quick_xml::events::BytesStart<'_>) -> Result<Open, XmlError> {
    let name = start.name().as_ref().to_owned();
    let mut children = Map::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError::Malformed(format!("bad attribute: {e}")))?;
        let key = attr.key.as_ref().to_owned();
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| XmlError::Malformed(format!("bad attribute: {e}")))?;
        not_xml_char(&value)?;
        children.insert(format!("@{key}"), Value::String(value.into_owned()));
    }
    let has_children = !children.is_empty();
    Ok(Open {
        name,
        children,
        text: String::new(),
        has_children,
    })
}

fn close(mut children: Map<String, Value>, text: String, has_children: bool) -> Value {
    if has_children {
        if !text.trim().is_empty() {
            children.insert("#text".into(), Value::String(text));
        }
        Value::Object(children)
    } else if text.trim().is_empty() {
        Value::Null
    } else {
        Value::String(text)
    }
}

/// A repeated element becomes an array, which validation refuses by type.
fn insert(map: &mut Map<String, Value>, key: String, value: Value) {
    match map.get_mut(&key) {
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
        None => {
            map.insert(key, value);
        }
    }
}

pub use crate::domain::xml::{ItemName, write_document, write_document_ns};

/// Element names of list items in XML answers.
pub fn item_name(list: &str) -> &'static str {
    match list {
        "timeline" => "event",
        "handoffs" => "handoff",
        "errors" => "error",
        _ => "item",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(_: &str) -> &'static str {
        "item"
    }

    #[test]
    fn elements_become_a_tree_with_empty_meaning_absent() {
        let (root, tree) = read_tree(
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<handoff><a>1</a><b/><c></c><d><e>x &amp; y</e></d></handoff>",
        )
        .unwrap();
        assert_eq!(root, "handoff");
        assert_eq!(
            tree,
            json!({"a": "1", "b": null, "c": null, "d": {"e": "x & y"}})
        );
    }

    #[test]
    fn dtds_and_entities_are_refused() {
        let doc =
            b"<?xml version=\"1.0\"?><!DOCTYPE h [<!ENTITY x \"boom\">]><handoff>&x;</handoff>";
        assert!(matches!(read_tree(doc), Err(XmlError::Malformed(_))));
        assert!(matches!(
            read_tree(b"<handoff>&x;</handoff>"),
            Err(XmlError::Malformed(_))
        ));
    }

    #[test]
    fn other_encodings_are_refused() {
        let doc = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><handoff/>";
        assert!(matches!(read_tree(doc), Err(XmlError::Encoding(_))));
        let latin1 = b"<?xml version='1.0' encoding='latin1'?><handoff>Nguy\xeAn</handoff>";
        assert!(matches!(read_tree(latin1), Err(XmlError::Encoding(_))));
        let utf8 = b"<?xml version='1.0' encoding='utf-8'?><handoff/>";
        assert!(read_tree(utf8).is_ok());
    }

    #[test]
    fn not_well_formed_documents_are_refused() {
        for doc in [
            &b"<handoff><a></handoff>"[..],
            b"<handoff>",
            b"",
            b"<a/><b/>",
            b"\xff\xfe<",
        ] {
            assert!(read_tree(doc).is_err(), "{}", String::from_utf8_lossy(doc));
        }
    }

    /// Found by fuzzing: raw control characters and references to them
    /// were read as text, though XML 1.0 does not allow them.
    #[test]
    fn characters_xml_does_not_allow_are_refused() {
        for doc in [
            &b"<handoff>a\x01b</handoff>"[..],
            b"<handoff>a&#1;b</handoff>",
            b"<handoff>a&#xFFFF;b</handoff>",
            b"<handoff a=\"&#x1F;\"/>",
        ] {
            assert!(
                matches!(read_tree(doc), Err(XmlError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
        assert!(read_tree(b"<handoff>a&#9;&#xA;b</handoff>").is_ok());
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let doc = format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
        assert!(matches!(
            read_tree(doc.as_bytes()),
            Err(XmlError::Malformed(_))
        ));
    }

    #[test]
    fn writing_omits_nulls_and_wraps_lists() {
        let xml = write_document(
            "handoff",
            &json!({"id": "h_1", "reason": null, "timeline": [{"a": 1}, {"a": 2}], "t": "<&>"}),
            item,
        );
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<handoff><id>h_1</id><timeline><item><a>1</a></item><item><a>2</a></item></timeline><t>&lt;&amp;&gt;</t></handoff>\n"
        );
    }
}
