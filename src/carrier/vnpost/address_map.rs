//! `postal.address_map`: national (GSO) province and ward codes to the codes
//! Vietnam Post expects, when they differ.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;

/// GSO code → Vietnam Post code; a code not in the map passes through unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressMap(HashMap<String, String>);

impl AddressMap {
    /// Reads and parses the CSV file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading postal.address_map {}", path.display()))?;
        Self::parse(&text)
            .map_err(|problem| anyhow::anyhow!("postal.address_map {}: {problem}", path.display()))
    }

    /// Parses `gso_code,vnpost_code` lines. A first line whose GSO field is not
    /// a number is a header; blank lines and lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut map = HashMap::new();
        let mut first = true;
        for (index, raw) in text.trim_start_matches('\u{feff}').lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let number = index + 1;
            let fields: Vec<&str> = line.split(',').map(unquote).collect();
            let [gso, vnpost] = fields[..] else {
                return Err(format!(
                    "line {number}: expected 2 fields (gso_code,vnpost_code), found {}",
                    fields.len()
                ));
            };
            let header = first && !is_digits(gso);
            first = false;
            if header {
                continue;
            }
            if !is_digits(gso) {
                return Err(format!("line {number}: the GSO code must be digits"));
            }
            if vnpost.is_empty() || vnpost.contains(char::is_whitespace) {
                return Err(format!(
                    "line {number}: the Vietnam Post code must be non-empty, without spaces"
                ));
            }
            match map.insert(gso.to_owned(), vnpost.to_owned()) {
                Some(previous) if previous != vnpost => {
                    return Err(format!(
                        "line {number}: GSO code {gso} is mapped twice, to different codes"
                    ));
                }
                _ => {}
            }
        }
        Ok(Self(map))
    }

    /// The Vietnam Post code for a GSO code.
    pub fn translate<'a>(&'a self, gso_code: &'a str) -> &'a str {
        self.0.get(gso_code).map_or(gso_code, String::as_str)
    }

    /// How many codes are mapped.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

fn unquote(field: &str) -> &str {
    let field = field.trim();
    field
        .strip_prefix('"')
        .and_then(|f| f.strip_suffix('"'))
        .map_or(field, str::trim)
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_comments_and_blank_lines_are_skipped() {
        let map = AddressMap::parse(
            "\u{feff}gso_code,vnpost_code\n# provinces\n79, 70\n\n\"26732\",\"7900126\"\r\n",
        )
        .unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map.translate("79"), "70");
        assert_eq!(map.translate("26732"), "7900126");
    }

    #[test]
    fn codes_not_in_the_map_pass_through() {
        let map = AddressMap::parse("79,70\n").unwrap();
        assert_eq!(map.translate("01"), "01");
        assert_eq!(AddressMap::default().translate("26732"), "26732");
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, line) in [
            ("79,70,1\n", "line 1"),
            ("gso,vnpost\n79\n", "line 2"),
            ("79,70\nabc,1\n", "line 2"),
            ("79,70\n79,71\n", "line 2"),
            ("79,\n", "line 1"),
        ] {
            let err = AddressMap::parse(text).unwrap_err();
            assert!(err.starts_with(line), "{text:?}: {err}");
        }
        // The same pair twice is harmless.
        assert_eq!(AddressMap::parse("79,70\n79,70\n").unwrap().len(), 1);
    }
}
