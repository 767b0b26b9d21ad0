//! Generators of hostile input: arbitrary bytes, mutated fixtures, deep
//! nesting, huge numbers, broken UTF-8 and XML entity tricks.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value, json};

/// `cases` test cases, or `PROPTEST_CASES` when set (longer local runs).
pub fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        // Failures are reported as a regression test in the doc, not a file.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Every fixture under `fixtures/requests/{dir}` whose name ends in `ext`.
pub fn fixtures(dir: &str, ext: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/requests")
        .join(dir);
    let mut names: Vec<_> = std::fs::read_dir(&root)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(ext) && !p.ends_with("expected.json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read(p).expect("fixture"))
        .collect()
}

/// The valid JSON fixtures as trees.
pub fn valid_json_trees() -> Vec<Value> {
    fixtures("valid", ".json")
        .iter()
        .map(|b| serde_json::from_slice(b).expect("valid fixture is JSON"))
        .collect()
}

/// Tokens that break XML readers when dropped anywhere.
const XML_TOKENS: &[&[u8]] = &[
    b"<!DOCTYPE handoff [<!ENTITY a \"aaaa\">]>",
    b"<!DOCTYPE handoff SYSTEM \"file:///etc/passwd\">",
    b"<!ENTITY % p SYSTEM \"http://127.0.0.1:9/x\">%p;",
    b"&a;",
    b"&#0;",
    b"&#x1;",
    b"&#xD800;",
    b"&#x110000;",
    b"&#99999999999999999999;",
    b"&#x;",
    b"&amp;",
    b"&lt;&gt;&quot;&apos;",
    b"<![CDATA[<x>&a;]]>",
    b"<?pi data?>",
    b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>",
    b"<!-- c -->",
    b"<!--",
    b"]]>",
    b"<x:kind xmlns:x=\"urn:x\">",
    b" a=\"1\"",
    b" a=\"&#0;\"",
    b"<",
    b"</",
    b"/>",
    b">",
    b"&",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"\x00",
    b"\x01",
    b"\x7f",
    b"\xc2\x85",
];

/// Tokens that break JSON readers when dropped anywhere.
const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"\\udc00\\ud800",
    b"1e999999",
    b"-1e-999999",
    b"-0",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"0.1e1",
    b"NaN",
    b"Infinity",
    b"true",
    b"null",
    b"\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"\x00",
    b"\x01",
    b"/* c */",
];

/// One edit of a byte string; positions are fractions of its length.
#[derive(Debug, Clone)]
enum Edit {
    Flip(f64, u8),
    Insert(f64, Vec<u8>),
    Delete(f64, usize),
    Duplicate(f64, usize),
    Truncate(f64),
}

fn at(bytes: &[u8], pos: f64) -> usize {
    ((bytes.len() as f64) * pos) as usize
}

fn apply(mut bytes: Vec<u8>, edits: Vec<Edit>) -> Vec<u8> {
    for edit in edits {
        match edit {
            Edit::Flip(p, mask) => {
                if !bytes.is_empty() {
                    let i = at(&bytes, p).min(bytes.len() - 1);
                    bytes[i] ^= mask.max(1);
                }
            }
            Edit::Insert(p, token) => {
                let i = at(&bytes, p);
                bytes.splice(i..i, token);
            }
            Edit::Delete(p, n) => {
                let i = at(&bytes, p);
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
            Edit::Duplicate(p, n) => {
                let i = at(&bytes, p);
                let end = (i + n).min(bytes.len());
                let copy = bytes[i..end].to_vec();
                bytes.splice(end..end, copy);
            }
            Edit::Truncate(p) => {
                let i = at(&bytes, p);
                bytes.truncate(i);
            }
        }
    }
    bytes
}

fn edit(tokens: &'static [&'static [u8]]) -> impl Strategy<Value = Edit> {
    let pos = 0.0f64..1.0;
    prop_oneof![
        (pos.clone(), any::<u8>()).prop_map(|(p, m)| Edit::Flip(p, m)),
        (pos.clone(), prop::sample::select(tokens)).prop_map(|(p, t)| Edit::Insert(p, t.to_vec())),
        (pos.clone(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(p, t)| Edit::Insert(p, t)),
        (pos.clone(), 1usize..64).prop_map(|(p, n)| Edit::Delete(p, n)),
        (pos.clone(), 1usize..256).prop_map(|(p, n)| Edit::Duplicate(p, n)),
        pos.prop_map(Edit::Truncate),
    ]
}

/// A fixture (any of `bases`) with a few byte-level edits.
pub fn mutated(
    bases: Vec<Vec<u8>>,
    tokens: &'static [&'static [u8]],
) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(bases),
        prop::collection::vec(edit(tokens), 1..5),
    )
        .prop_map(|(base, edits)| apply(base, edits))
}

/// An XML fixture, valid or invalid, with byte-level edits.
pub fn mutated_xml() -> impl Strategy<Value = Vec<u8>> {
    let mut bases = fixtures("valid", ".xml");
    bases.extend(fixtures("invalid", ".xml"));
    mutated(bases, XML_TOKENS)
}

/// A JSON fixture, valid or invalid, with byte-level edits.
pub fn mutated_json() -> impl Strategy<Value = Vec<u8>> {
    let mut bases = fixtures("valid", ".json");
    bases.extend(fixtures("invalid", ".json"));
    mutated(bases, JSON_TOKENS)
}

