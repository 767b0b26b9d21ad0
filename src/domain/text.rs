//! Text rules of the contract: NFC, lengths in characters.

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// NFC-normalizes and trims surrounding white space.
pub fn normalize(raw: &str) -> String {
    let trimmed = raw.trim();
    // Most text arrives composed already: copying it is several times
    // cheaper than recomposing it character by character.
    if is_nfc_quick(trimmed.chars()) == IsNormalized::Yes {
        trimmed.to_owned()
    } else {
        trimmed.nfc().collect()
    }
}

/// Length in Unicode scalar values, as the contract counts.
pub fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// True when every character is printable (no control characters).
pub fn is_printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decomposed_vietnamese_is_composed() {
        let nfd = "Nguye\u{0302}\u{0303}n";
        assert_eq!(normalize(nfd), "Nguyễn");
        assert_eq!(char_len(&normalize(nfd)), 6);
    }

    #[test]
    fn composed_text_is_kept_as_it_is_but_trimmed() {
        assert_eq!(normalize("  Nguyễn Văn An \n"), "Nguyễn Văn An");
        assert_eq!(normalize("a\u{0301}"), "\u{e1}");
    }
}