/// A hostile JSON value to put where a field was.
pub fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(1e308)),
        Just(json!(-0.0)),
        Just(json!(300.5)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        ".{0,40}".prop_map(Value::String),
        "[0-9]{1,40}".prop_map(Value::String),
        "[ \t\r\n]{0,4}-?[0-9]{1,25}(\\.[0-9]{0,3})?[ \t\r\n]{0,4}".prop_map(Value::String),
        (1usize..600).prop_map(|n| Value::String("ê".repeat(n))),
        (1usize..400).prop_map(|n| Value::String("e\u{0302}\u{0303}".repeat(n))),
        "[\\x00-\\x1f\\x7f\\u{85}\\u{200b}\\u{feff}\\u{fffe}]{1,8}".prop_map(Value::String),
        Just(json!("true")),
        Just(json!("pickup")),
        Just(json!("0912345678")),
        Just(json!("+84 (91) 234-5678")),
        Just(json!("2026-02-30T25:61:61+07:00")),
        Just(json!("9999-12-31T23:59:59-25:59")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_@#]{0,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Every path (object keys, array indexes) of a tree.
fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(k.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(i.to_string());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |node, key| match node {
        Value::Object(m) => m.get_mut(key),
        Value::Array(items) => items.get_mut(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// What to do at one node of a tree.
#[derive(Debug, Clone)]
pub enum TreeEdit {
    Replace(Value),
    Remove,
    AddField(String, Value),
    Wrap,
}

fn tree_edit() -> impl Strategy<Value = TreeEdit> {
    prop_oneof![
        4 => hostile_value().prop_map(TreeEdit::Replace),
        1 => Just(TreeEdit::Remove),
        1 => ("[a-z_]{1,10}|@[a-z]{1,4}|#text", hostile_value()).prop_map(|(k, v)| TreeEdit::AddField(k, v)),
        1 => Just(TreeEdit::Wrap),
    ]
}

/// Applies `edits` at nodes picked by `picks` (fractions of the node count).
pub fn edit_tree(mut doc: Value, edits: Vec<(f64, TreeEdit)>) -> Value {
    for (pick, edit) in edits {
        let mut all = Vec::new();
        paths(&doc, &mut Vec::new(), &mut all);
        let path = all[((all.len() as f64) * pick) as usize % all.len()].clone();
        match edit {
            TreeEdit::Replace(v) => {
                if let Some(node) = node_mut(&mut doc, &path) {
                    *node = v;
                }
            }
            TreeEdit::Remove => {
                if let Some((last, parent)) = path.split_last()
                    && let Some(Value::Object(m)) = node_mut(&mut doc, parent)
                {
                    m.remove(last);
                }
            }
            TreeEdit::AddField(k, v) => {
                if let Some(Value::Object(m)) = node_mut(&mut doc, &path) {
                    m.insert(k, v);
                }
            }
            TreeEdit::Wrap => {
                if let Some(node) = node_mut(&mut doc, &path) {
                    *node = json!([node.take()]);
                }
            }
        }
    }
    doc
}

/// A valid fixture request with a few fields replaced, removed, added or wrapped.
pub fn mutated_tree() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(valid_json_trees()),
        prop::collection::vec((0.0f64..1.0, tree_edit()), 0..4),
    )
        .prop_map(|(doc, edits)| edit_tree(doc, edits))
}

/// `depth` levels of nesting, as JSON or as XML elements.
pub fn nested(depth: usize, xml: bool, object: bool) -> Vec<u8> {
    match (xml, object) {
        (true, _) => format!(
            "<handoff>{}x{}</handoff>",
            "<a>".repeat(depth),
            "</a>".repeat(depth)
        ),
        (false, true) => format!(
            "{{\"request_id\":{}1{}}}",
            "{\"a\":".repeat(depth),
            "}".repeat(depth)
        ),
        (false, false) => format!("{}1{}", "[".repeat(depth), "]".repeat(depth)),
    }
    .into_bytes()
}

/// A "billion laughs" document: `levels` entities each `width` times the last.
pub fn laughs(levels: usize, width: usize, parameter: bool) -> Vec<u8> {
    let mut dtd = String::from("<!ENTITY l0 \"lol\">");
    for i in 1..=levels {
        let refs = format!("&l{};", i - 1).repeat(width);
        dtd.push_str(&format!("<!ENTITY l{i} \"{refs}\">"));
    }
    if parameter {
        dtd.push_str("<!ENTITY % p \"&l1;\">%p;");
    }
    format!(
        "<?xml version=\"1.0\"?><!DOCTYPE handoff [{dtd}]><handoff><request_id>&l{levels};</request_id></handoff>"
    )
    .into_bytes()
}

/// A number of `digits` digits, maybe negative, maybe with an exponent.
pub fn huge_number() -> impl Strategy<Value = String> {
    (
        1usize..2000,
        any::<bool>(),
        prop::option::of(-99999i32..99999),
    )
        .prop_map(|(digits, negative, exp)| {
            let sign = if negative { "-" } else { "" };
            let exp = exp.map(|e| format!("e{e}")).unwrap_or_default();
            format!("{sign}9{}{exp}", "7".repeat(digits - 1))
        })
}

/// True for the characters XML 1.0 allows in a document.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}
